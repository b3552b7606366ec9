"""The measured quantities of the AV filter (avgen.data.quality), each a small function.

Video: ``sharpness`` (variance of the Laplacian), ``cuts_per_second`` (PySceneDetect's
ContentDetector). Audio: ``read_audio`` (ffmpeg decode), ``snr_db`` (reference-free minimum
statistics), ``silence_fraction`` (25 ms frames below a level), ``clipping_fraction``.
The docstrings say why each estimator is the one it is.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from genbuild.io.video import ffmpeg_bin, input_args, read_frames, run_tool

SHARPNESS_FRAMES = 8        # frames sampled (evenly over the clip) for the sharpness measure
PROCESS_SIDE = 256          # PySceneDetect's SceneManager auto-downscale: larger side to 256 px
SNR_PERCENTILE = 10.0       # minimum statistics: the 10th percentile over time of each bin's power
# E[percentile] / mean of an exponentially distributed power (a Gaussian noise bin): -ln(1 - p)
SNR_BIAS = -math.log(1.0 - SNR_PERCENTILE / 100.0)      # 0.1054 for p = 0.1
SNR_RANGE = (-30.0, 100.0)  # dB: estimates are clamped here (no signal / no measurable noise)
SILENCE_FRAME_S = 0.025


# ----------------------------------------------------------------------------- video

def sample_frames(path: str | os.PathLike, width: int, height: int, seconds: float, n: int = SHARPNESS_FRAMES) -> np.ndarray:
    """``n`` RGB frames (N, H, W, 3) uint8 at source resolution, evenly spaced over the clip.

    ffmpeg's fps filter at ``n / seconds`` keeps about ``n`` frames, so only those are held in
    memory whatever the clip's length and size; ``seconds <= 0`` (unknown) decodes every frame.
    """
    fps = n / seconds if seconds > 0 else None
    frames = read_frames(path, size=(int(width), int(height)), fps=fps)
    idx = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))
    return frames[idx]


def sharpness(frames: np.ndarray, n: int = SHARPNESS_FRAMES) -> float:
    """Mean over up to ``n`` evenly spaced frames of the variance of the Laplacian of the grayscale
    uint8 frame (cv2.Laplacian, 3x3, at source resolution).

    Why: the Laplacian is a second derivative, so it responds to edges and fine texture and not
    to flat areas or smooth gradients; its variance over the frame is large when there is fine
    detail and collapses when the picture is blurred (Pech-Pacheco et al. 2000, the usual
    "is this photo blurry" test, on the 0-255 scale the threshold 100 is set for). Measured at
    source resolution because downscaling itself sharpens; frames are averaged so that a single
    motion-blurred or black frame does not decide.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"sharpness: expected (N, H, W, 3) frames, got shape {frames.shape}")
    idx = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))
    values = []
    for f in frames[idx]:
        gray = cv2.cvtColor(np.ascontiguousarray(f, np.uint8), cv2.COLOR_RGB2GRAY)
        values.append(float(cv2.Laplacian(gray, cv2.CV_64F).var()))
    return float(np.mean(values))


def process_size(width: int, height: int) -> tuple[int, int]:
    """The size PySceneDetect's SceneManager analyses by default (larger side to 256 px, never up), even."""
    factor = max(1.0, max(width, height) / PROCESS_SIDE)
    return max(2, 2 * round(width / factor / 2)), max(2, 2 * round(height / factor / 2))


def cuts_per_second(path: str | os.PathLike, threshold: float, min_scene_len: int = 3, info: dict | None = None) -> float:
    """Hard cuts per second of the clip: PySceneDetect's ContentDetector (mean HSV change between
    consecutive frames >= ``threshold``; at most one cut per ``min_scene_len`` frames) over every
    frame, downscaled as SceneManager does, divided by the duration.

    Why ContentDetector: a hard cut changes colour and brightness of the whole frame at once,
    while motion inside a shot changes only a small part, which is what its HSV difference
    separates; it is the detector the PySceneDetect authors recommend for fast cuts. ``info`` is
    avgen.data.probe.probe_av's dict (probed here when not given).
    """
    from scenedetect import ContentDetector, FrameTimecode

    if info is None:
        from avgen.data.probe import probe_av
        info = probe_av(path)
    fps = Fraction(info["fps"]).limit_denominator(1001) if info["fps"] > 0 else Fraction(25)
    frames = read_frames(path, size=process_size(info["width"], info["height"]))
    det = ContentDetector(threshold=float(threshold), min_scene_len=int(min_scene_len))
    cuts: set[int] = set()
    tc = None
    for i, frame in enumerate(frames):
        tc = FrameTimecode(i, fps=fps)
        cuts.update(c.frame_num for c in det.process_frame(tc, np.ascontiguousarray(frame[..., ::-1])))
    if tc is not None:
        cuts.update(c.frame_num for c in det.post_process(tc))
    n_cuts = sum(1 for c in cuts if 0 < c < len(frames))
    seconds = info.get("seconds") or len(frames) / float(fps)
    return n_cuts / max(float(seconds), 1.0 / float(fps))


# ----------------------------------------------------------------------------- audio

def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """The first audio stream decoded by ffmpeg to mono float32 at ``sample_rate`` (ffmpeg's
    resampler and default downmix); ValueError naming the file when there is none or it fails.

    Measure at the source's own rate (the probe's), so that no resampler touches the signal
    that SNR, silence and clipping are measured on; decoded values are not clipped to [-1, 1].
    """
    path = Path(path)
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-threads", "1", *input_args(path), "-map", "0:a:0",
           "-ac", "1", "-ar", str(int(sample_rate)), "-f", "f32le", "-"]
    res = run_tool(cmd, path, "audio decode", "decode")
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()[-300:]
        raise ValueError(f"{path}: audio decode failed ({err or 'ffmpeg exit ' + str(res.returncode)})")
    return np.frombuffer(res.stdout[: len(res.stdout) // 4 * 4], "<f4").astype(np.float32)


def _stft_power(x: np.ndarray, sr: int) -> np.ndarray:
    """|X|^2 (frames, bins) of Hann-windowed ~32 ms frames with 50 % overlap."""
    n_fft = 2 ** max(6, round(math.log2(0.032 * sr)))
    hop = n_fft // 2
    x = np.asarray(x, np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    spec = np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1)
    return spec.real ** 2 + spec.imag ** 2


def snr_db(x: np.ndarray, sr: int) -> float:
    """Reference-free SNR estimate (dB) by minimum statistics, clamped to SNR_RANGE.

    Why this estimator: a filter has no clean reference, so the noise must be estimated from the
    noisy signal itself. Sounds of interest (impacts, speech, gliding tones) come and go in each
    frequency bin, while background noise is there all the time; so the low end of a bin's power
    over time is noise (Martin 2001, "minimum statistics"). Per STFT bin the noise power is the
    10th percentile over time of |X|^2 divided by that percentile's bias for exponentially
    distributed power (a Gaussian noise bin: P10 = -ln(0.9) x mean = 0.1054 x mean); the SNR is
    10 log10((total - noise) / noise) with total the mean power over time summed over bins.
    A percentile rather than the minimum: the minimum of many exponential samples is ~0 and
    its bias depends on the clip's length. Limitation, inherent to any reference-free estimate:
    a sound that holds the same bin in more than ~90 % of frames (a steady hum or a constant
    sine) counts as noise. No signal at all gives the low clamp, no measurable noise the high one.
    """
    power = _stft_power(x, int(sr))
    total = float(power.mean(axis=0).sum())
    noise = float((np.percentile(power, SNR_PERCENTILE, axis=0) / SNR_BIAS).sum())
    lo, hi = SNR_RANGE
    if total <= 1e-20:
        return lo
    if noise <= total * 10 ** (-hi / 10):
        return hi
    signal = total - noise
    if signal <= noise * 10 ** (lo / 10):
        return lo
    return float(np.clip(10 * math.log10(signal / noise), lo, hi))


def silence_fraction(x: np.ndarray, sr: int, silence_db: float) -> float:
    """Fraction of consecutive 25 ms frames whose RMS is below ``silence_db`` dBFS (20 log10 of the
    RMS, full scale = 1.0); a clip shorter than one frame counts as one frame.

    Why: "silent" is about time, not energy; 25 ms is the usual analysis frame of audio
    front-ends (a syllable or an impact spans a few of them), short enough that a burst in
    otherwise silent audio does not hide the silence around it, long enough for a stable RMS.
    """
    x = np.asarray(x, np.float64)
    n = max(1, int(round(SILENCE_FRAME_S * sr)))
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    k = len(x) // n
    rms = np.sqrt(np.mean(x[: k * n].reshape(k, n) ** 2, axis=1))
    return float(np.mean(rms < 10 ** (float(silence_db) / 20)))


def clipping_fraction(x: np.ndarray, level: float = 0.999) -> float:
    """Fraction of samples with |x| >= ``level`` (full scale = 1.0); 0.0 for an empty signal.

    Why: a clipped recording piles samples up at full scale (flat tops); in unclipped audio
    samples within 0.1 % of full scale are rare. Decoded lossy audio rings around the flat tops
    (and may exceed 1.0), which still lands at or above the level, so counting |x| >= level
    rather than |x| == 1 works on decoded AAC/MP3 too.
    """
    x = np.asarray(x)
    return float(np.mean(np.abs(x) >= float(level))) if x.size else 0.0
