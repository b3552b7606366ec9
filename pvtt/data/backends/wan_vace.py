"""``wan_vace`` backgrounds backend: Wan2.1 VACE video inpainting through DiffSynth-Studio.

The clip and its product mask go to VACE as an inpainting task: the (dilated) product region
of every frame is set to mid-grey (0 in [-1, 1]) and marked in the VACE mask, and VACE
generates the whole clip conditioned on that "video with holes". Only the hole is taken
from the generated clip; pixels outside the dilated mask are the input's, bit for bit (as in
the ``opencv`` backend, ``backgrounds.dilate`` pixels of dilation).

Shapes: the Wan2.1 VAE/DiT need frame sides that are multiples of 16 and 1 + 4k frames.
Frames larger than ``vace.max_pixels`` are scaled down (aspect kept), then padded at the
bottom/right to multiples of 16 (edge pixels repeated); clips longer than ``vace.max_frames``
are processed in consecutive windows of 1 + 4k frames, and a window's frame count is padded
to 1 + 4k by repeating its last frame. Everything is cropped/scaled back, so the result has
exactly the input's shape.

Models (composed from DiffSynth's own classes, nothing re-implemented): ``WanModel`` (DiT),
``VaceWanModel`` (VACE blocks), ``WanVideoVAE``, ``WanTextEncoder`` (umT5-XXL) and its
tokenizer, loaded with DiffSynth's loader (``load_model`` + its state-dict converters) from
local files, and run by DiffSynth's ``WanVideoPipeline`` -- constructed directly, not via
``from_pretrained``, so nothing is fetched -- whose sampler is ``FlowMatchScheduler("Wan")`` +
``model_fn_wan_video`` with ``vace_context`` (the model path that works in diffsynth 2.1.12).

Weights (params ``backgrounds.vace``), e.g. from Wan-AI/Wan2.1-VACE-1.3B (or -14B):
``dit`` (``diffusion_pytorch_model*.safetensors``: one file or a directory of shards; the
DiT and the VACE blocks live in the same file), ``vae`` (``Wan2.1_VAE.pth``),
``text_encoder`` (``models_t5_umt5-xxl-enc-bf16.pth``) and ``tokenizer`` (the
``google/umt5-xxl`` directory). The DiT/VACE configuration is read off the checkpoint's
tensor shapes; ``vace.arch`` overrides it (and sizes the VAE/text encoder) -- that is how the
tests build tiny random models. A missing file stops the stage naming the path, the params
key and the ``dvc pull`` that fetches it. torch and diffsynth are imported only when the
backend is built, so ``import pvtt.data.backgrounds`` stays light.

The helpers here (section validation, weight checks, Wan loading, size fitting) are shared
with synth route B (:mod:`pvtt.data.backends.flux_wan_i2v`).
"""
from __future__ import annotations

import importlib
import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pvtt.data.backends import BackendError
from pvtt.data.backgrounds import BackgroundBackend, register

log = logging.getLogger("pvtt.data.backgrounds.wan_vace")

TEXT_LEN = 512            # umT5 tokens, as Wan was trained (DiffSynth's from_pretrained uses 512)
DTYPES = ("bf16", "fp16", "fp32")

VACE_DEFAULTS: dict[str, Any] = {
    "dit": "models/wan-vace-1.3b/diffusion_pytorch_model.safetensors",
    "vae": "models/wan-vace-1.3b/Wan2.1_VAE.pth",
    "text_encoder": "models/wan-vace-1.3b/models_t5_umt5-xxl-enc-bf16.pth",
    "tokenizer": "models/wan-vace-1.3b/google/umt5-xxl",
    "prompt": "",
    "negative_prompt": "",
    "steps": 20,
    "cfg": 1.0,
    "shift": 5.0,
    "vace_scale": 1.0,
    "seed": 0,
    "max_pixels": 480 * 832,
    "max_frames": 81,
    "tiled": True,
    "device": "auto",
    "dtype": "bf16",
    "arch": None,
}
# What each key must be: (kind, ...) -- see validate_section.
WAN_ARCH_PARTS = ("dit", "vace", "vae", "text_encoder", "image_encoder")
VACE_SPEC: dict[str, tuple] = {
    "dit": ("path",), "vae": ("path",), "text_encoder": ("path",), "tokenizer": ("path",),
    "prompt": ("str",), "negative_prompt": ("str",),
    "steps": ("int", 1, 1000), "cfg": ("float", 0.0, 30.0), "shift": ("float", 0.01, 100.0),
    "vace_scale": ("float", 0.0, 10.0), "seed": ("int", 0, 2**32 - 1),
    "max_pixels": ("int", 256, 10**8), "max_frames": ("int", 1, 100000), "tiled": ("bool",),
    "device": ("device",), "dtype": ("choice", DTYPES), "arch": ("arch", ("dit", "vace", "vae", "text_encoder")),
}


# --------------------------------------------------------------------------- params

def validate_section(section: Any, defaults: dict, spec: dict, key: str) -> dict:
    """``section`` merged over ``defaults``; unknown keys and bad values raise ValueError naming ``key.<name>``."""
    section = {} if section is None else section
    if not isinstance(section, dict):
        raise ValueError(f"params key '{key}' must be a mapping, got {section!r}")
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise ValueError(f"params key '{key}.{unknown[0]}' is not known (known: {', '.join(sorted(defaults))})")
    c = {**defaults, **section}
    for name, rule in spec.items():
        v, k, kind = c[name], f"{key}.{name}", rule[0]

        def bad(what: str, k: str = k, v=v) -> ValueError:
            return ValueError(f"params key '{k}' must be {what}, got {v!r}")

        if kind in ("path", "opt_path"):
            if not (isinstance(v, str) and v) and not (kind == "opt_path" and v is None):
                raise bad("a file path" + (" or null" if kind == "opt_path" else ""))
        elif kind == "str":
            if not isinstance(v, str):
                raise bad("a string")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise bad("true or false")
        elif kind == "int":
            if isinstance(v, bool) or not isinstance(v, int) or not rule[1] <= v <= rule[2]:
                raise bad(f"an integer in [{rule[1]}, {rule[2]}]")
        elif kind == "float":
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or not rule[1] <= v <= rule[2]):
                raise bad(f"a number in [{rule[1]}, {rule[2]}]")
            c[name] = float(v)
        elif kind == "choice":
            if v not in rule[1]:
                raise bad(f"one of {', '.join(rule[1])}")
        elif kind == "device":
            if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
                raise bad("'auto', 'cpu', 'cuda' or 'cuda:N'")
        elif kind == "arch":
            if v is None:
                continue
            if not isinstance(v, dict):
                raise bad(f"null or a mapping with keys among {', '.join(rule[1])}")
            for part, sub in v.items():
                if part not in rule[1]:
                    raise ValueError(f"params key '{k}.{part}' is not known (known: {', '.join(rule[1])})")
                if not isinstance(sub, dict):
                    raise ValueError(f"params key '{k}.{part}' must be a mapping of constructor overrides, got {sub!r}")
        else:  # pragma: no cover - a spec typo
            raise AssertionError(kind)
    return c


def validate_config(section: Any, key: str = "backgrounds.vace") -> dict:
    """The ``backgrounds.vace`` settings merged over :data:`VACE_DEFAULTS` (idempotent)."""
    return validate_section(section, VACE_DEFAULTS, VACE_SPEC, key)


# --------------------------------------------------------------------------- weights, devices

def dvc_target(path: str | Path) -> str:
    """What ``dvc pull`` fetches ``path`` with: ``models/<name>`` for anything under models/."""
    parts = Path(path).parts
    return "/".join(parts[:2]) if len(parts) >= 2 and parts[0] == "models" else str(path)


def require_files(label: str, items: list[tuple[str, Any, str]]) -> None:
    """Raise one BackendError naming every missing (params key, path, what) -- before anything loads."""
    missing = [(k, Path(p), what) for k, p, what in items if p is not None and not Path(p).exists()]
    if missing:
        raise BackendError(f"{label}: " + "; ".join(
            f"{what} {p} not found (params {k}); fetch it with `dvc pull {dvc_target(p)}`" for k, p, what in missing))


def import_torch_diffsynth(label: str):
    try:
        import torch
        importlib.import_module("diffsynth")
    except ImportError as e:
        raise BackendError(f"{label} needs torch and diffsynth (DiffSynth-Studio), which do not import: {e}") from e
    return torch


def resolve_device(name: str, label: str, key: str) -> str:
    import torch

    cuda = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if cuda else "cpu"
    if name.startswith("cuda") and not cuda:
        raise BackendError(f"{label}: params {key} {name!r}: no CUDA device is available (use 'cpu' or 'auto')")
    return name


def torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def state_files(path: str | Path) -> list[str]:
    """A checkpoint given as one file, or as a directory of ``*.safetensors`` shards."""
    p = Path(path)
    return [str(f) for f in sorted(p.glob("*.safetensors"))] if p.is_dir() else [str(p)]


def load_state(path: str | Path, dtype, label: str, key: str) -> dict:
    from diffsynth.core.loader.file import load_state_dict

    files = state_files(path)
    if not files:
        raise BackendError(f"{label}: no *.safetensors files in {path} (params {key}); "
                           f"fetch them with `dvc pull {dvc_target(path)}`")
    try:
        return load_state_dict(files, torch_dtype=dtype)
    except Exception as e:  # noqa: BLE001 - a corrupt/foreign file names the key
        raise BackendError(f"{label}: cannot read {path} (params {key}): {e.__class__.__name__}: {e}") from e


def build_model(factory: Callable, config: dict, state: dict | None, path: str, dtype, device, label: str, key: str,
                arch_key: str, converter: Callable | None = None):
    """``factory(**config)`` with the weights of ``state`` (or of the file ``path``) via DiffSynth's ``load_model``.

    ``load_model`` builds the module on the meta device, applies the state-dict converter and
    loads strictly, so a checkpoint that does not fit fails here, naming the params keys.
    """
    from diffsynth.core.loader.model import load_model

    try:
        model = load_model(factory, path, config=config, torch_dtype=dtype, device=device,
                           state_dict_converter=converter, state_dict=state)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise BackendError(f"{label}: the weights {path} (params {key}) do not fit the model built for them "
                           f"(config {config}; overrides in params {arch_key}): {e.__class__.__name__}: {e}") from e
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------- Wan models

def wan_dit_factory(image_dim: int = 1280, **config):
    """DiffSynth's ``WanModel``; ``image_dim`` != 1280 gives its image branch (``img_emb``) another input width."""
    from diffsynth.models.wan_video_dit import MLP, WanModel

    dit = WanModel(**config)
    if config.get("has_image_input") and image_dim != 1280:
        dit.img_emb = MLP(image_dim, config["dim"], has_pos_emb=False)
    return dit


def wan_vae_factory(arch: dict | None = None):
    """DiffSynth's ``WanVideoVAE`` (Wan2.1, z_dim 16); ``arch`` re-sizes its inner ``VideoVAE_`` (e.g. ``dim``)."""
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    vae = WanVideoVAE()
    if arch:
        vae.model = VideoVAE_(**{"z_dim": 16, **arch}).eval().requires_grad_(False)
    return vae


def wan_text_encoder_factory(**arch):
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder

    return WanTextEncoder(**arch)


def wan_image_encoder_factory(**arch):
    """DiffSynth's ``WanImageEncoder`` (open-clip XLM-RoBERTa ViT-H/14); ``arch`` overrides its CLIP config."""
    import torch
    from diffsynth.models.wan_video_image_encoder import WanImageEncoder, clip_xlm_roberta_vit_h_14

    if not arch:
        return WanImageEncoder()
    enc = WanImageEncoder.__new__(WanImageEncoder)
    torch.nn.Module.__init__(enc)
    enc.model, enc.transforms = clip_xlm_roberta_vit_h_14(pretrained=False, return_transforms=True,
                                                          return_tokenizer=False, dtype=torch.float32,
                                                          device="cpu", **arch)
    return enc


def wan_dit_config(state: dict) -> dict:
    """``WanModel`` kwargs read off a (DiffSynth-named) Wan DiT state dict's tensor shapes."""
    try:
        pe = state["patch_embedding.weight"]                       # (dim, in_dim, pt, ph, pw)
        dim, in_dim, patch = int(pe.shape[0]), int(pe.shape[1]), tuple(int(s) for s in pe.shape[2:])
        n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        has_image = "img_emb.proj.1.weight" in state
        cfg = {
            "dim": dim, "in_dim": in_dim, "patch_size": patch, "num_layers": n_layers,
            "ffn_dim": int(state["blocks.0.ffn.0.weight"].shape[0]),
            "text_dim": int(state["text_embedding.0.weight"].shape[1]),
            "freq_dim": int(state["time_embedding.0.weight"].shape[1]),
            "out_dim": int(state["head.head.weight"].shape[0]) // math.prod(patch),
            "num_heads": max(1, dim // 128),                       # Wan's head width is 128 (1.3B, 5B, 14B)
            "eps": 1e-6, "has_image_input": has_image, "require_clip_embedding": has_image,
            "has_image_pos_emb": "img_emb.emb_pos" in state,
        }
    except (KeyError, ValueError) as e:
        raise KeyError(f"not a Wan DiT checkpoint (missing/odd tensor {e})") from None
    if has_image:
        cfg["image_dim"] = int(state["img_emb.proj.0.weight"].shape[0])
    return cfg


def vace_config(state: dict, dit: dict) -> dict:
    """``VaceWanModel`` kwargs: VACE blocks spread evenly over the DiT's layers (1.3B: every 2nd of 30,
    14B: every 5th of 40), input width from ``vace_patch_embedding``."""
    n = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("vace_blocks."))
    step = max(1, dit["num_layers"] // n)
    return {"vace_layers": tuple(range(0, n * step, step)), "vace_in_dim": int(state["vace_patch_embedding.weight"].shape[1]),
            "patch_size": dit["patch_size"], "has_image_input": False, "dim": dit["dim"],
            "num_heads": dit["num_heads"], "ffn_dim": dit["ffn_dim"], "eps": dit["eps"]}


def load_wan_pipeline(cfg: dict, key: str, label: str, *, vace: bool, image_encoder: str | None = None):
    """DiffSynth's ``WanVideoPipeline`` holding Wan modules loaded from the local files of ``cfg``.

    ``cfg``: a validated section (``dit``, ``vae``, ``text_encoder``, ``tokenizer``, ``device``,
    ``dtype``, ``arch``); ``vace``: also build the VACE blocks from the DiT file;
    ``image_encoder``: path of the CLIP image encoder (Wan I2V). The pipeline is constructed
    directly (no ``from_pretrained``), so nothing is downloaded or looked up.
    """
    import_torch_diffsynth(label)
    from diffsynth.models.wan_video_text_encoder import HuggingfaceTokenizer
    from diffsynth.models.wan_video_vace import VaceWanModel
    from diffsynth.pipelines.wan_video import WanVideoPipeline
    from diffsynth.utils.state_dict_converters.wan_video_dit import (
        WanVideoDiTFromDiffusers,
        WanVideoDiTStateDictConverter,
    )
    from diffsynth.utils.state_dict_converters.wan_video_image_encoder import WanImageEncoderStateDictConverter
    from diffsynth.utils.state_dict_converters.wan_video_vace import VaceWanModelDictConverter
    from diffsynth.utils.state_dict_converters.wan_video_vae import WanVideoVAEStateDictConverter

    device = resolve_device(cfg["device"], label, f"{key}.device")
    dtype = torch_dtype(cfg["dtype"])
    arch = cfg.get("arch") or {}
    t0 = time.perf_counter()

    raw = load_state(cfg["dit"], dtype, label, f"{key}.dit")
    diffusers = any(k.startswith("condition_embedder.") for k in raw)
    dit_state = WanVideoDiTFromDiffusers(raw) if diffusers else WanVideoDiTStateDictConverter(raw)
    try:
        dit_cfg = {**wan_dit_config(dit_state), **arch.get("dit", {})}
    except KeyError as e:
        raise BackendError(f"{label}: {cfg['dit']} (params {key}.dit): {e.args[0]}") from None
    dit = build_model(wan_dit_factory, dit_cfg, dit_state, cfg["dit"], dtype, device, label, f"{key}.dit", f"{key}.arch.dit")
    vace_model = None
    if vace:
        vace_state = VaceWanModelDictConverter(raw)
        if not vace_state or diffusers:
            raise BackendError(f"{label}: {cfg['dit']} (params {key}.dit) is not a Wan VACE checkpoint "
                               "(no vace_* tensors in DiffSynth/original naming); use e.g. Wan-AI/Wan2.1-VACE-1.3B")
        vace_cfg = {**vace_config(vace_state, dit_cfg), **arch.get("vace", {})}
        if "vace_layers" in vace_cfg:
            vace_cfg["vace_layers"] = tuple(vace_cfg["vace_layers"])
        vace_model = build_model(VaceWanModel, vace_cfg, vace_state, cfg["dit"], dtype, device, label,
                                 f"{key}.dit", f"{key}.arch.vace")
    del raw, dit_state

    vae = build_model(wan_vae_factory, {"arch": arch.get("vae")}, None, cfg["vae"], dtype, device, label,
                      f"{key}.vae", f"{key}.arch.vae", converter=WanVideoVAEStateDictConverter)
    text_encoder = build_model(wan_text_encoder_factory, dict(arch.get("text_encoder", {})), None, cfg["text_encoder"],
                               dtype, device, label, f"{key}.text_encoder", f"{key}.arch.text_encoder")
    try:
        tokenizer = HuggingfaceTokenizer(name=str(cfg["tokenizer"]), seq_len=TEXT_LEN, clean="whitespace")
    except Exception as e:  # noqa: BLE001
        raise BackendError(f"{label}: cannot load the umT5 tokenizer from {cfg['tokenizer']} (params {key}.tokenizer): "
                           f"{e.__class__.__name__}: {e}") from e
    image_model = None
    if image_encoder is not None:
        image_model = build_model(wan_image_encoder_factory, dict(arch.get("image_encoder", {})), None, image_encoder,
                                  dtype, device, label, f"{key}.image_encoder", f"{key}.arch.image_encoder",
                                  converter=WanImageEncoderStateDictConverter)

    pipe = WanVideoPipeline(device=device, torch_dtype=dtype)
    pipe.dit, pipe.vace, pipe.vae = dit, vace_model, vae
    pipe.text_encoder, pipe.tokenizer, pipe.image_encoder = text_encoder, tokenizer, image_model
    pipe.height_division_factor = pipe.width_division_factor = vae.upsampling_factor * 2
    log.info("%s: Wan models loaded from %s in %.1f s (dim %d, %d layers%s, %s on %s)", label, cfg["dit"],
             time.perf_counter() - t0, dit_cfg["dim"], dit_cfg["num_layers"],
             f", VACE layers {list(vace_model.vace_layers)}" if vace_model is not None else "", cfg["dtype"], device)
    return pipe


def quiet(iterable):
    """``progress_bar_cmd`` for DiffSynth pipelines: no tqdm bars in stage logs."""
    return iterable


def video_to_uint8(video) -> np.ndarray:
    """(1, 3, T, H, W) in [-1, 1] (DiffSynth ``output_type="floatpoint"``) -> (T, H, W, 3) uint8, rounded."""
    x = video[0].float().permute(1, 2, 3, 0).cpu().numpy()
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- shapes

def fit_size(h: int, w: int, max_pixels: int, multiple: int = 16) -> tuple[tuple[int, int], tuple[int, int]]:
    """((h1, w1) the frames are scaled to, (hp, wp) they are padded to): scaled down (aspect kept)
    to at most ``max_pixels``, never up; padded to multiples of ``multiple``."""
    s = min(1.0, math.sqrt(max_pixels / float(h * w)))
    h1, w1 = (max(1, int(round(h * s))), max(1, int(round(w * s)))) if s < 1.0 else (h, w)
    return (h1, w1), (-(-h1 // multiple) * multiple, -(-w1 // multiple) * multiple)


def to_work(img: np.ndarray, size: tuple[int, int], padded: tuple[int, int], interp: int = cv2.INTER_AREA) -> np.ndarray:
    """Scale ``img`` (H, W[, C]) to ``size`` (h1, w1) and pad bottom/right to ``padded`` by repeating edge pixels."""
    h1, w1 = size
    if img.shape[:2] != (h1, w1):
        img = cv2.resize(img, (w1, h1), interpolation=interp)
    hp, wp = padded
    if (hp, wp) != (h1, w1):
        img = cv2.copyMakeBorder(img, 0, hp - h1, 0, wp - w1, cv2.BORDER_REPLICATE)
    return img


def from_work(img: np.ndarray, size: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """Crop the padding off and scale back to ``out`` (H, W)."""
    h1, w1 = size
    img = img[:h1, :w1]
    if (h1, w1) != tuple(out):
        img = cv2.resize(img, (out[1], out[0]), interpolation=cv2.INTER_CUBIC)
    return img


def window_length(max_frames: int) -> int:
    """Longest window of 1 + 4k frames within ``max_frames``."""
    return 1 + 4 * ((max_frames - 1) // 4)


def pad_frames(n: int) -> int:
    """Frames a window of ``n`` is padded to (1 + 4k, by repeating its last frame)."""
    return 1 + 4 * (-(-(n - 1) // 4))


# --------------------------------------------------------------------------- backend

@register("wan_vace")
class WanVaceBackground(BackgroundBackend):
    """Wan2.1 VACE video inpainting of the dilated product region (DiffSynth, local weights)."""

    label = "backgrounds.backend 'wan_vace'"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.vcfg = v = validate_config(cfg.get("vace"))
        self.dilate = int(cfg.get("dilate", 3))
        require_files(self.label, [("backgrounds.vace.dit", v["dit"], "Wan VACE DiT checkpoint"),
                                   ("backgrounds.vace.vae", v["vae"], "Wan2.1 VAE"),
                                   ("backgrounds.vace.text_encoder", v["text_encoder"], "umT5 text encoder"),
                                   ("backgrounds.vace.tokenizer", v["tokenizer"], "umT5 tokenizer directory")])
        self.pipe = load_wan_pipeline(v, "backgrounds.vace", self.label, vace=True)

    def holes(self, masks: np.ndarray) -> np.ndarray:
        d = self.dilate
        if d <= 0:
            return masks.astype(bool)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1))
        return np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) for m in masks])

    def _window(self, frames: np.ndarray, holes: np.ndarray) -> np.ndarray:
        """One window (T, hp, wp, 3) uint8 + holes -> VACE's generated frames, same shape."""
        v, t = self.vcfg, len(frames)
        tp = pad_frames(t)
        if tp > t:
            frames = np.concatenate([frames, np.repeat(frames[-1:], tp - t, axis=0)])
            holes = np.concatenate([holes, np.repeat(holes[-1:], tp - t, axis=0)])
        # VACE inpainting input: the hole is mid-grey (0 after DiffSynth's [-1, 1] scaling) and marked in the mask.
        video = frames.astype(np.float32)
        video[holes] = 127.5
        mask = np.repeat(holes[..., None].astype(np.float32) * 255.0, 3, axis=-1)
        hp, wp = frames.shape[1:3]
        out = self.pipe(prompt=v["prompt"], negative_prompt=v["negative_prompt"],
                        vace_video=list(video), vace_video_mask=list(mask), vace_scale=v["vace_scale"],
                        seed=v["seed"], height=hp, width=wp, num_frames=tp, cfg_scale=v["cfg"],
                        num_inference_steps=v["steps"], sigma_shift=v["shift"], tiled=v["tiled"],
                        output_type="floatpoint", progress_bar_cmd=quiet)
        return video_to_uint8(out)[:t]

    def remove(self, frames: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, dict]:
        t0 = time.perf_counter()
        v = self.vcfg
        n, h, w = masks.shape
        holes = self.holes(masks)
        size, padded = fit_size(h, w, v["max_pixels"])
        wf = np.stack([to_work(f, size, padded) for f in frames])
        wh = np.stack([to_work(m.astype(np.float32), size, padded) > 0 for m in holes])   # any coverage -> hole
        gen = np.empty_like(wf)
        win = window_length(v["max_frames"])
        starts = list(range(0, n, win))
        generated = 0
        for s in starts:
            if wh[s:s + win].any():               # a window without any hole has nothing to fill
                gen[s:s + win] = self._window(wf[s:s + win], wh[s:s + win])
                generated += 1
            else:
                gen[s:s + win] = wf[s:s + win]
        back = np.stack([from_work(g, size, (h, w)) for g in gen])
        out = frames.copy()
        out[holes] = back[holes]                  # outside the dilated mask: the input, bit for bit
        total = int(holes.sum())
        info = {"filled_from_time_frac": 0.0,     # generated by VACE, not copied from other frames
                "hole_frac": round(total / holes.size, 6), "steps": v["steps"], "windows": generated,
                "work_size": [int(padded[1]), int(padded[0])], "seconds": round(time.perf_counter() - t0, 3)}
        log.info("wan_vace: %d frames %dx%d -> work %dx%d (scaled %dx%d), %d/%d window(s) generated, %d steps, %.1f s",
                 n, w, h, padded[1], padded[0], size[1], size[0], generated, len(starts), v["steps"], info["seconds"])
        return out, info
