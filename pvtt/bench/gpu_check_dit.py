"""The DiT, DMD2 and VAE checks of ``make gpu-check`` (``pvtt.bench.gpu_check``), on the project's own classes.

Everything is built as the stages build it, at random init: the DiT is ``PVTTDiT`` at a preset of
``pvtt.models.dit.PRESETS`` (Wan2.1-1.3B: dim 1536, 30 layers, 12 heads, ffn 8960, text 4096) with
PVTT's conditioning (noisy target + source latents + mask on the channels, 257 reference-image
tokens of CLIP ViT-H width, 512 umT5 caption tokens: ``pvtt.models.conditions.Conditions``); the
teacher step is ``FlowMatching`` under the kit's ``Trainer`` with LoRA (``genbuild.train.lora``, rank
64 as teacher phase 1), bf16 autocast and per-block gradient checkpointing, as ``pvtt.train.teacher``
assembles it; ZeRO-2 is ``genbuild.train.zero`` with ``configs/deepspeed/zero2.json``; the DMD2 step
is ``genbuild.train.methods.dmd2.DMD2`` with the distill params; the VAE is ``WanVAECodec``.

FLOPs are counted analytically (``dit_forward_flops``): every matmul of the DiT (2 FLOP per
multiply-add) on the token counts it sees, plus attention (QK^T and AV: 4 * tokens * keys * dim per
layer). A training step is 3 forward-equivalents (forward + backward at twice the forward), the
usual model-FLOPs convention behind MFU; with gradient checkpointing the hardware also recomputes
each block's forward, so hardware FLOPs are 4 forward-equivalents (HFU). With LoRA the frozen base
linears need no weight gradients, so the backward executes less than 2x: MFU by this convention
is an upper bound of the useful work, comparable with full fine-tuning numbers.
"""
from __future__ import annotations

import copy
import gc
import os
import socket
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
ZERO2 = ROOT / "configs" / "deepspeed" / "zero2.json"
GIB = 2 ** 30

# Dense bf16 peak (no sparsity), TFLOP/s, from NVIDIA's data sheets; matched on torch.cuda.get_device_name.
# Order matters: the PCIe/NVL variants before the plain name.
PEAK_BF16_TFLOPS = (("GH200", 989.4), ("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
                    ("H800", 989.4), ("A100", 312.0), ("L40S", 362.0))


@dataclass
class Shape:
    """What the checks run at: the DiT preset (or a tiny arch), the clip and its conditioning."""

    name: str
    arch: dict
    frames: int                 # pixels: 1 + 4k frames of height x width
    height: int
    width: int
    text_len: int = 512         # umT5 tokens (Wan pads every caption to 512)
    image_tokens: int = 257     # CLIP ViT-H/14 at 224 px: CLS + 16 x 16
    lora_rank: int = 64         # teacher phase 1 (configs/full.yaml)
    steps: int = 3              # timed steps after the warm-up step
    vae_arch: dict = field(default_factory=dict)   # {} = the published Wan2.1 VAE widths
    latent_channels: int = 16   # the Wan2.1 VAE's z_dim

    @property
    def latent(self) -> tuple[int, int, int]:
        """(frames, height, width) of the latents: the Wan VAE's stride is 4 x 8 x 8 (first frame alone)."""
        return 1 + (self.frames - 1) // 4, self.height // 8, self.width // 8

    @property
    def tokens(self) -> int:
        f, h, w = self.latent
        pt, ph, pw = self.arch["patch_size"]
        return (f // pt) * (h // ph) * (w // pw)

    @property
    def image_dim(self) -> int:
        return int(self.arch.get("image_dim", 1280))


def full_shape() -> Shape:
    from pvtt.models.dit import PRESETS

    return Shape("wan2.1-1.3b", dict(PRESETS["1.3B"]), frames=81, height=480, width=832)


def tiny_shape() -> Shape:
    """The same code at tiny width (CPU, seconds): head width 48 (Wan's 3-D RoPE needs an even split)."""
    arch = {"dim": 48, "num_heads": 1, "num_layers": 2, "ffn_dim": 96, "freq_dim": 32, "text_dim": 32,
            "patch_size": [1, 2, 2], "eps": 1e-6, "image_dim": 32}
    return Shape("tiny", arch, frames=9, height=64, width=64, text_len=8, lora_rank=4, steps=2, vae_arch={"dim": 8})


# ----------------------------------------------------------------------------------------- device
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """torch.cuda.max_memory_allocated since the last reset, GiB; None on the CPU (no allocator stats)."""
    return round(torch.cuda.max_memory_allocated(device) / GIB, 2) if device.type == "cuda" else None


def peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """(dense bf16 peak TFLOP/s, where it comes from) of the device; None where the table has none."""
    if device.type != "cuda":
        return None, "no peak for the CPU: MFU is not computed"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, f"{name}: dense bf16 peak of the {key} data sheet"
    return None, f"{name}: not in the peak table (pvtt/bench/gpu_check_dit.py PEAK_BF16_TFLOPS)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------ FLOPs
def dit_attention_flops(shape: Shape) -> float:
    """QK^T and AV of every block's self- and cross-attention (text and image keys)."""
    n, keys = shape.tokens, shape.text_len + shape.image_tokens
    return float(shape.arch["num_layers"] * (4 * n * n + 4 * n * keys) * shape.arch["dim"])


def dit_forward_flops(shape: Shape, lora_rank: int = 0) -> float:
    """Forward FLOPs of one PVTT DiT call on one sample of ``shape`` (matmuls + attention, 2 FLOP/MAC)."""
    a = shape.arch
    d, ffn, layers = a["dim"], a["ffn_dim"], a["num_layers"]
    n, lt, li, di = shape.tokens, shape.text_len, shape.image_tokens, shape.image_dim
    patch = a["patch_size"][0] * a["patch_size"][1] * a["patch_size"][2]
    c_in, c_out = 2 * shape.latent_channels + 1, shape.latent_channels
    per_block = (2 * n * (4 * d * d + 2 * d * d + 2 * d * ffn)     # self q/k/v/o, cross q/o, FFN on video tokens
                 + 2 * (lt + li) * 2 * d * d)                        # cross k/v (text) and k_img/v_img (image)
    if lora_rank:  # adapters on self/cross q,k,v,o and the FFN (genbuild.train.lora defaults)
        r = lora_rank
        per_block += 2 * r * (n * (4 * 2 * d + 2 * 2 * d + (d + ffn) + (ffn + d)) + lt * 2 * 2 * d)
    embed = (2 * n * c_in * patch * d + 2 * n * d * c_out * patch    # patch embedding, head
             + 2 * lt * (a["text_dim"] * d + d * d)                  # text embedding MLP
             + 2 * li * (di * di + di * d))                          # image embedding MLP
    return float(layers * per_block + embed) + dit_attention_flops(shape)


def sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (the tiny shape's TFLOP counts are 1e-6)."""
    return float(f"{x:.{digits}g}")


def utilisation(fwd_flops: float, forwards: float, recomputed: float, seconds: float, peak: float | None) -> dict:
    """Model FLOPs (``forwards`` forward-equivalents) and hardware FLOPs (+ ``recomputed``) per step."""
    model, hw = fwd_flops * forwards, fwd_flops * (forwards + recomputed)
    out = {"forward_tflop": sig(fwd_flops / 1e12), "model_tflop_per_step": sig(model / 1e12),
           "hardware_tflop_per_step": sig(hw / 1e12), "achieved_tflops": sig(model / seconds / 1e12) if seconds else None,
           "mfu": None, "hfu": None}
    if peak and seconds:
        out["mfu"] = round(model / seconds / (peak * 1e12), 4)
        out["hfu"] = round(hw / seconds / (peak * 1e12), 4)
    return out


# ---------------------------------------------------------------------------------- model + batch
def new_dit(shape: Shape, device: torch.device, seed: int = 0):
    """A random ``PVTTDiT`` of ``shape``, built straight on ``device`` (a 1.3B model in seconds)."""
    from pvtt.models.dit import PVTTDiT

    torch.manual_seed(seed)
    with torch.device(device):
        dit = PVTTDiT(shape.arch, shape.latent_channels, 1, "velocity")
    return dit.to_device(device)


def batch(shape: Shape, seed: int = 0):
    """(x0, Conditions) of one sample on the CPU, as the latent cache hands them to the loop."""
    from pvtt.models.conditions import Conditions

    g = torch.Generator().manual_seed(seed)
    f, h, w = shape.latent
    x0 = torch.randn(1, shape.latent_channels, f, h, w, generator=g)
    mask = torch.zeros(1, 1, f, h, w)
    mask[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0   # the edit region
    cond = Conditions(source=torch.randn(x0.shape, generator=g), mask=mask,
                      image_tokens=torch.randn(1, shape.image_tokens, shape.image_dim, generator=g),
                      text_tokens=torch.randn(1, shape.text_len, shape.arch["text_dim"], generator=g))
    return x0, cond


class StepClock:
    """The ``live`` log of the kit's ``Trainer``: the wall time of each step (a step ends with
    ``loss.item()``, which waits for the device, so no extra synchronisation is needed)."""

    def __init__(self, device: torch.device):
        self.device, self.times, self.rows = device, [], []
        self.tick = time.perf_counter()

    def __call__(self, resuming: bool) -> StepClock:
        sync(self.device)
        self.tick = time.perf_counter()
        return self

    def log(self, step: int, row: dict) -> None:
        sync(self.device)
        now = time.perf_counter()
        self.times.append(now - self.tick)
        self.rows.append(row)
        self.tick = now

    def image(self, *a) -> None: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------- teacher step
@contextmanager
def one_process_group():
    """torch.distributed in one process (rank 0 of 1), as DeepSpeed wants it; torn down after."""
    from genbuild.train import distributed as ddp

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import deepspeed

        deepspeed.init_distributed()
        yield
    finally:
        ddp.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def teacher_step(shape: Shape, device: torch.device, mode: str = "eager", compile_backend: str = "inductor") -> dict:
    """Teacher training steps (LoRA, bf16 autocast, gradient checkpointing) through the kit's ``Trainer``.

    ``mode``: ``eager``; ``compile`` (each DiT block ``torch.compile``d in place, as torchtitan does:
    one compiled graph serves every block; the compile time is the first step's excess over the
    steady step); ``zero2`` (DeepSpeed ZeRO-2 in one process with the project's config)."""
    from genbuild.train import zero
    from genbuild.train.checkpoint import Checkpointer
    from genbuild.train.lora import apply_lora
    from genbuild.train.methods.flow_matching import FlowMatching, FlowMatchingConfig
    from genbuild.train.trainer import Trainer

    reset_peak(device)
    dit = new_dit(shape, device)
    lora = apply_lora(dit, {"rank": shape.lora_rank, "alpha": shape.lora_rank})
    dit.gradient_checkpointing = True
    dit.train()
    if mode == "compile":
        for block in dit.wan.blocks:
            block.compile(backend=compile_backend)
    iters = 1 + shape.steps
    cfg = FlowMatchingConfig(iterations=iters, batch_size=1, lr=1e-4, warmup=0, cond_dropout=0.1, shift=3.0, bf16=True,
                             batch_param="teacher.batch_size")
    g = torch.Generator().manual_seed(0)
    method = FlowMatching(dit, cfg, g, device)
    ds = zero.load_config(ZERO2, 1, 1, 1) if mode == "zero2" else None
    clock = StepClock(device)
    trainer = Trainer(f"gpu_check teacher {mode}", iters, Checkpointer(None, 0, "", "gpu_check"), {"batch": g},
                      deepspeed=ds, live=clock, log_every=iters)
    x0, cond = batch(shape)
    with one_process_group() if mode == "zero2" else _nothing():
        trainer.fit(method, lambda start: (lambda: (x0, cond)))
        stage = trainer.engine.zero_optimization_stage() if trainer.engine is not None else None
    steady = statistics.median(clock.times[1:])
    out = {"mode": mode, "first_step_s": round(clock.times[0], 3), "step_s": round(steady, 3),
           "steps_timed": len(clock.times) - 1, "peak_mem_gib": peak_gib(device), "loss": round(clock.rows[-1]["train/loss"], 5),
           "params": sum(p.numel() for p in dit.parameters()), "trainable_params": lora["trainable_params"],
           "lora_rank": shape.lora_rank, "tokens": shape.tokens, "latent": list(shape.latent), "batch_size": 1,
           "precision": "bf16 autocast (fp32 weights and AdamW state)", "gradient_checkpointing": "per DiT block"}
    if mode == "compile":
        out.update(compile_backend=compile_backend, compile_s=round(max(0.0, clock.times[0] - steady), 3))
    if mode == "zero2":
        out.update(zero_stage=stage, deepspeed_config=str(ZERO2.relative_to(ROOT)))
    peak, _ = peak_tflops(device)
    out.update(utilisation(dit_forward_flops(shape, shape.lora_rank), 3, 1, steady, peak))
    return out


@contextmanager
def _nothing():
    yield


# -------------------------------------------------------------------------------------- DMD2 step
def dmd2_step(shape: Shape, device: torch.device) -> dict:
    """One DMD2 generator update (``critic_steps`` fake-score updates first) with the distill params
    of ``params.yaml`` (student_4: 4 steps, the critic steps), full-weight generator and fake
    score as the students train, gradient checkpointing, bf16 autocast around the step. The
    generator terms that work on latents are on (``distill.common.losses``: background and the
    adversarial head on the fake score's last block); temporal and identity decode frames, which
    this latents-only check does not hold (they run on the sample, pvtt/train/distill_losses.py)."""
    import yaml

    from genbuild.train.methods.dmd2 import DMD2, DMDConfig
    from genbuild.train.methods.student import GeneratorTerm
    from pvtt.train.distill_losses import adversarial, background_loss

    distill = yaml.safe_load((ROOT / "params.yaml").read_text())["pvtt"]["distill"]
    common, own = distill["common"], distill["student_4"]
    reset_peak(device)
    generator = new_dit(shape, device)
    generator.gradient_checkpointing = True
    teacher = copy.deepcopy(generator)   # the frozen real score (DMD2 copies it into the fake score)
    cfg = DMDConfig(steps=int(own["steps"]), iterations=1, lr=float(own["lr"]), fake_lr=float(common["fake_lr"]),
                    cfg_scale=float(common["cfg_scale"]), critic_steps=int(common["critic_steps"]),
                    regression_weight=float(common["regression_weight"]), shift=3.0, batch_size=1)
    losses = common.get("losses") or {}
    terms = {"background": GeneratorTerm(float(losses.get("background", {}).get("weight", 1.0)) or 1.0, background_loss)}
    gan = adversarial({"weight": 0.05, **(losses.get("adversarial") or {})}, generator, 0)
    dmd = DMD2(generator, teacher, cfg, terms=terms, adversarial=gan)
    x0, cond = batch(shape)
    sync(device)
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        row = dmd.train_step(0, lambda: (x0, cond))
    sync(device)
    seconds = time.perf_counter() - t0
    # forward-equivalents: student simulation (no grad), critic updates (fwd + bwd), generator (fwd + bwd),
    # the real score with CFG (2) and the fake score (1); recomputation under checkpointing besides
    sim = int((dmd.sigmas.cpu() - float(row["sim_sigma"])).abs().argmin())   # the student steps it simulated
    fwd = sim + 1 + cfg.critic_steps * 3 + 3 + 3
    peak, _ = peak_tflops(device)
    out = {"step_s": round(seconds, 3), "peak_mem_gib": peak_gib(device), "critic_steps": cfg.critic_steps,
           "student_steps": cfg.steps, "simulated_steps": sim, "cfg_scale": cfg.cfg_scale,
           "losses": {k: round(float(v), 5) for k, v in row.items()}, "terms_on": list(dmd.columns),
           "params_per_network": sum(p.numel() for p in generator.parameters()),
           "precision": "bf16 autocast around DMD2.step (pvtt/train/distill.py runs it without autocast)",
           "note": "one step, first call: includes kernel selection (no warm-up step)"}
    out.update(utilisation(dit_forward_flops(shape), fwd, cfg.critic_steps + 1, seconds, peak))
    return out


# --------------------------------------------------------------------------------------------- VAE
def random_vae(shape: Shape, device: torch.device, workdir: Path):
    """(codec, dtype): the Wan2.1 VAE of ``shape`` at random init, written as the published file is
    named (VideoVAE_) and loaded by ``WanVAECodec``, placed as ``auto`` places it on ``device``."""
    from pvtt.models.codec import WanVAECodec, wan_vae
    from pvtt.models.components import resolve_placement

    dev, dtype = resolve_placement("auto" if device.type == "cuda" else "cpu", "auto")
    torch.manual_seed(0)
    path = Path(workdir) / "Wan2.1_VAE.pth"
    if not path.exists():
        torch.save(wan_vae(**shape.vae_arch).model.state_dict(), path)
    return WanVAECodec(str(path), dev, dtype, arch=shape.vae_arch or None), dtype


def vae_roundtrip(shape: Shape, device: torch.device, workdir: Path) -> dict:
    """The Wan2.1 VAE (``WanVAECodec``: DiffSynth's class and loader) at random init: encode one clip of
    ``shape`` to latents and decode it, timed after a warm-up on a 5-frame clip of the same size."""

    reset_peak(device)
    codec, dtype = random_vae(shape, device, workdir)
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(1, 3, shape.frames, shape.height, shape.width, generator=g) * 2 - 1
    codec.decode(codec.encode(clip[:, :, :5]))   # warm-up: kernel selection
    sync(device)
    t0 = time.perf_counter()
    z = codec.encode(clip)
    sync(device)
    t1 = time.perf_counter()
    x = codec.decode(z)
    sync(device)
    t2 = time.perf_counter()
    expected = (1, shape.latent_channels, *shape.latent)
    if tuple(z.shape) != expected or tuple(x.shape) != tuple(clip.shape):
        raise AssertionError(f"VAE shapes: latents {tuple(z.shape)} (expected {expected}), frames {tuple(x.shape)}")
    return {"encode_s": round(t1 - t0, 3), "decode_s": round(t2 - t1, 3), "peak_mem_gib": peak_gib(device),
            "dtype": str(dtype).replace("torch.", ""), "clip": [shape.frames, shape.height, shape.width],
            "latent": list(z.shape[2:]), "params": sum(p.numel() for p in codec.vae.parameters()),
            "arch": shape.vae_arch or "Wan2.1 VAE (published widths)", "finite": bool(torch.isfinite(x).all())}


def shape_info(shape: Shape) -> dict:
    d = asdict(shape)
    d.update(latent=list(shape.latent), tokens=shape.tokens, forward_tflop=sig(dit_forward_flops(shape) / 1e12))
    return d


# --------------------------------------------------------------------------------------- inference
def _timed_sample(model, cond, noise, steps: int, cfg: float, device: torch.device, attention: str = "sdpa") -> float:
    from genbuild.train.flow import sample
    from pvtt.models.attention import attention_backend

    with attention_backend(attention), torch.no_grad():
        sample(model, cond, noise, 1, 3.0, cfg)   # warm-up (and, compiled, the compile)
        sync(device)
        t0 = time.perf_counter()
        sample(model, cond, noise, steps, 3.0, cfg)
        sync(device)
    return time.perf_counter() - t0


def fastest_attention() -> str:
    """The first importable-and-runnable kernel after SDPA (flash_attn, then sageattention), else sdpa."""
    from pvtt.models.attention import attention_function

    for name in ("flash_attn", "sageattention"):
        try:
            attention_function(name)
            return name
        except ValueError:
            continue
    return "sdpa"


def _fp8_student(model, cond, noise, steps: int, device: torch.device) -> dict:
    """The student with FP8 GEMMs (``genbuild.quant.Fp8Linear``): its seconds, or why it did not run.
    Quantised after the cast to the run's dtype, since Module.to(dtype) would turn e4m3 weights into
    bf16 ones."""
    import copy

    from genbuild.quant import fp8_unavailable, quantize

    reason = fp8_unavailable(device)
    if reason:
        return {"student_fp8_s": None, "student_fp8_error": reason}
    fp8 = copy.deepcopy(model)
    quantize(fp8, "fp8")
    try:
        return {"student_fp8_s": _timed_sample(fp8, cond, noise, steps, 1.0, device)}
    except RuntimeError as e:  # e.g. a GEMM shape the GPU's FP8 kernel refuses: said, not hidden
        return {"student_fp8_s": None, "student_fp8_error": f"{e.__class__.__name__}: {str(e)[:200]}"}


def inference(shape: Shape, device: torch.device, workdir: Path, compile_backend: str = "inductor",
              teacher_steps: int = 50, cfg: float = 5.0, student_steps: int = 4) -> dict:
    """Teacher (50 steps, CFG: 100 calls) vs a 4-step student end to end at ``shape`` with random
    weights, each followed by the Wan VAE decode: the student eager, compiled, with FP8 GEMMs
    (``genbuild.quant``) and with the fastest attention kernel importable here."""
    from pvtt.models.attention import compiled

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = new_dit(shape, device).to(dtype).eval()
    x0, cond = batch(shape)
    cond = cond.to(device)
    cond = type(cond)(**{k: v.to(dtype) for k, v in vars(cond).items()})
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    codec, _ = random_vae(shape, device, workdir)
    codec.decode(noise[:, :, :2].float())   # warm-up
    sync(device)
    t0 = time.perf_counter()
    codec.decode(noise.float())
    sync(device)
    decode_s = time.perf_counter() - t0
    out = {"teacher_denoise_s": _timed_sample(model, cond, noise, teacher_steps, cfg, device),
           "student_eager_s": _timed_sample(model, cond, noise, student_steps, 1.0, device)}
    out["student_compiled_s"] = _timed_sample(compiled(model, True) if compile_backend == "inductor"
                                              else torch.compile(model, backend=compile_backend), cond, noise, student_steps, 1.0, device)
    out.update(_fp8_student(model, cond, noise, student_steps, device))
    kernel = fastest_attention()
    out["attention_fastest"] = kernel
    out["student_fastest_attention_s"] = _timed_sample(model, cond, noise, student_steps, 1.0, device, kernel)
    out.update(vae_decode_s=round(decode_s, 4), teacher_steps=teacher_steps, teacher_cfg=cfg, student_steps=student_steps)
    best = min(out[k] for k in ("student_eager_s", "student_compiled_s", "student_fp8_s", "student_fastest_attention_s")
               if isinstance(out.get(k), float))
    out["teacher_total_s"] = round(out["teacher_denoise_s"] + decode_s, 4)
    out["student_total_s"] = round(best + decode_s, 4)
    out["speedup_end_to_end"] = round(out["teacher_total_s"] / out["student_total_s"], 2)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
