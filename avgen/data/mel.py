"""80-bin log-mel spectrogram in the exact form the SpeechT5 HiFi-GAN vocoder takes.

The audio decoder of AVGen-DiT predicts log-mel frames that ``microsoft/speecht5_hifigan``
turns into a waveform, so the training targets must be computed the way that vocoder's
features were (transformers' SpeechT5FeatureExtractor, the same as the SpeechT5 recipes):

* 16 kHz mono; STFT with a 1024-sample periodic Hann window, n_fft 1024, hop 256 (16 ms),
  centred frames (the signal is reflect-padded by n_fft/2 at both ends), so a signal of
  ``n`` samples gives ``1 + n // hop`` frames;
* the MAGNITUDE spectrum (not power) through 80 triangular mel filters from 80 to 7600 Hz on
  the Slaney mel scale (linear below 1 kHz, logarithmic above) with Slaney area normalisation
  (each filter scaled by 2 / its bandwidth in Hz), as librosa's default ``mel`` filters;
* ``log10(max(floor, mel))``.

The floor: the brief of this module (and jik876's HiFi-GAN) uses 1e-5; transformers'
SpeechT5FeatureExtractor defaults to ``mel_floor = 1e-10``. It only matters for near-silent
bins; cfg ``floor`` chooses. Implemented in numpy (float64, as transformers'
``audio_utils.spectrogram``), so the format stage needs neither torch nor transformers; the
tests check the filters and the features against transformers.
"""
from __future__ import annotations

import functools

import numpy as np

DEFAULT_MEL = {"n_mels": 80, "n_fft": 1024, "hop": 256, "fmin": 80.0, "fmax": 7600.0}
DEFAULT_WIN = 1024
DEFAULT_FLOOR = 1e-5

_F_SP = 200.0 / 3          # Slaney mel scale: Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f):
    """Slaney mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    return np.where(f >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP, f / _F_SP)


def mel_to_hz(m):
    m = np.asarray(m, np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), m * _F_SP)


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int, n_fft: int, fmin: float, fmax: float, sample_rate: int) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) Slaney-normalised triangular filters, triangles in Hz between
    mel-spaced corner frequencies (transformers ``mel_filter_bank(..., norm="slaney",
    mel_scale="slaney")``, librosa ``filters.mel``)."""
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    corners = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    width = np.diff(corners)
    slopes = corners[None, :] - fft_hz[:, None]
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    bank = np.maximum(0.0, np.minimum(down, up))
    bank *= 2.0 / (corners[2:] - corners[:-2])
    bank.flags.writeable = False
    return bank


def _cfg(cfg: dict | None) -> dict:
    c = {**DEFAULT_MEL, "win": DEFAULT_WIN, "floor": DEFAULT_FLOOR, **(cfg or {})}
    if not (int(c["win"]) <= int(c["n_fft"]) and int(c["hop"]) >= 1 and 0 <= float(c["fmin"]) < float(c["fmax"])):
        raise ValueError(f"mel settings need win <= n_fft, hop >= 1 and 0 <= fmin < fmax, got {c}")
    return c


def log_mel(x: np.ndarray, cfg: dict | None = None, sample_rate: int = 16000) -> np.ndarray:
    """(n_mels, 1 + len(x) // hop) float32 log10-mel of mono ``x`` (see the module docstring).

    ``cfg``: ``{"n_mels": 80, "n_fft": 1024, "hop": 256, "fmin": 80.0, "fmax": 7600.0}`` plus
    optional ``win`` (1024) and ``floor`` (1e-5). ``fmax`` must be <= sample_rate / 2.
    """
    c = _cfg(cfg)
    n_fft, hop, win = int(c["n_fft"]), int(c["hop"]), int(c["win"])
    if float(c["fmax"]) > sample_rate / 2:
        raise ValueError(f"mel fmax {c['fmax']} is above the Nyquist frequency of {sample_rate} Hz")
    x = np.asarray(x, np.float64).reshape(-1)
    n_frames = 1 + len(x) // hop
    if len(x) <= n_fft // 2:                 # reflect padding needs more samples than the pad
        x = np.pad(x, (0, n_fft // 2 + 1 - len(x)))
    padded = np.pad(x, (n_fft // 2, n_fft // 2), mode="reflect")
    window = np.zeros(n_fft)
    off = (n_fft - win) // 2                 # a shorter window is centred in the frame (torch.stft)
    window[off:off + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)     # periodic Hann
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    mag = np.abs(np.fft.rfft(frames * window, axis=1))                             # (frames, bins)
    bank = mel_filters(int(c["n_mels"]), n_fft, float(c["fmin"]), float(c["fmax"]), int(sample_rate))
    mel = mag @ bank                                                                  # (frames, n_mels)
    return np.log10(np.maximum(float(c["floor"]), mel)).T.astype(np.float32)
