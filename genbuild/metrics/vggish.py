"""VGGish, the embedding of the Fréchet Audio Distance (FAD; Kilgour et al., 2019), in torch.

The network has the state-dict layout of harritaylor/torchvggish (the published
``vggish-10086976.pth`` converted from Google's TF-slim checkpoint): ``features.{0,3,6,8,11,13}``
3x3 convolutions of 64-128-256-256-512-512 channels, each followed by ReLU, with 2x2 max-pools after
the 1st, 2nd, 4th and 6th; ``embeddings.{0,2,4}`` linear 12288 -> 4096 -> 4096 -> 128 with ReLUs
between. The convolution output is flattened channels-last, as TensorFlow's NHWC flatten did, so the
converted fully connected weights apply unchanged.

Google's ``vggish_slim.define_vggish_slim`` leaves the 128-d embedding layer linear
(``activation_fn=None``), and the reference FAD (google-research ``frechet_audio_distance``) uses that
raw embedding without the AudioSet PCA. torchvggish appends a ReLU after the last linear layer; it has
no parameters, so ``final_relu`` (default False, matching Google) decides whether it is applied, as the
``use_activation`` switch of the common ``frechet_audio_distance`` package does.

Front end (``waveform_to_examples``), re-implemented in numpy after Google's ``mel_features.py``: mono,
resampled to 16 kHz (``scipy.signal.resample_poly``; the reference uses resampy), 25 ms periodic-Hann
frames every 10 ms, |rfft| with a 512-point FFT, 64 HTK-mel bands 125-7500 Hz, ``log(mel + 0.01)``,
framed into non-overlapping 0.96 s examples of 96 frames. A clip shorter than one example is padded
with silence to one, so that every clip contributes.

Optional post-processing: the AudioSet release's PCA (with whitening) followed by clipping to [-2, 2]
and 8-bit quantisation, as torchvggish's ``Postprocessor`` does, when the params name a PCA file
(torchvggish's ``vggish_pca_params-970ea276.pth`` or Google's ``vggish_pca_params.npz``) or when the
weights file itself carries ``pproc.pca_eigen_vectors``/``pproc.pca_means`` and ``pca=True`` is asked.

``load_fad(path)`` raises ``genbuild.metrics.learned.Unavailable`` naming the path when the file is
absent (the report then says "not measured"); a file that is there and does not fit raises.
"""
from __future__ import annotations

import pickle
from collections.abc import Sequence
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genbuild.metrics.learned import Unavailable, frechet_distance
from genbuild.weights import weights_error

SAMPLE_RATE = 16_000
WINDOW_S, HOP_S = 0.025, 0.010
NUM_BANDS, NUM_FRAMES = 64, 96
MEL_MIN_HZ, MEL_MAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_S = 0.96
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
CHANNELS = (64, 128, 256, 256, 512, 512)
POOL_AFTER = (0, 1, 3, 5)          # indices into CHANNELS followed by a 2x2 max-pool
HIDDEN, EMBEDDING = 4096, 128
BATCH = 64


# ----------------------------------------------------------------------------------------- front end
def hertz_to_mel(hz):
    """HTK mel scale, as VGGish was trained with."""
    return 1127.0 * np.log(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_matrix(num_bins: int = 257, sr: int = SAMPLE_RATE, bands: int = NUM_BANDS,
               lo: float = MEL_MIN_HZ, hi: float = MEL_MAX_HZ) -> np.ndarray:
    """(num_bins, bands) triangular filters, linear in mel between equally spaced mel edges; the DC
    bin gets no weight (as HTK and VGGish)."""
    bin_mel = hertz_to_mel(np.linspace(0.0, sr / 2.0, num_bins))
    edges = np.linspace(hertz_to_mel(lo), hertz_to_mel(hi), bands + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (bin_mel[:, None] - lower) / (centre - lower)
    down = (upper - bin_mel[:, None]) / (upper - centre)
    m = np.maximum(0.0, np.minimum(up, down))
    m[0, :] = 0.0
    return m


def _frame(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    n = 1 + (len(x) - length) // hop
    return np.lib.stride_tricks.as_strided(x, (n, length) + x.shape[1:], (x.strides[0] * hop,) + x.strides)


def log_mel(wav16k: np.ndarray) -> np.ndarray:
    """16 kHz mono samples -> (frames, 64) log-mel; needs at least one 400-sample window."""
    win, hop = round(SAMPLE_RATE * WINDOW_S), round(SAMPLE_RATE * HOP_S)
    n_fft = 2 ** int(np.ceil(np.log2(win)))
    frames = _frame(np.ascontiguousarray(wav16k, np.float64), win, hop)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)   # periodic Hann
    spec = np.abs(np.fft.rfft(frames * window, n_fft))
    return np.log(spec @ mel_matrix(spec.shape[1]) + LOG_OFFSET)


def waveform_to_examples(wav: np.ndarray, sr: int) -> np.ndarray:
    """Samples at ``sr`` (mono, or (n, channels) averaged) -> (n_examples, 96, 64) float32 log-mel
    examples of 0.96 s, without overlap; shorter audio is padded with silence to one example."""
    from scipy.signal import resample_poly

    x = np.asarray(wav, np.float64)
    x = x.mean(axis=1) if x.ndim == 2 else x
    if x.ndim != 1:
        raise ValueError(f"expected mono (n,) or (n, channels) audio, got shape {x.shape}")
    if int(sr) != SAMPLE_RATE:
        g = gcd(int(sr), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sr) // g)
    need = round(SAMPLE_RATE * WINDOW_S) + (NUM_FRAMES - 1) * round(SAMPLE_RATE * HOP_S)
    x = np.pad(x, (0, max(0, need - len(x))))
    per = round(EXAMPLE_S / HOP_S)
    return np.ascontiguousarray(_frame(log_mel(x), per, per), dtype=np.float32)


# ----------------------------------------------------------------------------------------- network
def _features(channels: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 1
    for i, c in enumerate(channels):
        layers += [nn.Conv2d(c_in, c, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        if i in POOL_AFTER:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        c_in = c
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """VGGish in torchvggish's layout; ``channels``/``hidden``/``embedding`` default to the published
    sizes (tests build narrow instances with the same names). Input (B, 1, 96, 64) log-mel examples,
    output (B, embedding)."""

    def __init__(self, channels: Sequence[int] = CHANNELS, hidden: int = HIDDEN, embedding: int = EMBEDDING,
                 final_relu: bool = False):
        super().__init__()
        if len(channels) != len(CHANNELS):
            raise ValueError(f"VGGish has {len(CHANNELS)} convolutions, got channels {tuple(channels)}")
        self.final_relu = final_relu
        self.features = _features(channels)
        flat = channels[-1] * (NUM_FRAMES // 16) * (NUM_BANDS // 16)   # four 2x2 pools: 96x64 -> 6x4
        self.embeddings = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(True), nn.Linear(hidden, hidden), nn.ReLU(True),
                                        nn.Linear(hidden, embedding), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).permute(0, 2, 3, 1).flatten(1)   # NHWC flatten, as the TF checkpoint's fc1 expects
        x = self.embeddings[:5](x)
        return self.embeddings[5](x) if self.final_relu else x

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], final_relu: bool = False) -> VGGish:
        """Sizes read from the tensors, then a strict load: a file of another layout raises."""
        convs = sorted((int(k.split(".")[1]), v.shape[0]) for k, v in sd.items()
                       if k.startswith("features.") and k.endswith(".weight"))
        net = cls([c for _, c in convs], sd["embeddings.0.weight"].shape[0], sd["embeddings.4.weight"].shape[0], final_relu)
        net.load_state_dict(sd, strict=True)
        return net


class Pca(nn.Module):
    """The AudioSet embedding post-processing: ``V (e - mean)``, clip to [-2, 2], quantise to 0..255."""

    def __init__(self, eigen_vectors, means):
        super().__init__()
        self.register_buffer("eigen_vectors", torch.as_tensor(np.asarray(eigen_vectors), dtype=torch.float32))
        self.register_buffer("means", torch.as_tensor(np.asarray(means), dtype=torch.float32).reshape(-1, 1))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        pca = (self.eigen_vectors @ (e.T - self.means)).T
        clipped = pca.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


# ----------------------------------------------------------------------------------------- metric
class Fad:
    """Fréchet Audio Distance: a Gaussian fitted to the VGGish embeddings of every 0.96 s example of
    the real clips, another to the generated ones', and the Fréchet distance between them (lower is
    better; 0 for identical sets). Only comparable with the same embedding (named in
    ``implementation``), PCA choice and amount of audio."""

    name = "fad"
    higher_is_better = False

    def __init__(self, net: VGGish, pca: Pca | None = None, implementation: str | None = None):
        self.net, self.pca = net.eval(), pca
        self.implementation = implementation or (f"genbuild.metrics.vggish.VGGish (in memory), "
                                                 f"{'PCA' if pca is not None else 'raw'} embeddings")

    @torch.inference_mode()
    def embed(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """One clip -> (n_examples, D) float64 embeddings."""
        ex = torch.from_numpy(waveform_to_examples(wav, sr))[:, None]
        dev = next(self.net.parameters()).device
        out = []
        for i in range(0, len(ex), BATCH):
            e = self.net(ex[i:i + BATCH].to(dev))
            out.append((self.pca(e) if self.pca is not None else e).double().cpu())
        return torch.cat(out).numpy()

    def embed_set(self, wavs: Sequence[np.ndarray], sr: int) -> np.ndarray:
        return np.concatenate([self.embed(w, sr) for w in wavs])

    def score(self, real_wavs: Sequence[np.ndarray], fake_wavs: Sequence[np.ndarray], sr: int) -> float:
        return frechet_distance(self.embed_set(real_wavs, sr), self.embed_set(fake_wavs, sr))


# ----------------------------------------------------------------------------------------- loading
def _numpy_globals() -> list:
    """What unpickling a dict of numpy arrays needs (torchvggish's PCA file is one), nothing more."""
    import numpy.dtypes as nd

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [getattr(nd, n) for n in dir(nd) if n.endswith("DType")]
    old = [(_reconstruct, "numpy.core.multiarray._reconstruct"), (scalar, "numpy.core.multiarray.scalar")]  # numpy-1 pickles
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes, *old]


def _load(path: Path) -> dict[str, Any]:
    """A checkpoint dict: torch's safe unpickler, extended by numpy arrays only; ``.npz`` via numpy."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with torch.serialization.safe_globals(_numpy_globals()):
            sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _pca(pca: str | Path | bool | None, bundled: dict[str, Any], weights: Path) -> tuple[Pca | None, str]:
    if not pca:
        return None, "raw 128-d embeddings (no PCA)"
    if pca is True:
        if "pproc.pca_eigen_vectors" not in bundled:
            raise Unavailable(f"PCA asked for, but the weights file has no pproc.pca_* tensors: {weights}")
        return Pca(bundled["pproc.pca_eigen_vectors"], bundled["pproc.pca_means"]), f"PCA from {weights.name}"
    path = Path(pca)
    if not path.is_file():
        raise Unavailable(f"VGGish PCA params file not found: {path}")
    p = _load(path)
    return Pca(p["pca_eigen_vectors"], p["pca_means"]), f"AudioSet PCA + 8-bit quantisation ({path})"


def load_fad(path: str | Path, pca: str | Path | bool | None = None, *, final_relu: bool = False,
             device: str = "cpu") -> Fad:
    """FAD with the VGGish weights at ``path`` (torchvggish layout; ``pproc.*`` tensors, if any, are
    the PCA used when ``pca=True``), optionally the PCA file ``pca``. ``Unavailable`` names a missing
    file; a file that does not load into VGGish raises ``WeightsError``."""
    path = Path(path)
    if not path.is_file():
        raise Unavailable(f"VGGish weights file not found: {path}")
    try:
        sd = _load(path)
        net = VGGish.from_state_dict({k: v for k, v in sd.items() if not k.startswith("pproc.")}, final_relu)
    except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as e:
        raise weights_error("VGGish (FAD)", path, "eval FAD weights", "do not load into torchvggish's VGGish", e) from e
    post, pca_desc = _pca(pca, sd, path)
    if post is not None:
        post = post.to(device)
    impl = (f"VGGish ({path}; torchvggish layout, {'with' if final_relu else 'no'} final ReLU), {pca_desc}, "
            "0.96 s log-mel examples at 16 kHz, Frechet distance over all examples of each set")
    return Fad(net.to(device), post, implementation=impl)
