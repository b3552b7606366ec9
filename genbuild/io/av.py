"""Video with sound: frames + a waveform -> one playable mp4 (H.264 + AAC), reproducibly.

The video is encoded by ``genbuild.io.video.write_video`` (the build's one H.264 setting), the
audio is written as PCM16 WAV, and ffmpeg muxes them with the video stream copied and the audio
encoded to AAC (ffmpeg's native encoder, bit-exact flags): the same inputs give the same bytes.
"""
from __future__ import annotations

import io
import os
import tempfile
import wave
from pathlib import Path

import numpy as np

from genbuild.io.atomic import atomic_path
from genbuild.io.video import BITEXACT, MediaError, ffmpeg_bin, ffmpeg_url, run_tool, write_video

AAC_BITRATE = "128k"


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio in [-1, 1] -> a PCM16 WAV file's bytes (no timestamps: reproducible)."""
    pcm = (np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A PCM16 WAV file's bytes -> (float32 samples in [-1, 1], sample rate)."""
    with wave.open(io.BytesIO(data), "rb") as w:
        sr, n = w.getframerate(), w.getnframes()
        pcm = np.frombuffer(w.readframes(n), dtype="<i2")
    return pcm.astype(np.float32) / 32767.0, sr


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    Path(path).write_bytes(wav_bytes(audio, sample_rate))


def write_av(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int,
             crf: int = 17, preset: str = "medium", threads: int = 1) -> None:
    """(N, H, W, 3) uint8 frames at ``fps`` and mono float audio at ``sample_rate`` -> H.264 + AAC mp4."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="genbuild_av_") as td:
        video, wav = Path(td) / "video.mp4", Path(td) / "audio.wav"
        write_video(video, frames, fps, crf=crf, preset=preset, threads=threads)
        write_wav(wav, audio, sample_rate)
        with atomic_path(path) as tmp:
            cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-y", "-i", ffmpeg_url(video), "-i", ffmpeg_url(wav),
                   "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", AAC_BITRATE,
                   "-ar", str(int(sample_rate)), "-ac", "1", "-flags:a", "+bitexact", *BITEXACT, "-f", "mp4",
                   ffmpeg_url(tmp)]
            res = run_tool(cmd, path, "mux", "encode")
            if res.returncode != 0:
                raise MediaError(f"{path}: muxing audio failed ({res.stderr.decode(errors='replace').strip()[-300:]})")
