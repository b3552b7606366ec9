"""One ffprobe call: the facts of a clip's first video stream and first audio stream.

The filter stage needs size, frame rate and duration of the picture and whether there is sound
(and at what rate) before it measures anything; one process with ``-show_streams`` for all
streams gives both at once (the kit's ``genbuild.io.video.probe`` looks at the video stream only).
Inputs are opened with the kit's hardening (``file:`` URL, allowed container formats only).
"""
from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

from genbuild.io.video import INPUT_GUARD, ffmpeg_url, ffprobe_bin, run_tool

ENTRIES = ("stream=index,codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,sample_rate,channels,"
           "duration:stream_side_data=rotation:stream_tags=rotate:format=duration,format_name")


def _rate(s: dict) -> float:
    for key in ("avg_frame_rate", "r_frame_rate"):
        try:
            fps = float(Fraction(str(s.get(key) or "0/1")))
        except (ValueError, ZeroDivisionError):
            fps = 0.0
        if fps > 0:
            return fps
    return 0.0


def _rotated(s: dict) -> bool:
    """Whether a 90/270 degree display rotation swaps the coded size (ffmpeg decodes upright)."""
    rot = None
    for sd in s.get("side_data_list") or []:
        if "rotation" in sd:
            rot = sd["rotation"]
    rot = rot if rot is not None else (s.get("tags") or {}).get("rotate")
    try:
        return round(float(rot or 0)) % 180 == 90
    except (TypeError, ValueError):
        return False


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _ffprobe_json(path: Path) -> dict:
    """ffprobe's JSON for ``path``; ValueError naming the file when it cannot be read."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    cmd = [ffprobe_bin(), "-v", "error", "-show_entries", ENTRIES, "-of", "json", *INPUT_GUARD, ffmpeg_url(path)]
    res = run_tool(cmd, path, "ffprobe", "probe", text=True, errors="replace")
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["ffprobe failed"])[-1][-300:]
        raise ValueError(f"{path}: not a readable video ({last})")
    try:
        return json.loads(res.stdout or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a readable video (ffprobe output: {e})") from None


def probe_av(path: str | os.PathLike) -> dict:
    """``{width, height, fps, seconds, has_audio, sample_rate, channels, video_codec, audio_codec}``.

    ``width``/``height`` are the display size (a 90/270 degree rotation flag swaps them, as every
    decode of the build auto-rotates); ``fps`` is the average frame rate; ``seconds`` the video
    stream's duration, else the container's. A clip without an audio stream has
    ``has_audio=False`` and ``sample_rate = channels = 0``. A missing, empty or unreadable file,
    or one without a video stream, raises ValueError naming it (a probe that runs past params
    ``video.timeouts.probe`` raises genbuild's MediaTimeout).
    """
    path = Path(path)
    data = _ffprobe_json(path)
    streams = data.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise ValueError(f"{path}: no video stream")
    w, h = int(video.get("width") or 0), int(video.get("height") or 0)
    if w <= 0 or h <= 0:
        raise ValueError(f"{path}: video stream has no frame size")
    if _rotated(video):
        w, h = h, w
    seconds = _float(video.get("duration")) or _float((data.get("format") or {}).get("duration"))
    return {
        "width": w, "height": h, "fps": round(_rate(video), 6), "seconds": round(seconds, 6),
        "has_audio": audio is not None,
        "sample_rate": int(_float(audio.get("sample_rate"))) if audio else 0,
        "channels": int(audio.get("channels") or 0) if audio else 0,
        "video_codec": str(video.get("codec_name") or "?"),
        "audio_codec": str(audio.get("codec_name") or "?") if audio else None,
    }
