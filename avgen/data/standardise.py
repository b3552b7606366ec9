"""The format stage's conversion of one kept clip to the model's fixed shapes.

Video: ffmpeg's fps filter to ``fps`` (frame ``i`` is the source picture shown at ``i / fps``),
scaled so the shorter side is ``size`` (area resampling), centre-cropped to ``size`` x ``size``,
exactly ``round(seconds * fps)`` frames (a short clip repeats its last frame). Audio: ffmpeg
decode, downmix to mono and resample to ``sample_rate``, exactly ``round(seconds * sample_rate)``
samples (a short clip is zero-padded). Mel: avgen.data.mel.log_mel of that audio, so the mel
frames line up with the samples the audio decoder will be trained to produce.

Fixed lengths (pad, never stretch): the model batches clips without masks, and repeating the
last picture / padding silence keeps the timing of the events that are there.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from avgen.data.mel import log_mel
from avgen.data.probe import probe_av
from genbuild.io.video import ffmpeg_bin, input_args, run_tool

DEFAULT_FORMAT = {"size": 64, "fps": 8, "sample_rate": 16000, "seconds": 2.0,
                  "mel": {"n_mels": 80, "n_fft": 1024, "hop": 256, "fmin": 80.0, "fmax": 7600.0}}


def validate_format_params(fmt: dict | None) -> dict:
    """``fmt`` with defaults; a bad value raises ValueError naming ``format.<key>``."""
    f = {**DEFAULT_FORMAT, **(fmt or {})}
    checks = {"size": (int, 2), "fps": ((int, float), 1e-3), "sample_rate": (int, 1000), "seconds": ((int, float), 1e-3)}
    for key, (types, lo) in checks.items():
        v = f[key]
        if isinstance(v, bool) or not isinstance(v, types) or not lo <= v < float("inf"):
            raise ValueError(f"params key 'format.{key}' must be a number >= {lo}, got {v!r}")
    if f["size"] % 2:
        raise ValueError(f"params key 'format.size' must be even, got {f['size']!r}")
    if not isinstance(f["mel"], dict):
        raise ValueError(f"params key 'format.mel' must be a mapping, got {f['mel']!r}")
    return f


def _ffmpeg(cmd: list[str], path: Path, what: str) -> bytes:
    res = run_tool(cmd, path, what, "decode")
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()[-300:]
        raise ValueError(f"{path}: {what} failed ({err or 'ffmpeg exit ' + str(res.returncode)})")
    return res.stdout


def standard_video(path: str | os.PathLike, size: int, fps: float, seconds: float) -> np.ndarray:
    """(round(seconds * fps), size, size, 3) uint8 RGB: fps filter, shorter side to ``size``, centre crop.

    ``round=up``: output frame i is the source picture shown at i / fps, in step with the sound
    (the fps filter's default rounds to the nearest source frame, which for 24 -> 8 fps takes the
    picture of i / fps + 1/24 s: the video would lead its audio by 42 ms)."""
    path = Path(path)
    n = int(round(seconds * fps))
    vf = (f"fps={fps}:round=up,scale={size}:{size}:force_original_aspect_ratio=increase:flags=area,"
          f"crop={size}:{size}:(in_w-{size})/2:(in_h-{size})/2,setsar=1")
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-threads", "1", *input_args(path), "-map", "0:v:0", "-vf", vf,
           "-frames:v", str(n), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    buf = _ffmpeg(cmd, path, "video decode")
    frame_bytes = size * size * 3
    got = len(buf) // frame_bytes
    if got == 0:
        raise ValueError(f"{path}: decoded no video frames")
    frames = np.frombuffer(buf[: got * frame_bytes], np.uint8).reshape(got, size, size, 3)
    if got < n:
        frames = np.concatenate([frames, np.repeat(frames[-1:], n - got, axis=0)])
    return frames[:n].copy()


def standard_audio(path: str | os.PathLike, sample_rate: int, seconds: float) -> np.ndarray:
    """(round(seconds * sample_rate),) float32 mono at ``sample_rate`` (zero-padded when short)."""
    path = Path(path)
    n = int(round(seconds * sample_rate))
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-threads", "1", *input_args(path), "-map", "0:a:0",
           "-ac", "1", "-ar", str(int(sample_rate)), "-t", f"{seconds:.6f}", "-f", "f32le", "-"]
    buf = _ffmpeg(cmd, path, "audio decode")
    x = np.frombuffer(buf[: len(buf) // 4 * 4], "<f4")[:n]
    return np.pad(x, (0, n - len(x))).astype(np.float32)


def standardise(path: str | os.PathLike, fmt: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames uint8 (F, size, size, 3), audio float32 (N,), log-mel float32 (n_mels, 1 + N // hop)).

    ``fmt`` is params ``format``: ``{"size": 64, "fps": 8, "sample_rate": 16000, "seconds": 2.0,
    "mel": {"n_mels": 80, "n_fft": 1024, "hop": 256, "fmin": 80.0, "fmax": 7600.0}}`` with
    F = round(seconds * fps), N = round(seconds * sample_rate). A file without video or audio
    raises ValueError naming it (the filter has already rejected those).
    """
    f = validate_format_params(fmt)
    info = probe_av(path)
    if not info["has_audio"]:
        raise ValueError(f"{path}: no audio stream")
    frames = standard_video(path, int(f["size"]), float(f["fps"]), float(f["seconds"]))
    audio = standard_audio(path, int(f["sample_rate"]), float(f["seconds"]))
    return frames, audio, log_mel(audio, f["mel"], int(f["sample_rate"]))
