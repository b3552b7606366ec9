"""AV-Align: weight-free audio-video synchrony, after the metric of TempoTokens (Yariv et al., 2024,
"Diverse and Aligned Audio-to-Video Generation via Text-to-Video Model Adaptation", ``av_align.py``).

Sounds in the generated clips should start when something visibly happens (an impact, a hit), so
the metric compares two sets of event times:

* audio peaks: onsets of a spectral-flux onset strength, i.e. the positive part of the frame-to-frame
  increase of a log-magnitude STFT (dB, floored 80 dB below the clip's peak), averaged over frequency;
  peaks are picked as librosa's ``onset_detect`` does (the reference uses it): the envelope scaled to
  [0, 1] (by its range, but at least 1 dB: see ``pick_onsets``), a frame is an onset when it is the
  maximum within +-30 ms, exceeds the mean within +-100 ms by 0.07, and comes >= 30 ms after the
  previous onset. The reference uses a mel spectrogram; the
  plain STFT keeps this dependency-free and finds the same broadband onsets;
* video peaks: the mean Farneback optical-flow magnitude between consecutive frames (OpenCV, the
  reference's parameters, via ``genbuild.metrics.classical.flow``), entry ``i`` being the flow from
  frame ``i - 1`` to ``i`` at time ``i / fps`` (entry 0 repeats entry 1), and its strict local maxima
  above 0.1 px;

and scores their Intersection over Union: an audio peak is matched when a video peak lies strictly
within ``tolerance_frames / fps`` seconds (one frame in the reference), and
``IoU = matched / (|audio| + |video| - matched)``, one video peak matching at most one audio peak
(see ``peak_iou``). No event on either side gives 0.0 (the reference divides by zero), so silence
or a still video scores as unaligned, never NaN.
"""
from __future__ import annotations

import numpy as np

from genbuild.metrics.classical import flow

IMPLEMENTATION = ("AV-Align (TempoTokens): spectral-flux onsets of a log-magnitude STFT (librosa onset_detect peak rule) "
                  "vs strict local maxima > 0.1 px of mean Farneback flow magnitude, one-to-one IoU within +-tolerance frames")
HOP_S, WINDOW_S = 0.010, 0.032        # 10 ms hop; a short window keeps onsets within ~30 ms of the event
TOP_DB = 80.0
PRE_MAX_S, PRE_AVG_S, POST_AVG_S, WAIT_S, DELTA = 0.03, 0.10, 0.10, 0.03, 0.07   # librosa onset_detect defaults
FLOW_THRESHOLD = 0.1
MIN_RANGE_DB = 1.0


def _mono(audio) -> np.ndarray:
    a = np.asarray(audio, np.float64)
    return a.mean(axis=1) if a.ndim == 2 else a.reshape(-1)


def onset_strength(audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(envelope, times in s): mean over frequency of the positive dB increase between consecutive
    STFT frames. Frames are not centred; a frame's flux is dated at the end of its window, the moment
    the new sound has fully entered it, so that an impact's onset lands on the impact."""
    x = _mono(audio)
    hop, n_fft = max(1, round(sr * HOP_S)), max(16, int(2 ** np.ceil(np.log2(sr * WINDOW_S))))
    if len(x) < n_fft + hop:
        return np.zeros(0), np.zeros(0)
    n = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(n)[:, None]
    mag = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=1))
    db = 20.0 * np.log10(np.maximum(mag, 1e-10))
    db = np.maximum(db, db.max() - TOP_DB)
    env = np.maximum(0.0, np.diff(db, axis=0)).mean(axis=1)
    times = (np.arange(1, n) * hop + n_fft) / sr
    return env, times


def pick_onsets(env: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Onset times by librosa's peak rule (see the module docstring) on the envelope scaled to [0, 1].

    The scale is the envelope's range but at least ``MIN_RANGE_DB``: librosa's plain min-max scaling
    turns the 0.01 dB ripple of a steady tone or of dither into "onsets", while a sound event raises
    the spectrum by tens of dB."""
    if len(env) < 3:
        return np.zeros(0)
    e = (env - env.min()) / max(env.max() - env.min(), MIN_RANGE_DB)
    dt = times[1] - times[0]
    pre_max, pre_avg, post_avg, wait = (max(1, round(s / dt)) for s in (PRE_MAX_S, PRE_AVG_S, POST_AVG_S, WAIT_S))
    peaks, last = [], -np.inf
    for i in range(len(e)):
        lo, hi = max(0, i - pre_max), min(len(e), i + pre_max + 1)
        if e[i] < e[lo:hi].max() or e[i] < e[max(0, i - pre_avg):i + post_avg + 1].mean() + DELTA:
            continue
        if i - last > wait:
            peaks.append(times[i])
            last = i
    return np.asarray(peaks)


def audio_peaks(audio: np.ndarray, sr: int) -> np.ndarray:
    """Onset times (s) of the clip's audio."""
    return pick_onsets(*onset_strength(audio, sr))


def flow_magnitudes(frames: np.ndarray) -> np.ndarray:
    """(F,) mean Farneback flow magnitude; entry i is frame i-1 -> i, entry 0 repeats entry 1."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames (F, H, W, 3), got {f.dtype} {f.shape}")
    if len(f) < 2:
        return np.zeros(len(f))
    mags = [float(np.linalg.norm(flow(f[i - 1], f[i]), axis=-1).mean()) for i in range(1, len(f))]
    return np.asarray([mags[0]] + mags)


def video_peaks(frames: np.ndarray, fps: float, threshold: float = FLOW_THRESHOLD) -> np.ndarray:
    """Times (s) of strict local maxima of the flow magnitude above ``threshold`` pixels."""
    m = flow_magnitudes(frames)
    i = np.arange(1, len(m) - 1)
    keep = (m[i - 1] < m[i]) & (m[i] > m[i + 1]) & (m[i] > threshold)
    return i[keep] / float(fps)


def peak_iou(a_peaks: np.ndarray, v_peaks: np.ndarray, window_s: float) -> float:
    """IoU of two event sets: matches are audio peaks with a video peak strictly within ``window_s``,
    each video peak matching at most one audio peak (greedy in time order, which finds the most
    matches for points on a line). The reference counts every audio peak that has *a* video peak in
    its window, which exceeds 1 when two onsets share one video peak; one-to-one keeps IoU in [0, 1]
    and equals the reference whenever peaks are further apart than the window."""
    a, v = np.sort(np.asarray(a_peaks, np.float64)), np.sort(np.asarray(v_peaks, np.float64))
    if len(a) == 0 or len(v) == 0:
        return 0.0
    matched, j = 0, 0
    for t in a:
        while j < len(v) and v[j] <= t - window_s:   # too early for this and every later audio peak
            j += 1
        if j < len(v) and v[j] < t + window_s:
            matched, j = matched + 1, j + 1
    return matched / (len(a) + len(v) - matched)


def av_align(frames: np.ndarray, fps: float, audio: np.ndarray, sr: int, tolerance_frames: float = 1) -> float:
    """AV-Align of one clip: uint8 (F, H, W, 3) frames at ``fps``, float audio at ``sr`` -> IoU in [0, 1]."""
    if fps <= 0 or sr <= 0:
        raise ValueError(f"fps and sr must be positive, got {fps} and {sr}")
    return peak_iou(audio_peaks(audio, sr), video_peaks(frames, fps), tolerance_frames / float(fps))
