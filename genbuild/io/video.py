"""Video and image I/O through the ffmpeg/ffprobe binaries.

ffmpeg is the one decoder and encoder of the build so that every stage sees the same
frames. Encodes are reproducible: ``-fflags +bitexact``, no metadata, fixed x264 settings
(x264 is deterministic unless told ``--non-deterministic``), so a rerun gives identical
bytes and DVC's cache hits.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from genbuild.io.atomic import atomic_path


class MediaError(RuntimeError):
    """A video or image that cannot be read; the message names the file."""


class NoFramesError(MediaError):
    """A video stream that holds no (decodable) frame at all."""


class TruncatedError(MediaError):
    """A video whose container lists more frames than decode (a cut-off upload or corrupt data)."""


class MediaTimeout(MediaError):
    """An ffmpeg/ffprobe process that ran past its limit (params ``video.timeouts``) and was killed."""


class FormatError(MediaError):
    """A file whose container format is not on ALLOWED_FORMATS (a playlist, a concat list, ...)."""


# Input hardening. ffmpeg reads ``name:rest`` as a URL with protocol ``name`` (a relative path
# ``file:/elsewhere/x.mkv`` opens /elsewhere/x.mkv) and some demuxers open further files
# (an HLS playlist, a concat list), so every input is given as ``file:`` + its absolute path,
# only the file protocol is allowed, and only these demuxers (ffmpeg's names; a demuxer named
# "mov,mp4,m4a,3gp,3g2,mj2" matches when one of its names is listed).
ALLOWED_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "flv",
                   "asf", "mpeg", "ogg")
# Wall-clock limits (seconds) of every ffmpeg/ffprobe process of the build; expiry raises MediaError
# (a reject of the item in the stages). Params ``video.timeouts`` override them (configure_timeouts).
DEFAULT_TIMEOUTS = {
    "probe": 60.0,       # ffprobe reading headers only
    "count": 1800.0,     # ffprobe -count_frames: decodes every frame of a (long) source
    "decode": 600.0,     # read_frames (short clips)
    "encode": 600.0,     # write_video
    "stream": 3600.0,    # a stage's own ffmpeg over a whole source (shots' decode, clips' cuts, ingest's remux)
}
LIMITS = dict(DEFAULT_TIMEOUTS)


def configure_timeouts(timeouts: dict | None) -> None:
    """Apply params ``video.timeouts`` (seconds per process kind) to this process."""
    for kind, seconds in (timeouts or {}).items():
        if kind not in DEFAULT_TIMEOUTS:
            raise ValueError(f"params key 'video.timeouts.{kind}' is unknown (known: {', '.join(DEFAULT_TIMEOUTS)})")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
            raise ValueError(f"params key 'video.timeouts.{kind}' must be a number of seconds > 0, got {seconds!r}")
        LIMITS[kind] = float(seconds)


def run_tool(cmd: list[str], path, what: str, kind: str = "stream", **kw) -> subprocess.CompletedProcess:
    """subprocess.run of an ffmpeg/ffprobe command under the ``kind`` time limit (output captured);
    expiry kills it and raises MediaError naming ``path`` and the params key."""
    timeout = LIMITS[kind]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise MediaTimeout(f"{path}: {what} timed out after {timeout:g} s (params video.timeouts.{kind})") from None
    res.stderr = _scrubbed(res.stderr, path)
    return res


def _scrubbed(stderr: str | bytes, path) -> str | bytes:
    """ffmpeg's messages name the ``file:`` URLs it was given; put back the path as the caller gave it
    and make paths under the working directory relative, so that reject reasons (which land in
    artifacts) do not depend on where the checkout is."""
    pairs = [(ffmpeg_url(path), str(path)), ("file:" + os.getcwd() + os.sep, "")]
    if isinstance(stderr, bytes):
        for old, new in pairs:
            stderr = stderr.replace(old.encode(), new.encode())
        return stderr
    for old, new in pairs:
        stderr = stderr.replace(old, new)
    return stderr


INPUT_GUARD = ["-protocol_whitelist", "file", "-format_whitelist", ",".join(ALLOWED_FORMATS)]


def ffmpeg_url(path: str | os.PathLike) -> str:
    """``file:`` + the absolute path: ffmpeg opens exactly this file, whatever its name looks like."""
    return "file:" + os.path.abspath(os.fspath(path))


def input_args(path: str | os.PathLike) -> list[str]:
    """``-i`` and the options before it that open ``path`` as a local file of an allowed format only."""
    return [*INPUT_GUARD, "-i", ffmpeg_url(path)]


def _refused_format(path, stderr: str) -> FormatError | None:
    """FormatError naming the detected container when ffmpeg refused ``path`` for the format whitelist."""
    if "not on whitelist" not in stderr:
        return None
    fmt = "unknown"
    try:  # probe again at debug level: ffmpeg names the detected demuxer before refusing it
        res = subprocess.run([ffprobe_bin(), "-v", "debug", *INPUT_GUARD, ffmpeg_url(path)], capture_output=True,
                             text=True, errors="replace", timeout=LIMITS["probe"])
        m = re.search(r"Format (\S+) probed with size", res.stderr)
        fmt = m.group(1) if m else fmt
    except (OSError, subprocess.TimeoutExpired):
        pass
    return FormatError(f"{path}: container format {fmt!r} is not allowed (playlists and concat lists are refused; "
                       f"allowed: {', '.join(ALLOWED_FORMATS)})")


def ffmpeg_bin() -> str:
    exe = os.environ.get("PVTT_FFMPEG") or shutil.which("ffmpeg")
    if not exe:
        raise MediaError("ffmpeg not found on PATH (install it: apt-get install ffmpeg, or set PVTT_FFMPEG)")
    return exe


def ffprobe_bin() -> str:
    exe = os.environ.get("PVTT_FFPROBE") or shutil.which("ffprobe")
    if not exe:
        raise MediaError("ffprobe not found on PATH (install it: apt-get install ffmpeg, or set PVTT_FFPROBE)")
    return exe


@dataclass(frozen=True)
class VideoInfo:
    """Facts of the first video stream.

    ``width``/``height`` are the DISPLAY size: a stream with a 90/270 degree rotation flag
    (display matrix) reports its coded size swapped, because every decode of the build
    (read_frames, the shots and clips stages) lets ffmpeg auto-rotate frames upright.
    ``rotation`` is the display-matrix rotation as ffprobe reports it, normalized to
    [0, 360) (0 when none). ``fps`` is the average frame rate (frames / duration) and the
    build treats frame ``i`` as shown at ``i / fps``: a variable-frame-rate source is
    handled by frame index, see pvtt/data/clips.py.
    """

    width: int
    height: int
    fps: float
    n_frames: int
    duration: float
    codec: str
    rotation: int = 0

    def as_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": round(self.fps, 6),
                "n_frames": self.n_frames, "duration": round(self.duration, 6), "codec": self.codec,
                "rotation": self.rotation}


def _rotation(stream: dict) -> int:
    """Display rotation in degrees (ffprobe's sign), normalized to [0, 360); 0 when unflagged."""
    for sd in stream.get("side_data_list") or []:
        if "rotation" in sd:
            try:
                return round(float(sd["rotation"])) % 360
            except (TypeError, ValueError):
                return 0
    tag = (stream.get("tags") or {}).get("rotate")      # ffmpeg < 5: clockwise degrees as a tag
    try:
        return round(-float(tag)) % 360 if tag is not None else 0
    except ValueError:
        return 0


_CTX_RE = re.compile(r"\[[^\]]* @ 0x[0-9a-fA-F]+\] ")


def _last_line(stderr: str, default: str) -> str:
    """The last line of ffmpeg's stderr without ``[demuxer @ 0x...]`` prefixes (addresses vary per run)."""
    lines = stderr.strip().splitlines()
    return _CTX_RE.sub("", lines[-1]).strip()[-300:] if lines else default


def _int(v) -> int | None:
    return int(v) if str(v).isdigit() else None


def probe(path: str | os.PathLike, count_frames: bool = True) -> VideoInfo:
    """Read stream facts with ffprobe; raise MediaError naming the file if it is not a video.

    With ``count_frames`` every frame is decoded: a stream without a frame raises
    NoFramesError, one whose container lists more frames than decode (with decoder errors:
    a truncated or corrupt file) raises TruncatedError. A container not on ALLOWED_FORMATS
    (an HLS playlist, a concat list) raises FormatError; see input_args.
    """
    path = Path(path)
    data, s, err = _ffprobe(path, count_frames)
    rate = s.get("avg_frame_rate") or s.get("r_frame_rate") or "0/1"
    if rate in ("0/0", "0/1"):
        rate = s.get("r_frame_rate") or "0/1"
    try:
        fps = float(Fraction(rate))
    except (ValueError, ZeroDivisionError):
        fps = 0.0
    listed, read = _int(s.get("nb_frames")), _int(s.get("nb_read_frames"))
    n_frames = read if (count_frames and read is not None) else (listed or 0)
    if n_frames == 0:
        raise NoFramesError(f"{path}: video stream has no decodable frames")
    if count_frames and listed and read is not None and read < listed and err:
        raise TruncatedError(f"{path}: the container lists {listed} frames but only {read} decode "
                             f"({_last_line(err, '')})")
    if fps <= 0:
        raise MediaError(f"{path}: unknown frame rate")
    w, h = _frame_size(path, s)
    return VideoInfo(w, h, fps, n_frames, _duration(data, s), s.get("codec_name", "?"), _rotation(s))


def probe_extent(path: str | os.PathLike) -> tuple[int, int, float]:
    """(display width, display height, duration in seconds; 0.0 when the container does not say)
    from the headers alone: cheap bounds checks before a full probe decodes every frame."""
    path = Path(path)
    data, s, _ = _ffprobe(path, count_frames=False)
    w, h = _frame_size(path, s)
    return w, h, _duration(data, s)


def _ffprobe(path: Path, count_frames: bool) -> tuple[dict, dict, str]:
    """ffprobe's JSON, its first video stream and its stderr; MediaError (FormatError) when refused."""
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    cmd = [ffprobe_bin(), "-v", "error", "-select_streams", "v:0"]
    if count_frames:
        cmd += ["-count_frames"]
    cmd += ["-show_entries", "stream=width,height,avg_frame_rate,r_frame_rate,nb_frames,nb_read_frames,codec_name,"
            "duration:stream_side_data=rotation:stream_tags=rotate:format=duration,format_name", "-of", "json",
            *INPUT_GUARD, ffmpeg_url(path)]
    res = run_tool(cmd, path, "ffprobe", "count" if count_frames else "probe", text=True)
    err = res.stderr.strip()
    if res.returncode != 0:
        refused = _refused_format(path, err)
        if refused is not None:
            raise refused
        raise MediaError(f"{path}: not a readable video ({_last_line(err, 'ffprobe failed')})")
    try:
        data = json.loads(res.stdout or "{}")
    except json.JSONDecodeError as e:
        raise MediaError(f"{path}: not a readable video (ffprobe output: {e})") from e
    fmt = str((data.get("format") or {}).get("format_name") or "")
    if fmt and not set(fmt.split(",")) & set(ALLOWED_FORMATS):
        raise FormatError(f"{path}: container format {fmt!r} is not allowed (allowed: {', '.join(ALLOWED_FORMATS)})")
    streams = data.get("streams") or []
    if not streams:
        raise MediaError(f"{path}: no video stream")
    return data, streams[0], err


def _frame_size(path: Path, s: dict) -> tuple[int, int]:
    """The stream's display size (a 90/270 degree rotation swaps the coded size)."""
    try:
        w, h = int(s["width"]), int(s["height"])
    except (KeyError, TypeError, ValueError):
        raise MediaError(f"{path}: video stream has no frame size") from None
    if w <= 0 or h <= 0:
        raise MediaError(f"{path}: video stream has no frame size ({w}x{h})")
    return (h, w) if _rotation(s) in (90, 270) else (w, h)


def _duration(data: dict, s: dict) -> float:
    try:
        return float(s.get("duration") or data.get("format", {}).get("duration") or 0.0)
    except ValueError:
        return 0.0


def read_frames(path: str | os.PathLike, size: tuple[int, int] | None = None, fps: float | None = None,
                start: float | None = None, duration: float | None = None, threads: int = 1) -> np.ndarray:
    """Decode the first video stream to an (N, H, W, 3) uint8 RGB array; ``size`` is (width, height).

    Frames come out upright (ffmpeg auto-rotates a rotation-flagged stream; without ``size``
    they have probe()'s display size). Everything is held in memory: for short clips only;
    long sources are streamed (pvtt/data/shots.py ``iter_frames_bgr``, pvtt/data/clips.py ``cut_clips``).
    """
    path = Path(path)
    info = probe(path, count_frames=False) if size is None else None
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-threads", str(threads)]
    if start is not None:
        cmd += ["-ss", f"{start:.6f}"]
    cmd += [*input_args(path), "-map", "0:v:0"]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    filters = []
    if fps is not None:
        filters.append(f"fps={fps}")
    if size is not None:
        filters.append(f"scale={size[0]}:{size[1]}:flags=area")
    if filters:
        cmd += ["-vf", ",".join(filters)]
    # passthrough: every decoded (or fps-filtered) frame once; the rawvideo muxer would otherwise
    # make the output constant-rate, duplicating frames across the gaps of a variable-rate source.
    cmd += ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    res = run_tool(cmd, path, "decode", "decode")
    if res.returncode != 0:
        refused = _refused_format(path, res.stderr.decode(errors="replace"))
        if refused is not None:
            raise refused
        raise MediaError(f"{path}: decode failed ({res.stderr.decode(errors='replace').strip()[-300:]})")
    w, h = size if size is not None else (info.width, info.height)
    frame_bytes = w * h * 3
    n = len(res.stdout) // frame_bytes
    if n == 0:
        raise MediaError(f"{path}: decoded no frames")
    return np.frombuffer(res.stdout[: n * frame_bytes], dtype=np.uint8).reshape(n, h, w, 3).copy()


def read_frames_bytes(data: bytes, **kw) -> np.ndarray:
    """``read_frames`` of an mp4 held in memory (a shard member): through a temporary file, which ffmpeg
    can seek in (an mp4's index may sit at its end, so a pipe will not do)."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        return read_frames(f.name, **kw)


def x264_args(crf: int, preset: str, threads: int) -> list[str]:
    """The H.264 output settings of every video this build writes (yuv420p, bit-exact); the
    bytes depend on all three values, the thread count included."""
    return ["-c:v", "libx264", "-preset", str(preset), "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-threads", str(threads), *BITEXACT]


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 17,
                preset: str = "medium", threads: int = 1) -> None:
    """Encode (N, H, W, 3) uint8 RGB frames as H.264 yuv420p mp4, byte-reproducibly and atomically."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"{path}: expected (N, H, W, 3) frames, got {frames.shape}")
    n, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"{path}: yuv420p needs even sizes, got {w}x{h}")
    path = Path(path)
    with atomic_path(path) as tmp:
        cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", f"{Fraction(fps).limit_denominator(1001)}", "-protocol_whitelist", "pipe",
               "-i", "pipe:0", *x264_args(crf, preset, threads), "-f", "mp4", ffmpeg_url(tmp)]
        res = run_tool(cmd, path, "encode", "encode", input=frames.tobytes())
        if res.returncode != 0:
            raise MediaError(f"{path}: encode failed ({res.stderr.decode(errors='replace').strip()[-300:]})")


# Flags that keep encoder output free of timestamps, tool versions and source metadata.
BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-map_chapters", "-1"]


def _boxes(buf: bytes, start: int, end: int):
    """(type, payload start, payload end) of the ISO-BMFF boxes in buf[start:end]."""
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", buf[i:i + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", buf[i + 8:i + 16])[0], 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            raise MediaError("corrupt mp4 box")
        yield kind.decode("latin-1"), i + head, i + size
        i += size


def mp4_video_facts(path: str | os.PathLike) -> tuple[int, int, int]:
    """(frames, width, height) of the first video track of an mp4, from its index alone.

    For files this build just wrote (clips): ~100x cheaper than an ffprobe process, which
    matters when a stage checks every clip it cut. Raises MediaError when there is no index.
    """
    path = Path(path)
    buf = path.read_bytes()
    try:
        moov = next((a, b) for k, a, b in _boxes(buf, 0, len(buf)) if k == "moov")
        for k, a, b in _boxes(buf, *moov):
            if k != "trak":
                continue
            sub = {k2: (a2, b2) for k2, a2, b2 in _boxes(buf, a, b)}
            mdia = {k2: (a2, b2) for k2, a2, b2 in _boxes(buf, *sub["mdia"])}
            if buf[mdia["hdlr"][0] + 8:mdia["hdlr"][0] + 12] != b"vide":
                continue
            tkhd_end = sub["tkhd"][1]
            w, h = (v >> 16 for v in struct.unpack(">II", buf[tkhd_end - 8:tkhd_end]))
            minf = {k2: (a2, b2) for k2, a2, b2 in _boxes(buf, *mdia["minf"])}
            stbl = {k2: (a2, b2) for k2, a2, b2 in _boxes(buf, *minf["stbl"])}
            n = struct.unpack(">I", buf[stbl["stsz"][0] + 8:stbl["stsz"][0] + 12])[0]
            return int(n), int(w), int(h)
    except (StopIteration, KeyError, struct.error, MediaError):
        pass
    raise MediaError(f"{path}: no readable mp4 video index")


class ImageTooLargeError(MediaError):
    """An image whose header claims more pixels than the caller's limit (or PIL's bomb limit)."""


def read_image(path: str | os.PathLike, mode: str = "RGB", max_pixels: int | None = None) -> np.ndarray:
    """Load an image as uint8 array; a missing, empty or undecodable file raises MediaError naming it.

    ``max_pixels``: refuse (ImageTooLargeError) an image whose header claims more pixels,
    before anything is decoded; PIL's own decompression-bomb limit raises the same error.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    limit = f"the limit of {max_pixels} pixels" if max_pixels is not None else "PIL's decompression-bomb limit"
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:      # the caller's cap decides, not PIL's warning threshold
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageTooLargeError(f"{path}: image is {w}x{h} = {w * h} pixels, over {limit}")
                im.load()
                return np.asarray(im.convert(mode)).copy()
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{path}: image over {limit} ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"{path}: cannot decode image ({e.__class__.__name__}: {e})") from e


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a PNG with no ancillary chunks (no timestamps), atomically."""
    arr = np.asarray(array, dtype=np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG", optimize=False)
