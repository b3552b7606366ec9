"""Learned evaluation metrics: CLIP-I, DINO-I, LPIPS, FVD and MUSIQ, loaded only from local weights.

``load_metrics(params["eval"]["metrics"], root)`` returns the metrics whose weights are on disk and,
for every other one, the reason it is unavailable (naming the missing path), so that the report can
say "not measured" instead of printing a number from a random or downloaded network. Nothing here
touches a model hub: open_clip gets a checkpoint *file*, transformers gets ``local_files_only=True``,
lpips builds its backbone with ``pnet_rand=True`` and then receives the local backbone weights.
A configured file that exists but does not load raises: that is a broken setup, not a missing metric.

Config (``eval.metrics``; paths relative to ``root``; any entry may be absent/null):
  clip_i: {weights: <open_clip checkpoint file>, model: ViT-H-14 | model_config: {<open_clip CLIP kwargs>}}
  dino_i: {weights: <Dinov2Model directory>, resize: 256, crop: 224}
  lpips:  {weights: <torchvision backbone state dict>, net: alex | vgg | squeeze}
  fvd:    {weights: <pytorch-i3d style state dict, e.g. rgb_imagenet.pt>, size: 224}
  musiq:  {weights: <pyiqa MUSIQ checkpoint, e.g. musiq_koniq_ckpt-*.pth>, arch: {<extra MUSIQ kwargs>}}

Every metric class can also be built around an already constructed network (tests use tiny,
randomly initialised instances of the real architectures). Conventions: videos are uint8
(F, H, W, 3) RGB, the reference is the uint8 (H, W, 3) product image on white, the mask is (F, H, W)
bool; all metrics here score whole frames and ignore the mask. Each metric carries ``name``,
``higher_is_better`` and ``implementation`` (class, weights file, settings) for the report, and
either ``score(pred, truth, reference, mask)`` per item or ``score_set(preds, truths)`` (FVD).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # also the DINOv2 encoder's
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
CHUNK = 16  # frames per forward pass: bounds memory for full-resolution videos


class Unavailable(Exception):
    """A metric cannot be computed (not configured, weights missing); the message says why."""


# ----------------------------------------------------------------------------------------- helpers
def _to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    a = np.asarray(frames)
    if a.dtype != np.uint8 or a.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB frames (..., H, W, 3), got {a.dtype} {a.shape}")
    t = torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)
    return (t[None] if t.ndim == 3 else t).permute(0, 3, 1, 2)


def _resize_crop(x: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """Shortest side to ``resize`` (bicubic, antialiased), then a centred ``crop`` square, as the
    CLIP/DINOv2 image processors do; keeps aspect ratio so wide video frames are not squashed."""
    h, w = x.shape[-2:]
    scale = resize / min(h, w)
    nh, nw = max(crop, round(h * scale)), max(crop, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return x[..., top:top + crop, left:left + crop].clamp_(0.0, 1.0)


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


def _chunks(x: torch.Tensor, n: int = CHUNK):
    return (x[i:i + n] for i in range(0, len(x), n))


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (rows = samples).

    With fewer samples than dimensions (4 videos vs 400-d I3D logits) both covariances live in
    the span of the centred samples, so the samples are first expressed in an orthonormal basis of
    that span: the distance is unchanged, but ``sqrtm`` runs on a k x k instead of a d x d matrix
    (milliseconds instead of seconds, and well conditioned, so identical sets give ~1e-12 rather
    than ~1e-3). If ``sqrtm`` still fails, an ``eps * I`` offset (as in reference FID code) is added.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need >= 2 samples per set for a covariance, got {len(a)} and {len(b)}")
    from scipy.linalg import LinAlgWarning, sqrtm

    mean_term = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    if len(a) + len(b) < a.shape[1]:
        basis = np.linalg.qr(np.concatenate([a - a.mean(0), b - b.mean(0)]).T)[0]  # (d, k)
        a, b = a @ basis, b @ basis
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # singular by construction (rank n - 1); finiteness is checked
        warnings.simplefilter("ignore", LinAlgWarning)
        covmean = sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * eps
            covmean = sqrtm((s1 + offset) @ (s2 + offset))
    d = mean_term + float(np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean.real))
    return max(d, 0.0)


# ----------------------------------------------------------------------------------------- metrics
class EmbeddingSimilarity:
    """Mean over generated frames of cos(embed(reference), embed(frame)); 1.0 = same content.

    Subclasses supply ``_embed`` (unit-range images -> (N, D)); the reference is compared with the
    *generated* video only, so ``truth`` and ``mask`` are unused.
    """

    name = ""
    higher_is_better = True

    def __init__(self, net: torch.nn.Module, implementation: str):
        self.net = net.eval()
        self.implementation = implementation

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def embed(self, frames: np.ndarray) -> torch.Tensor:
        x = _to_unit(frames)
        dev = _device(self.net)
        return torch.cat([F.normalize(self._embed(c.to(dev)).float(), dim=-1) for c in _chunks(x)])

    def score(self, pred, truth, reference, mask) -> float:
        ref = self.embed(reference)
        return float((self.embed(pred) @ ref.T).mean())


class ClipI(EmbeddingSimilarity):
    """CLIP-I with an open_clip model: ``encode_image`` after open_clip's resize/crop/normalise."""

    name = "clip_i"

    def __init__(self, model, preprocess_size: int = 224, mean=OPENAI_MEAN, std=OPENAI_STD,
                 implementation: str | None = None):
        super().__init__(model, implementation or f"open_clip {type(model).__name__} (in memory), "
                                                  f"{preprocess_size}px")
        self.size, self.mean, self.std = preprocess_size, mean, std

    def _embed(self, x):
        return self.net.encode_image(_normalize(_resize_crop(x, self.size, self.size), self.mean, self.std))


class DinoI(EmbeddingSimilarity):
    """DINO-I with a transformers ``Dinov2Model``: CLS token after the final layer norm
    (``pooler_output``), inputs resized 256 / centre-cropped 224 like ``BitImageProcessor``."""

    name = "dino_i"

    def __init__(self, model, resize: int = 256, crop: int = 224, implementation: str | None = None):
        super().__init__(model, implementation or f"transformers {type(model).__name__} (in memory), "
                                                  f"resize {resize} crop {crop}")
        self.resize, self.crop = resize, crop

    def _embed(self, x):
        out = self.net(pixel_values=_normalize(_resize_crop(x, self.resize, self.crop),
                                               IMAGENET_MEAN, IMAGENET_STD))
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]


class Lpips:
    """Mean over frames of LPIPS(pred frame, truth frame) at native resolution, inputs in [-1, 1]."""

    name = "lpips"
    higher_is_better = False

    def __init__(self, net: torch.nn.Module, implementation: str | None = None):
        self.net = net.eval()
        self.implementation = implementation or f"lpips.LPIPS net={getattr(net, 'pnet_type', '?')} (in memory)"

    @torch.inference_mode()
    def score(self, pred, truth, reference, mask) -> float:
        p, t = _to_unit(pred), _to_unit(truth)
        if p.shape != t.shape:
            raise ValueError(f"pred {tuple(p.shape)} and truth {tuple(t.shape)} differ in shape")
        dev = _device(self.net)
        vals = [self.net(a.to(dev) * 2 - 1, b.to(dev) * 2 - 1).flatten()
                for a, b in zip(_chunks(p), _chunks(t))]
        return float(torch.cat(vals).mean())


class Musiq:
    """No-reference quality: mean MUSIQ score of the generated frames (pyiqa arch, [0, 1] RGB input;
    the net does its own multi-scale patching). Only trained weights make the number meaningful."""

    name = "musiq"
    higher_is_better = True

    def __init__(self, net: torch.nn.Module, implementation: str | None = None):
        self.net = net.eval()
        self.implementation = implementation or "pyiqa MUSIQ (in memory)"

    @torch.inference_mode()
    def score(self, pred, truth, reference, mask) -> float:
        dev = _device(self.net)
        vals = [self.net(c.to(dev)).flatten() for c in _chunks(_to_unit(pred))]
        return float(torch.cat(vals).mean())


class Fvd:
    """Fréchet Video Distance on the Kinetics-400 I3D's 400-d logits, averaged over time, as the
    reference FVD (Unterthiner et al., 2018, google-research/frechet_video_distance) computes them
    (``InceptionI3d.forward``); numbers are comparable with published FVDs only with the same I3D
    weights, clip length and sample count (the report names them).

    Each video is resized frame-wise to ``size`` x ``size`` (bilinear, antialiased; the reference
    uses TensorFlow's resize_bilinear without antialiasing) and scaled to [-1, 1], as the Kinetics
    I3D expects; a set metric, because a Gaussian needs many videos.
    """

    name = "fvd"
    higher_is_better = False

    def __init__(self, i3d: torch.nn.Module, size: int = 224, implementation: str | None = None):
        self.net = i3d.eval()
        self.size = size
        self.implementation = implementation or f"genbuild.metrics.i3d.InceptionI3d (in memory), {size}px"

    @torch.inference_mode()
    def features(self, videos: Sequence[np.ndarray]) -> np.ndarray:
        dev, feats = _device(self.net), []
        for video in videos:
            x = F.interpolate(_to_unit(video), size=(self.size, self.size), mode="bilinear",
                              antialias=True, align_corners=False)
            clip = (x * 2 - 1).permute(1, 0, 2, 3)[None]  # (1, 3, T, H, W)
            feats.append(self.net(clip.to(dev)).double().cpu().numpy()[0])
        return np.stack(feats)

    def score_set(self, preds: list, truths: list) -> float:
        return frechet_distance(self.features(preds), self.features(truths))


Metric = ClipI | DinoI | Lpips | Musiq | Fvd


# ----------------------------------------------------------------------------------------- loading
def _weights(entry: dict, root: Path, *, directory: bool = False) -> Path:
    """The configured weights path under ``root``; Unavailable (naming the path) if it is absent."""
    rel = entry.get("weights")
    if not rel:
        raise Unavailable("not configured (no 'weights' entry)")
    path = Path(root) / rel
    ok = (path / "config.json").is_file() if directory else path.is_file()
    if not ok:
        what = "directory with config.json" if directory else "file"
        raise Unavailable(f"weights {what} not found: {path}")
    return path


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint, unwrapping ``{'params': ...}``/``{'state_dict': ...}`` and ``module.``."""
    sd: Any = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params", "state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_clip_i(entry: dict, root: Path, device: str) -> ClipI:
    import open_clip

    path = _weights(entry, root)
    if entry.get("model_config"):  # custom architecture, e.g. a tiny test model
        model = open_clip.CLIP(**entry["model_config"])
        open_clip.load_checkpoint(model, str(path), strict=True)
        arch = "custom model_config"
    else:
        arch = entry.get("model", "ViT-H-14")
        # A file path is never a pretrained *tag*, so open_clip loads it and downloads nothing.
        model = open_clip.create_model(arch, pretrained=str(path.resolve()), device=device)
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean, std = tuple(pre.get("mean", OPENAI_MEAN)), tuple(pre.get("std", OPENAI_STD))
    impl = (f"open_clip {arch} ({entry['weights']}), encode_image cosine vs reference, {size}px bicubic "
            f"shortest-side resize + centre crop, mean {mean} std {std}")
    return ClipI(model.to(device), size, mean, std, implementation=impl)


def _load_dino_i(entry: dict, root: Path, device: str) -> DinoI:
    from transformers import Dinov2Model

    from genbuild.hf_loading import check_loading_info

    path = _weights(entry, root, directory=True)
    model, info = Dinov2Model.from_pretrained(str(path), local_files_only=True, output_loading_info=True)
    check_loading_info(info, str(path), "dino_i.weights")   # the published layout reports nothing
    model = model.to(device)
    resize, crop = int(entry.get("resize", 256)), int(entry.get("crop", 224))
    impl = (f"transformers Dinov2Model ({entry['weights']}), pooler_output (CLS) cosine vs reference, "
            f"resize {resize} crop {crop}, ImageNet mean/std")
    return DinoI(model, resize, crop, implementation=impl)


def load_lpips(entry: dict, root: Path, device: str) -> Lpips:
    """LPIPS from its local weights; public because the distillation's perceptual term uses it too."""
    import lpips

    path = _weights(entry, root)
    net_name = entry.get("net", "alex")
    # pnet_rand: torchvision would otherwise download the backbone; the linear heads are local files.
    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated", raised inside lpips
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net=net_name, pretrained=True, pnet_rand=True, verbose=False)
    # lpips splits torchvision's ``features`` into slices that keep the original layer indices, so
    # "features.3.weight" (or bare "3.weight") belongs at "slice2.3.weight" for AlexNet.
    slice_of = {idx: s for s, part in net.net.named_children() for idx, _ in part.named_children()}
    feats = {k.removeprefix("features."): v for k, v in _state_dict(path).items()
             if not k.startswith("classifier.")}
    mapped = {f"{slice_of.get(k.split('.')[0], 'unused')}.{k}": v for k, v in feats.items()}
    net.net.load_state_dict(mapped, strict=True)
    impl = f"lpips.LPIPS v0.1 net={net_name} (backbone {entry['weights']}, linear heads from lpips package)"
    return Lpips(net.to(device), implementation=impl)


def _load_fvd(entry: dict, root: Path, device: str) -> Fvd:
    from genbuild.metrics.i3d import InceptionI3d

    path = _weights(entry, root)
    sd = _state_dict(path)
    i3d = InceptionI3d(num_classes=sd["logits.conv3d.weight"].shape[0])
    i3d.load_state_dict(sd, strict=True)
    size = int(entry.get("size", 224))
    impl = (f"genbuild.metrics.i3d.InceptionI3d ({entry['weights']}), {i3d.logits.conv3d.out_channels}-d logits "
            f"averaged over time (the reference FVD's features, Unterthiner et al. 2018), {size}x{size} bilinear, "
            "[-1, 1], Frechet distance (scipy sqrtm in the span of the samples)")
    return Fvd(i3d.to(device), size, implementation=impl)


def _musiq_state(path: Path) -> dict[str, torch.Tensor]:
    """A MUSIQ checkpoint read as pyiqa reads it (``archs.arch_util.load_pretrained_network``: torch.load,
    ``module.`` prefixes removed, then a strict load). The published ``musiq_*_ckpt-*.pth`` files are a
    bare ``MUSIQ().state_dict()`` saved by ``torch.save`` (pyiqa's ``scripts/convert_musiq_to_pth.py``);
    pyiqa's own training checkpoints wrap it as ``{'params': ...}``. pyiqa unpickles with
    ``weights_only=False``: here the safe unpickler is tried first, and pyiqa's only when the file holds
    objects beyond tensors, so that every file pyiqa loads loads here."""
    import pickle

    from pyiqa.archs.arch_util import clean_state_dict

    try:
        sd: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        sd = torch.load(path, map_location="cpu", weights_only=False)  # as pyiqa does; a file the params name
    if isinstance(sd, dict) and isinstance(sd.get("params"), dict):
        sd = sd["params"]
    return dict(clean_state_dict(sd))


def _load_musiq(entry: dict, root: Path, device: str) -> Musiq:
    from pyiqa.archs.musiq_arch import MUSIQ

    path = _weights(entry, root)
    sd = _musiq_state(path)
    head = sd.get("head.weight", sd.get("head.0.weight"))
    num_class = head.shape[0] if head is not None else 1  # 10 for AVA (score distribution), else 1
    net = MUSIQ(pretrained=False, num_class=num_class, **(entry.get("arch") or {}))
    net.load_state_dict(sd, strict=True)
    impl = f"pyiqa MUSIQ ({entry['weights']}), num_class={num_class}, mean over generated frames"
    return Musiq(net.to(device), implementation=impl)


LOADERS = {"clip_i": _load_clip_i, "dino_i": _load_dino_i, "lpips": load_lpips,
           "fvd": _load_fvd, "musiq": _load_musiq}


def load_metric(name: str, entry: dict, root: Path = Path("."), device: str = "cpu") -> Metric:
    """One metric from its config entry (extra keys are ignored); raises ``Unavailable`` naming the
    missing path, ``ValueError`` for an unknown name. For callers where a configured metric is a
    gate (the filter), not an optional report column."""
    if name not in LOADERS:
        raise ValueError(f"unknown learned metric {name!r}; known: {sorted(LOADERS)}")
    return LOADERS[name](entry, Path(root), device)


def load_metrics(cfg: dict | None, root: Path = Path("."), device: str = "cpu"
                 ) -> tuple[dict[str, Metric], dict[str, str]]:
    """(available metrics by name, unavailable name -> reason) for ``eval.metrics``-shaped ``cfg``.

    Unknown metric names raise ``ValueError`` so that a typo does not silently drop a metric.
    """
    cfg = cfg or {}
    unknown = sorted(set(cfg) - set(LOADERS))
    if unknown:
        raise ValueError(f"unknown learned metrics {unknown}; known: {sorted(LOADERS)}")
    metrics: dict[str, Metric] = {}
    unavailable: dict[str, str] = {}
    for name in LOADERS:
        try:
            if not cfg.get(name):
                raise Unavailable("not configured")
            metrics[name] = load_metric(name, cfg[name], root, device)
        except Unavailable as exc:
            unavailable[name] = f"{name}: {exc}"
    return metrics, unavailable
