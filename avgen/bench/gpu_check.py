"""`make gpu-check`, AVGen's part: the 3.8B preset's training step and sampling time on one GPU.

    python -m avgen.bench.gpu_check [--tiny] [--out DIR]

At the plan's shape (512 x 512 at 8 fps for 4 s -> 32 x 64 x 64 SD-VAE latents, 4 x 4 patches:
8,192 video tokens; 16 kHz -> 251 mel frames, patch 4: 63 audio tokens), random weights, the
project's own classes (``avgen.models``), bf16 autocast with fp32 master weights:

- ``train_step``: one joint flow-matching step of the 3.8B network (gradient checkpointing,
  AdamW), batch 1: seconds (median of 3 after a warm-up) and peak memory;
- ``sample``: ``eval.steps``-step sampling with CFG (2 network calls per step) of one clip,
  then the SD-VAE decode (``AutoencoderKL`` at SD's configuration) of its 32 frames and the HiFi-GAN
  vocoder (``SpeechT5HifiGan`` at the published configuration): seconds per sample, each part timed.

``--tiny`` runs the same code with the tiny preset, tiny frozen parts and a short clip on whatever
device there is (the test suite runs it on the CPU). Writes ``DIR/avgen_gpu_check.json``; the last
line is ``avgen_train_step_s=... seconds_per_sample=...``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

FULL = {"preset": "3.8B", "video": (4, 32, 64, 64), "audio": (80, 251), "steps": 50, "cfg": 3.0}
TINY = {"preset": "tiny", "video": (4, 4, 8, 8), "audio": (80, 20), "steps": 4, "cfg": 3.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cond(shape: dict, device: torch.device):
    from avgen.models.conditions import AVConditions

    g = torch.Generator().manual_seed(0)
    return AVConditions(torch.randn(1, 512, generator=g), torch.randn(1, 512, generator=g), "joint", shape["video"],
                        shape["audio"]).to(device)


def _peak(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def train_step(shape: dict, device: torch.device) -> dict:
    from avgen.models.conditions import pack
    from avgen.models.presets import build
    from genbuild.train.flow import flow_matching_loss, sample_sigmas

    net = build(shape["preset"], device=device)
    net.enable_gradient_checkpointing()
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type == "cuda")
    cond = _cond(shape, device)
    x0 = pack(torch.randn(1, *shape["video"], device=device), torch.randn(1, *shape["audio"], device=device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = flow_matching_loss(net, x0, cond, sample_sigmas(1, 3.0, torch.Generator().manual_seed(1)).to(device),
                                      torch.randn_like(x0))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        _sync(device)
        times.append(time.perf_counter() - t0)
    n = sum(p.numel() for p in net.parameters())
    return {"params": n, "step_s": round(statistics.median(times[1:]), 4), "peak_mem_gib": _peak(device)}


@torch.no_grad()
def sample_time(shape: dict, device: torch.device) -> dict:
    from diffusers import AutoencoderKL
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    from avgen.models.frozen import decode_latents, tiny_vae, tiny_vocoder, vocode
    from avgen.models.presets import build
    from avgen.models.sampling import sample

    tiny = shape["preset"] == "tiny"
    net = build(shape["preset"], device=device).eval()
    vae = (tiny_vae() if tiny else AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=(
        "UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4)).to(device)
    voc = (tiny_vocoder() if tiny else SpeechT5HifiGan(SpeechT5HifiGanConfig())).to(device)
    cond = _cond(shape, device)
    _sync(device)
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        video, mel = sample(net, cond, shape["steps"], torch.Generator().manual_seed(0), shift=3.0, cfg_scale=shape["cfg"])
    _sync(device)
    t1 = time.perf_counter()
    decode_latents(vae, video[0].float())
    _sync(device)
    t2 = time.perf_counter()
    vocode(voc, mel[0].float())
    _sync(device)
    t3 = time.perf_counter()
    return {"steps": shape["steps"], "cfg": shape["cfg"], "sampling_s": round(t1 - t0, 3), "vae_decode_s": round(t2 - t1, 3),
            "vocoder_s": round(t3 - t2, 3), "seconds_per_sample": round(t3 - t0, 3), "peak_mem_gib": _peak(device)}


def run(tiny: bool, out_dir: Path, device: torch.device) -> dict:
    shape = TINY if tiny else FULL
    doc = {"preset": shape["preset"], "shape": {k: v for k, v in shape.items() if k != "preset"}, "device": str(device),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "sections": {}}
    for name, fn in (("train_step", train_step), ("sample", sample_time)):
        try:
            doc["sections"][name] = {"ok": True, **fn(shape, device)}
        except Exception as e:  # noqa: BLE001 - a failed section is recorded; the other still runs
            doc["sections"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "avgen_gpu_check.json").write_text(json.dumps(doc, indent=2))
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("work/gpu_check"))
    a = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    doc = run(a.tiny, a.out, device)
    s = doc["sections"]
    for name, sec in s.items():
        print(f"{name}: {json.dumps({k: v for k, v in sec.items() if k != 'trace'})}", file=sys.stderr)
    print(f"avgen_train_step_s={s['train_step'].get('step_s')} seconds_per_sample={s['sample'].get('seconds_per_sample')}")
    return 0 if all(sec["ok"] for sec in s.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
