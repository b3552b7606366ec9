"""Feature encoders of the AVGen-DiT features stage, also used by the CLIP and CLAP scores.

``ClipEncoder`` maps frames and captions into CLIP's joint space, ``ClapEncoder`` maps audio and
captions into CLAP's; every method returns float32 numpy rows of unit L2 norm, so that a cosine is a
dot product and the features stage can store them as they are. Two backends each:

* real ones, loaded only from local files (machines here are offline; a missing file stops with an
  error that names the path and ``dvc pull <path>``, a file that does not fit stops naming the params
  key): ``open_clip`` (an open_clip checkpoint *file* for a built-in architecture such as ViT-B-32)
  and ``clap`` (a directory in the ``laion/clap-htsat-unfused`` Hugging Face layout, read with
  transformers' ``ClapModel``/``ClapProcessor``; the ``laion-clap`` package itself needs torchaudio,
  which has no build for torch 2.14, so the transformers port of the same checkpoints is used);
* ``stand_in``: frozen, seeded random projections with the real output shape (width 512). They
  exist so that the *sample* exercises the stage end to end without weights; their numbers mean
  nothing, so :func:`build_encoders` refuses them unless the caller allows them (the sample does,
  a run at scale does not), and ``avgen.eval.scores`` reports a score made with one as unavailable.

Params (``features``; paths relative to the repo root)::

    clip: {backend: stand_in | open_clip, arch: ViT-B-32, path: models/clip/open_clip_vit_b32.bin, seed: 0}
    clap: {backend: stand_in | clap, path: models/clap-htsat-unfused, seed: 0}
    allow_stand_ins: [clip, clap]   # optional: stand-ins asked for by name where allow_stand_in is False
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from math import gcd
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from genbuild.weights import require_weights, weights_error

STAND_IN_DIM = 512       # the width of CLIP ViT-B/32 and of CLAP's projection
CLAP_RATE = 48_000       # the sampling rate of laion CLAP's feature extractor
TEXT_MAX_TOKENS = 77     # laion CLAP tokenises with max_length=77 (as CLIP's context)
BATCH = 16
CLIP_BACKENDS = ("stand_in", "open_clip")
CLAP_BACKENDS = ("stand_in", "clap")


# ----------------------------------------------------------------------------------------- helpers
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _rows(t: torch.Tensor) -> np.ndarray:
    return F.normalize(t.detach().float(), dim=-1).cpu().numpy().astype(np.float32)


def _mono(wav) -> np.ndarray:
    """float32 mono samples from (n,) or (n, channels) (channels averaged, as VGGish/CLAP inputs)."""
    a = np.asarray(wav, dtype=np.float32)
    if a.ndim == 2:
        a = a.mean(axis=1)
    if a.ndim != 1:
        raise ValueError(f"expected mono (n,) or (n, channels) audio, got shape {a.shape}")
    return a


def resample(wav: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``, Kaiser-windowed FIR) from ``sr`` to ``target``."""
    from scipy.signal import resample_poly

    sr, target = int(sr), int(target)
    if sr == target:
        return np.asarray(wav, np.float32)
    g = gcd(sr, target)
    return resample_poly(np.asarray(wav, np.float64), target // g, sr // g).astype(np.float32)


def _as_list(waveforms) -> list[np.ndarray]:
    """A batch of clips: a list of 1-D arrays (lengths may differ) or a 2-D (N, samples) array."""
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 2:
        return [_mono(w) for w in waveforms]
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
        return [_mono(waveforms)]
    return [_mono(w) for w in waveforms]


def _frames(frames) -> np.ndarray:
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[None]
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB frames (N, H, W, 3), got {a.dtype} {a.shape}")
    return a


class _HashedText:
    """Captions -> unit rows: the mean of frozen random vectors of the caption's words (hashed with
    sha256, so the same word gets the same vector in every process) plus a fixed start vector, so
    that an empty caption still has a direction."""

    def __init__(self, dim: int, seed: int, vocab: int = 4096):
        rng = np.random.default_rng([seed, 1])
        self.vocab, self.table = vocab, rng.standard_normal((vocab + 1, dim)).astype(np.float32)

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        if isinstance(captions, str):
            raise TypeError("pass a list of captions, not one string")
        out = []
        for c in captions:
            words = re.findall(r"[a-z0-9]+", str(c).lower())
            ids = [self.vocab] + [int(hashlib.sha256(w.encode()).hexdigest()[:8], 16) % self.vocab for w in words]
            out.append(self.table[ids].mean(0))
        return _unit(np.stack(out)) if out else np.zeros((0, self.table.shape[1]), np.float32)


# ----------------------------------------------------------------------------------------- CLIP
class ClipEncoder:
    """Frames and captions -> CLIP-space rows (float32, unit L2 norm). ``backend`` names the backend,
    ``implementation`` what computed the rows (for reports), ``stand_in`` whether they mean nothing."""

    backend = ""
    stand_in = False
    dim = STAND_IN_DIM
    implementation = ""

    def image(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> (N, D)."""
        raise NotImplementedError

    def text(self, captions: Sequence[str]) -> np.ndarray:
        """N captions -> (N, D)."""
        raise NotImplementedError


class StandInClipEncoder(ClipEncoder):
    """For the sample only: each frame resized to 32x32 (area), centred, times a frozen seeded random
    matrix to width 512; captions through hashed word vectors. Deterministic for a seed, shaped like
    ViT-B/32's output, semantically empty: images and captions do not share a meaningful space."""

    backend, stand_in = "stand_in", True

    def __init__(self, dim: int = STAND_IN_DIM, seed: int = 0, size: int = 32):
        rng = np.random.default_rng([seed, 0])
        self.dim, self.size = int(dim), int(size)
        self.proj = (rng.standard_normal((3 * size * size, self.dim)) / np.sqrt(3 * size * size)).astype(np.float32)
        self._text = _HashedText(self.dim, seed)
        self.implementation = (f"stand-in CLIP (frozen seeded random projection of {size}x{size} frames and hashed words "
                               f"to {self.dim}-d, seed {seed}; not a CLIP model)")

    def image(self, frames):
        a = _frames(frames)
        small = np.stack([cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_AREA) for f in a])
        x = small.reshape(len(a), -1).astype(np.float32) / 255.0 - 0.5
        return _unit(x @ self.proj)

    def text(self, captions):
        return self._text(captions)


class OpenClipEncoder(ClipEncoder):
    """An open_clip CLIP model: ``encode_image`` after the resize/crop/normalise of the model's own
    preprocess config (shortest side bicubic, centre crop, as open_clip's transform does, done on
    tensors by ``genbuild.metrics.learned.ClipI``), ``encode_text`` after open_clip's tokenizer."""

    backend = "open_clip"

    def __init__(self, model: torch.nn.Module, tokenizer, implementation: str | None = None):
        import open_clip

        from genbuild.metrics.learned import OPENAI_MEAN, OPENAI_STD, ClipI

        pre = open_clip.get_model_preprocess_cfg(model)
        size = pre.get("size", 224)
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.model, self.tokenizer = model.eval(), tokenizer
        self._clip_i = ClipI(self.model, size, tuple(pre.get("mean", OPENAI_MEAN)), tuple(pre.get("std", OPENAI_STD)))
        self.dim = int(model.visual.output_dim)
        self.implementation = implementation or f"open_clip {type(model).__name__} (in memory), {size}px"

    def image(self, frames):
        return self._clip_i.embed(_frames(frames)).cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def text(self, captions):
        if isinstance(captions, str):
            raise TypeError("pass a list of captions, not one string")
        dev = next(self.model.parameters()).device
        rows = [self.model.encode_text(self.tokenizer(list(captions[i:i + BATCH])).to(dev))
                for i in range(0, len(captions), BATCH)]
        return _rows(torch.cat(rows)) if rows else np.zeros((0, self.dim), np.float32)


def load_open_clip(path: str | Path | None, arch: str = "ViT-B-32", device: str = "cpu",
                   key: str = "features.clip") -> OpenClipEncoder:
    """open_clip ``arch`` (a built-in config name) with the checkpoint *file* at ``path``.

    A file path is never a pretrained tag, so open_clip loads it strictly and downloads nothing; the
    tokenizer of the built-in configs is open_clip's bundled BPE. The checkpoint must fit ``arch``
    (e.g. OpenAI's weights need ``ViT-B-32-quickgelu``); a misfit raises naming ``<key>.path``.
    """
    import open_clip

    what = f"open_clip {arch} weights"
    if arch not in open_clip.list_models():   # 'hf-hub:' names would download: only built-in configs here
        raise ValueError(f"params key '{key}.arch': {arch!r} is not an open_clip built-in architecture")
    weights = require_weights(path, what)
    try:
        model = open_clip.create_model(arch, pretrained=str(Path(weights).resolve()), device=device)
    except (RuntimeError, KeyError, ValueError) as e:
        raise weights_error(what, weights, f"{key}.path", f"do not load into open_clip {arch}", e) from e
    pre = open_clip.get_model_preprocess_cfg(model)
    impl = (f"open_clip {arch} ({path}), L2-normalised encode_image/encode_text, {pre.get('size')}px bicubic "
            "shortest-side resize + centre crop")
    return OpenClipEncoder(model.eval().requires_grad_(False), open_clip.get_tokenizer(arch), implementation=impl)


# ----------------------------------------------------------------------------------------- CLAP
class ClapEncoder:
    """Audio and captions -> CLAP-space rows (float32, unit L2 norm); attributes as ``ClipEncoder``."""

    backend = ""
    stand_in = False
    dim = STAND_IN_DIM
    implementation = ""

    def audio(self, waveforms, sr: int = CLAP_RATE) -> np.ndarray:
        """N float waveforms (a list of 1-D arrays or an (N, samples) array) at ``sr`` Hz -> (N, D)."""
        raise NotImplementedError

    def text(self, captions: Sequence[str]) -> np.ndarray:
        """N captions -> (N, D)."""
        raise NotImplementedError


class StandInClapEncoder(ClapEncoder):
    """For the sample only: each clip resampled to 16 kHz, its log power spectrum (512-sample Hann
    frames, hop 256) summarised by the mean and standard deviation over time of each of the 257 bins,
    times a frozen seeded random matrix to width 512; captions through hashed word vectors.
    Deterministic and shaped like CLAP's projection; semantically empty."""

    backend, stand_in = "stand_in", True
    RATE, N_FFT, HOP = 16_000, 512, 256

    def __init__(self, dim: int = STAND_IN_DIM, seed: int = 0):
        rng = np.random.default_rng([seed, 2])
        n_in = 2 * (self.N_FFT // 2 + 1)
        self.dim = int(dim)
        self.proj = (rng.standard_normal((n_in, self.dim)) / np.sqrt(n_in)).astype(np.float32)
        self._text = _HashedText(self.dim, seed + 1)
        self.implementation = (f"stand-in CLAP (frozen seeded random projection of log-spectrum statistics and hashed "
                               f"words to {self.dim}-d, seed {seed}; not a CLAP model)")

    def _features(self, wav: np.ndarray, sr: int) -> np.ndarray:
        x = resample(wav, sr, self.RATE).astype(np.float64)
        x = np.pad(x, (0, max(0, self.N_FFT - len(x))))
        n = 1 + (len(x) - self.N_FFT) // self.HOP
        idx = np.arange(self.N_FFT)[None] + self.HOP * np.arange(n)[:, None]
        spec = np.log(np.abs(np.fft.rfft(x[idx] * np.hanning(self.N_FFT), axis=1)) ** 2 + 1e-6)
        return np.concatenate([spec.mean(0), spec.std(0)])

    def audio(self, waveforms, sr: int = CLAP_RATE):
        clips = _as_list(waveforms)
        if not clips:
            return np.zeros((0, self.dim), np.float32)
        feats = np.stack([self._features(w, sr) for w in clips]).astype(np.float32)
        return _unit(feats / 10.0 @ self.proj)

    def text(self, captions):
        return self._text(captions)


class TransformersClapEncoder(ClapEncoder):
    """A transformers ``ClapModel`` with its ``ClapProcessor``: audio resampled to the processor's rate
    (48 kHz) with ``resample_poly``, the processor's 64-bin log-mel features (repeat-padded to 10 s),
    ``get_audio_features``; captions tokenised as laion-clap does (RoBERTa BPE, truncated at 77
    tokens), ``get_text_features``. Both projections come back L2-normalised from the model.

    The processor draws random numbers in two places: the crop of a clip longer than 10 s
    (``rand_trunc``, as laion-clap) and, for fusion models, a clip it marks "longer" at random when
    none is. Here every call runs under a fixed numpy seed, and ``is_longer`` is set to whether each
    clip really is longer than 10 s, so that the same audio always gets the same embedding.
    """

    backend = "clap"

    def __init__(self, model: torch.nn.Module, processor, implementation: str | None = None):
        self.model, self.processor = model.eval(), processor
        self.rate = int(processor.feature_extractor.sampling_rate)
        self.fusion = bool(getattr(model.config.audio_config, "enable_fusion", False))
        self.dim = int(model.config.projection_dim)
        self.implementation = implementation or f"transformers {type(model).__name__} (in memory)"

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def _batch(self, clips: list[np.ndarray]) -> torch.Tensor:
        fe = self.processor.feature_extractor
        state = np.random.get_state()
        try:
            np.random.seed(0)
            inputs = fe(clips, sampling_rate=self.rate, return_tensors="pt", padding="repeatpad",
                        truncation="fusion" if self.fusion else "rand_trunc")
        finally:
            np.random.set_state(state)
        longer = torch.tensor([[len(c) > fe.nb_max_samples] for c in clips])
        dev = self._device()
        out = self.model.get_audio_features(input_features=inputs["input_features"].to(dev), is_longer=longer.to(dev))
        return out.pooler_output

    def audio(self, waveforms, sr: int = CLAP_RATE):
        clips = [resample(w, sr, self.rate) for w in _as_list(waveforms)]
        if not clips:
            return np.zeros((0, self.dim), np.float32)
        return _rows(torch.cat([self._batch(clips[i:i + BATCH]) for i in range(0, len(clips), BATCH)]))

    @torch.inference_mode()
    def text(self, captions):
        if isinstance(captions, str):
            raise TypeError("pass a list of captions, not one string")
        rows, dev = [], self._device()
        for i in range(0, len(captions), BATCH):
            tok = self.processor.tokenizer(list(captions[i:i + BATCH]), padding=True, truncation=True,
                                           max_length=TEXT_MAX_TOKENS, return_tensors="pt")
            out = self.model.get_text_features(input_ids=tok["input_ids"].to(dev),
                                               attention_mask=tok["attention_mask"].to(dev))
            rows.append(out.pooler_output)
        return _rows(torch.cat(rows)) if rows else np.zeros((0, self.dim), np.float32)


def load_clap(path: str | Path | None, device: str = "cpu", key: str = "features.clap") -> TransformersClapEncoder:
    """``ClapModel`` + ``ClapProcessor`` from the local directory ``path`` (``laion/clap-htsat-unfused``
    layout: config.json, weights, preprocessor/tokenizer files), ``local_files_only``; the load is
    checked strictly (a missing or foreign tensor raises naming ``<key>.path``)."""
    from transformers import ClapModel, ClapProcessor

    from genbuild.hf_loading import check_loading_info

    what = "CLAP model directory"
    where = require_weights(path, what)
    if not (Path(where) / "config.json").is_file():
        raise weights_error(what, where, f"{key}.path", "is not a transformers model directory",
                            FileNotFoundError(f"no config.json in {where}"))
    try:
        model, info = ClapModel.from_pretrained(str(where), local_files_only=True, output_loading_info=True)
        processor = ClapProcessor.from_pretrained(str(where), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise weights_error(what, where, f"{key}.path", "does not load as ClapModel + ClapProcessor", e) from e
    check_loading_info(info, str(where), f"{key}.path", what=what)
    impl = (f"transformers ClapModel ({path}; the laion-clap checkpoints' transformers port), L2-normalised "
            f"get_audio_features/get_text_features, audio resampled to {processor.feature_extractor.sampling_rate} Hz")
    return TransformersClapEncoder(model.to(device).requires_grad_(False), processor, implementation=impl)


# ----------------------------------------------------------------------------------------- params
def _backend(cfg: dict, which: str, known: tuple[str, ...], allow_stand_in: bool) -> str:
    backend = cfg.get("backend", "stand_in")
    if backend not in known:
        raise ValueError(f"params key 'features.{which}.backend': unknown backend {backend!r} (known: {', '.join(known)})")
    if backend == "stand_in" and not allow_stand_in:
        raise ValueError(f"params key 'features.{which}.backend' is 'stand_in' (frozen random projections, for the sample "
                         f"only); this run needs the real encoder: set it to '{known[1]}' with its weights path, or list "
                         f"'{which}' in 'features.allow_stand_ins' to ask for the stand-in by name")
    return backend


def _path(cfg: dict, root: Path) -> Path | None:
    return Path(root) / cfg["path"] if cfg.get("path") else None


def build_encoders(cfg: dict, root: Path = Path("."), allow_stand_in: bool = False,
                   device: str = "cpu") -> tuple[ClipEncoder, ClapEncoder]:
    """(CLIP encoder, CLAP encoder) from ``features``-shaped params (see the module docstring).

    ``allow_stand_in`` is True only for the sample: elsewhere a stand-in would fill the feature files
    with numbers that look like embeddings and mean nothing, so asking for one is an error unless the
    params name it in ``features.allow_stand_ins`` (e.g. ``[clap]``: a run that knowingly goes without).
    """
    cfg = cfg or {}
    clip_cfg, clap_cfg = cfg.get("clip") or {}, cfg.get("clap") or {}
    named = set(cfg.get("allow_stand_ins") or ())
    clip_backend = _backend(clip_cfg, "clip", CLIP_BACKENDS, allow_stand_in or "clip" in named)   # both checked before any load
    clap_backend = _backend(clap_cfg, "clap", CLAP_BACKENDS, allow_stand_in or "clap" in named)
    if clip_backend == "stand_in":
        clip: ClipEncoder = StandInClipEncoder(int(clip_cfg.get("dim", STAND_IN_DIM)), int(clip_cfg.get("seed", 0)))
    else:
        clip = load_open_clip(_path(clip_cfg, root), clip_cfg.get("arch", "ViT-B-32"), device)
    if clap_backend == "stand_in":
        clap: ClapEncoder = StandInClapEncoder(int(clap_cfg.get("dim", STAND_IN_DIM)), int(clap_cfg.get("seed", 0)))
    else:
        clap = load_clap(_path(clap_cfg, root), device)
    return clip, clap
