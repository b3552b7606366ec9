"""The real backends' forward passes of ``make gpu-check`` (``pvtt.bench.gpu_check``), tiny and random.

No published weights travel to the GPU machine, so each backend runs its real classes at tiny width
with random weights, on the check's device in the dtype its loader picks there (bf16 for the Wan,
FLUX and Qwen2-VL models on CUDA, fp32 for SAM2, Grounding DINO and the metric networks; fp32
everything on the CPU). Where a backend loads from files without needing the published key names,
the check writes tiny random files in the layout the loader reads (DiffSynth names, a word-level
tokenizer directory, ``save_pretrained`` directories, ``{"model": state_dict}``) and builds the
backend itself, so its loading onto the device and its own forward code run:
``wan_vace`` (``WanVaceBackground.remove``), ``wan_i2v`` (``WanI2V.generate``), ``grounded_sam2``
(``GroundedSam2Backend.segment``), and PVTT's conditioning encoders (``WanClipImageEncoder``,
``UMT5TextEncoder``, ``Dinov2ImageEncoder``). The others take in-memory models: FLUX (its loader
reads only BFL-named files, so the editor is given DiffSynth's modules and runs its real ``edit``),
Qwen2-VL (the model's ``generate`` on an image prompt built without the processor, which is CPU
work), and the learned metrics (CLIP-I, DINO-I, LPIPS, MUSIQ, FVD's I3D: the metric classes take
networks). Each returns facts about its output; a wrong shape raises.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

WORDS = "a an the of on in product background scene clean empty photo video table room wall light red bag bottle".split()
WAN_DIT = {"dim": 96, "in_dim": 16, "ffn_dim": 128, "out_dim": 16, "text_dim": 32, "freq_dim": 32, "eps": 1e-6,
           "patch_size": (1, 2, 2), "num_heads": 2, "num_layers": 2, "has_image_input": False}
I2V_DIT = {**WAN_DIT, "in_dim": 36, "has_image_input": True, "image_dim": 32}
VACE = {"vace_layers": (0,), "vace_in_dim": 96, "patch_size": (1, 2, 2), "has_image_input": False, "dim": 96,
        "num_heads": 2, "ffn_dim": 128}
UMT5 = {"vocab": 32, "dim": 32, "dim_attn": 32, "dim_ffn": 64, "num_heads": 2, "num_layers": 1, "num_buckets": 8}
# 32 px / patch 2 -> 256 + 1 tokens, the 257 Wan's image attention expects
CLIP = {"embed_dim": 16, "image_size": 32, "patch_size": 2, "vision_dim": 32, "vision_heads": 2, "vision_layers": 2,
        "vocab_size": 64, "max_text_len": 16, "text_dim": 16, "text_heads": 2, "text_layers": 1}
WAN_ARCH = {"dit": {"num_heads": 2}, "vae": {"dim": 8}, "text_encoder": UMT5}
FLUX_ARCH = {"dit": {"num_heads": 2, "axes_dim": [8, 12, 12]}, "vae": {"ch": 32},
             "text_encoder": {"embed_dim": 32, "vocab_size": 32, "num_encoder_layers": 2, "encoder_intermediate_size": 64},
             "text_encoder_2": {"vocab_size": 32, "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_heads": 2,
                                "relative_attention_num_buckets": 8}}
FLUX_DIT = {"dim": 64, "num_heads": 2, "num_blocks": 1, "num_single_blocks": 1, "axes_dim": (8, 12, 12), "text_dim": 32,
            "pooled_dim": 32}
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SAM2_TINY = ["++model.image_size=128", "++model.memory_attention.layer.self_attention.feat_sizes=[8,8]",
             "++model.memory_attention.layer.cross_attention.feat_sizes=[8,8]", "++model.memory_attention.num_layers=1",
             "++model.memory_attention.layer.dim_feedforward=64", "++model.image_encoder.trunk.stages=[1,1,2,1]",
             "++model.image_encoder.trunk.global_att_blocks=[3]", "++model.image_encoder.trunk.embed_dim=16",
             "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]", "++model.num_maskmem=2"]
GD_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "an", "the", "watch", "bottle", "bag", "box"]


def _frames(n: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, h, w, 3) uint8 frames and a product mask (n, h, w) in their middle."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    masks = np.zeros((n, h, w), bool)
    masks[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
    return frames, masks


def _place(device: torch.device) -> tuple[str, str]:
    """(params device, params dtype) of the Wan/FLUX backends here: bf16 on CUDA, fp32 on the CPU."""
    return str(device), "bf16" if device.type == "cuda" else "fp32"


def write_tokenizer(path: Path) -> Path:
    """A word-level tokenizer directory that AutoTokenizer (and DiffSynth's HuggingfaceTokenizer) loads offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: 3 + i for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(path))
    return path


def write_tiny_wan(d: Path, *, vace: bool, dit: dict, image_encoder: dict | None = None) -> dict:
    """Random tiny Wan files in the layouts the loaders read: DiT (+ VACE) safetensors in DiffSynth's
    names, the VAE's ``VideoVAE_`` state (Wan2.1_VAE.pth), a ``WanTextEncoder`` .pth, the tokenizer
    directory and, with ``image_encoder``, the CLIP in open-clip names. Returns the paths."""
    from diffsynth.models.wan_video_vace import VaceWanModel
    from safetensors.torch import save_file

    from pvtt.data.backends import wan_vace as V

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = V.wan_dit_factory(**dit).state_dict()
    if vace:
        state.update(VaceWanModel(**VACE).state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "diffusion_pytorch_model.safetensors"))
    torch.save(V.wan_vae_factory(WAN_ARCH["vae"]).model.state_dict(), d / "Wan2.1_VAE.pth")
    torch.save(V.wan_text_encoder_factory(**UMT5).state_dict(), d / "models_t5_umt5-xxl-enc-bf16.pth")
    paths = {"dit": str(d / "diffusion_pytorch_model.safetensors"), "vae": str(d / "Wan2.1_VAE.pth"),
             "text_encoder": str(d / "models_t5_umt5-xxl-enc-bf16.pth"),
             "tokenizer": str(write_tokenizer(d / "google" / "umt5-xxl"))}
    if image_encoder is not None:
        sd = V.wan_image_encoder_factory(**image_encoder).state_dict()
        clip = d / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
        torch.save({k[len("model."):]: v for k, v in sd.items()}, clip)
        paths["image_encoder"] = str(clip)
    return paths


# ------------------------------------------------------------------------------------ the backends
def wan_vace(device: torch.device, work: Path) -> dict:
    from pvtt.data import backgrounds as B

    dev, dt = _place(device)
    vace = {**write_tiny_wan(work / "wan-vace", vace=True, dit=WAN_DIT), "steps": 1, "device": dev, "dtype": dt,
            "arch": WAN_ARCH, "prompt": "a clean empty background"}
    cfg, _ = B.validate_params({"backgrounds": {"backend": "wan_vace", "vace": vace}})
    backend = B.get_backend("wan_vace", cfg)
    frames, masks = _frames(5, 32, 48)
    out, info = backend.remove(frames, masks)
    if out.shape != frames.shape:
        raise AssertionError(f"wan_vace: {out.shape} out of {frames.shape}")
    return {"output": list(out.shape), "dtype": dt, "steps": info["steps"], "work_size": info["work_size"],
            "how": "WanVaceBackground from tiny files (DiffSynth loader), remove(): WanVideoPipeline + VACE"}


def wan_i2v(device: torch.device, work: Path) -> dict:
    from pvtt.data.backends.flux_wan_i2v import I2V_DEFAULTS, I2V_SPEC, WanI2V
    from pvtt.data.backends.wan_vace import validate_section

    dev, dt = _place(device)
    files = write_tiny_wan(work / "wan-i2v", vace=False, dit=I2V_DIT, image_encoder=CLIP)
    cfg = validate_section({**files, "steps": 1, "cfg": 1.0, "device": dev, "dtype": dt, "max_frames": 5,
                            "arch": {**WAN_ARCH, "image_encoder": CLIP}}, I2V_DEFAULTS, I2V_SPEC, "synth.i2v")
    video, info = WanI2V(cfg).generate(_frames(1, 32, 48)[0][0], 5)
    if video.shape != (5, 32, 48, 3):
        raise AssertionError(f"wan_i2v: {video.shape}")
    return {"output": list(video.shape), "dtype": dt, "segments": info["segments"],
            "how": "WanI2V from tiny files (DiT with image branch, CLIP, umT5, VAE), generate()"}


def flux(device: torch.device, work: Path) -> dict:
    """The FLUX first-frame editor's ``edit`` on DiffSynth's FLUX modules (built in memory: the
    loader reads BFL-named files only), the prompt encoded by its CLIP + T5 as ``FluxEditor`` does."""
    from diffsynth.pipelines.flux_image import FluxImagePipeline, FluxImageUnit_PromptEmbedder
    from transformers import AutoTokenizer

    from pvtt.data.backends import flux_wan_i2v as R
    from pvtt.data.backends.wan_vace import torch_dtype, validate_section

    dev, dt = _place(device)
    dtype = torch_dtype(dt)
    cfg = validate_section({"steps": 1, "device": dev, "dtype": dt, "dilate": 2, "arch": FLUX_ARCH}, R.FLUX_DEFAULTS,
                           R.FLUX_SPEC, "synth.flux")
    torch.manual_seed(0)
    ed = R.FluxEditor.__new__(R.FluxEditor)
    ed.cfg, ed._torch, ed.device, ed.dtype = cfg, torch, dev, dtype
    ed.pipe = FluxImagePipeline(device=dev, torch_dtype=dtype)
    ed.pipe.dit = R.flux_dit_factory(**FLUX_DIT).to(dev, dtype).eval()
    ed.pipe.vae_encoder = R.flux_vae_factory("encoder", FLUX_ARCH["vae"]["ch"]).to(dev, dtype).eval()
    ed.pipe.vae_decoder = R.flux_vae_factory("decoder", FLUX_ARCH["vae"]["ch"]).to(dev, dtype).eval()
    clip = R.flux_clip_factory(**FLUX_ARCH["text_encoder"]).to(dev, dtype).eval()
    t5 = R.flux_t5_factory(**FLUX_ARCH["text_encoder_2"]).to(dev, dtype).eval()
    tok = AutoTokenizer.from_pretrained(str(write_tokenizer(work / "flux-tokenizer")), local_files_only=True)
    with torch.no_grad():
        ed.prompt_emb, ed.pooled_emb, ed.text_ids = FluxImageUnit_PromptEmbedder().encode_prompt(
            tok, tok, clip, t5, "a product on a table", device=dev, t5_sequence_length=R.T5_LEN)
    frames, masks = _frames(1, 40, 48)
    out, info = ed.edit(frames[0], masks[0])
    if out.shape != frames[0].shape:
        raise AssertionError(f"flux: {out.shape}")
    return {"output": list(out.shape), "dtype": dt, "steps": info["steps"],
            "how": "FluxEditor.edit() on DiffSynth FluxDiT/VAE (in memory), prompt through FLUX CLIP + T5"}


def _tiny_grounding_dino(d: Path) -> None:
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(GD_VOCAB)})
    proc = GroundingDinoProcessor(GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}), tok)
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                   window_size=2, out_indices=[2, 3, 4]),
        text_config=BertConfig(vocab_size=len(GD_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, num_queries=10, max_text_len=32, encoder_n_points=1, decoder_n_points=1)
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(cfg).save_pretrained(d)
    proc.save_pretrained(d)


def grounded_sam2(device: torch.device, work: Path) -> dict:
    from sam2.build_sam import build_sam2_video_predictor

    from pvtt.data import masks as M

    _tiny_grounding_dino(work / "grounding-dino")
    torch.manual_seed(0)
    sam = build_sam2_video_predictor(SAM2_CONFIG, None, device="cpu", hydra_overrides_extra=SAM2_TINY)
    torch.save({"model": sam.state_dict()}, work / "sam2.pt")
    cfg = M.validate_params({"masks": {"backend": "grounded_sam2", "grounding_dino": str(work / "grounding-dino"),
                                       "sam2_config": SAM2_CONFIG, "sam2_checkpoint": str(work / "sam2.pt"),
                                       "sam2_overrides": SAM2_TINY, "device": str(device), "box_threshold": 0.0}})
    backend = M.get_backend("grounded_sam2", cfg)
    frames, _ = _frames(4, 48, 64)
    masks = backend.segment(frames, "bottle")
    if masks.shape != frames.shape[:3] or backend.last["frames_propagated"] != len(frames):
        raise AssertionError(f"grounded_sam2: {masks.shape}, {backend.last}")
    return {"output": list(masks.shape), "dtype": "float32", "frames_propagated": backend.last["frames_propagated"],
            "how": "GroundedSam2Backend from a tiny Grounding DINO directory + SAM2 hiera_t (shrunk), segment()"}


def qwen2vl(device: torch.device, work: Path) -> dict:
    """``Qwen2VLForConditionalGeneration.generate`` (what filter L3's ``VlmScorer.answer`` calls) on one
    image and a prompt, in the dtype ``pvtt.filter.vlm.load_model`` picks; the token ids and the
    image patches are built directly (the processor is CPU work)."""
    from transformers import GenerationConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vocab, (pad, eos, img, vs, ve) = 64, (0, 1, 2, 3, 4)
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                         bos_token_id=pad, eos_token_id=eos, pad_token_id=pad),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=img, video_token_id=5, vision_start_token_id=vs, vision_end_token_id=ve)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg).to(device, dtype).eval()
    grid = (1, 4, 4)                                         # one 56 x 56 image: 16 patches -> 4 tokens
    n_img = grid[0] * grid[1] * grid[2] // 4
    ids = torch.tensor([[10, 11, vs, *[img] * n_img, ve, 12, 13, 14]], device=device)
    pixels = torch.randn(grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14, device=device, dtype=dtype)
    gc = GenerationConfig(max_new_tokens=4, do_sample=False, eos_token_id=eos, pad_token_id=pad)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                             image_grid_thw=torch.tensor([grid], device=device), generation_config=gc)
    return {"output": list(out.shape), "dtype": str(dtype).replace("torch.", ""), "new_tokens": int(out.shape[1] - ids.shape[1]),
            "how": "Qwen2VLForConditionalGeneration (tiny, in memory) generate() on an image prompt"}


def metrics(device: torch.device, work: Path) -> dict:
    """The learned metrics' classes (``genbuild.metrics.learned``) on tiny random networks, on ``device``."""
    import lpips
    import open_clip
    from pyiqa.archs.musiq_arch import MUSIQ
    from transformers import Dinov2Config, Dinov2Model

    from genbuild.metrics import learned as Q
    from genbuild.metrics.i3d import InceptionI3d

    torch.manual_seed(0)
    clip = open_clip.CLIP(embed_dim=32, vision_cfg=dict(layers=2, width=64, head_width=32, patch_size=8, image_size=64),
                          text_cfg=dict(context_length=8, vocab_size=100, width=32, heads=2, layers=1))
    dino = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=56, patch_size=14))
    net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    musiq = MUSIQ(pretrained=False, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64, longer_side_lengths=[32, 48])
    pred, _ = _frames(4, 64, 64, seed=1)
    truth, _ = _frames(4, 64, 64, seed=2)
    ref = truth[0]
    out = {}
    for metric in (Q.ClipI(clip.to(device), 64), Q.DinoI(dino.to(device), resize=56, crop=56), Q.Lpips(net.to(device)),
                   Q.Musiq(musiq.to(device))):
        value = metric.score(pred, truth, ref, None)
        if not np.isfinite(value):
            raise AssertionError(f"{metric.name}: {value}")
        out[metric.name] = round(value, 5)
    feats = Q.Fvd(InceptionI3d().to(device), size=64).features([np.concatenate([pred, truth])])
    if feats.shape != (1, 400):
        raise AssertionError(f"fvd I3D features {feats.shape}")
    out["fvd_i3d_features"] = list(feats.shape)
    return {"scores": out, "dtype": "float32",
            "how": "ClipI (open_clip CLIP), DinoI (Dinov2Model), Lpips (lpips alex, random backbone), Musiq (pyiqa), "
                   "Fvd's InceptionI3d features; tiny random networks"}


def pvtt_encoders(device: torch.device, work: Path) -> dict:
    """PVTT's conditioning encoders (``pvtt.models.encoders``) placed as ``model.device``/``dtype`` auto places them."""
    from transformers import Dinov2Config, Dinov2Model

    from pvtt.models.components import resolve_placement
    from pvtt.models.encoders import Dinov2ImageEncoder, UMT5TextEncoder, WanClipImageEncoder

    dev, dtype = resolve_placement(str(device), "auto")
    files = write_tiny_wan(work / "wan-encoders", vace=False, dit=WAN_DIT, image_encoder=CLIP)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    clip = WanClipImageEncoder(files["image_encoder"], CLIP, dev, dtype)(images)
    torch.manual_seed(0)
    dino = Dinov2ImageEncoder(model=Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                             intermediate_size=64, image_size=56, patch_size=14)),
                              device=dev, dtype=dtype)(images)
    text = UMT5TextEncoder(files["text_encoder"], files["tokenizer"], UMT5["dim"], 16, UMT5, dev, dtype)(["a red bag on a table"])
    if clip.shape != (2, 257, CLIP["vision_dim"]) or dino.shape != (2, 257, 32) or text.shape != (1, 16, UMT5["dim"]):
        raise AssertionError(f"encoders: clip {tuple(clip.shape)}, dinov2 {tuple(dino.shape)}, umt5 {tuple(text.shape)}")
    return {"clip_vit_h": list(clip.shape), "dinov2": list(dino.shape), "umt5": list(text.shape),
            "dtype": str(dtype).replace("torch.", ""),
            "how": "WanClipImageEncoder and UMT5TextEncoder from tiny files, Dinov2ImageEncoder (tiny, in memory)"}


BACKENDS: dict[str, Callable[[torch.device, Path], dict]] = {
    "wan_vace": wan_vace, "wan_i2v": wan_i2v, "flux": flux, "grounded_sam2": grounded_sam2, "qwen2vl": qwen2vl,
    "metrics": metrics, "pvtt_encoders": pvtt_encoders,
}


def omitted(device: torch.device) -> dict[str, str]:
    """Real backends with no GPU forward here, and why (read on the machine that runs the check)."""
    import importlib.util

    out = {}
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except ImportError:
        providers = None
    out["rembg"] = (f"products' rembg runs its ONNX model through onnxruntime, whose providers here are {providers}"
                    if providers is not None else "products' rembg needs onnxruntime, which is not installed here")
    if providers and "CUDAExecutionProvider" in providers:
        out["rembg"] += " (CUDA is among them, but rembg picks its own providers; not a PyTorch forward)"
    if importlib.util.find_spec("tensorrt") is None:
        out["tensorrt_engine"] = ("the engine stage builds and checks TensorRT fp16/int8 plans "
                                  "(pvtt/deploy/tensorrt_engine.py) where tensorrt is installed; it is not here "
                                  "(its wheels do not fit the 64 MiB that travels)")
    return out


def run_one(name: str, device: torch.device, work: Path) -> dict:
    t0 = time.perf_counter()
    (work / name).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = BACKENDS[name](device, work / name)
    return {**out, "device": str(device), "seconds": round(time.perf_counter() - t0, 3)}
