"""Shots stage: hard-cut detection on one ingested video (``raw/<id>/`` -> ``shots/<id>/``).

Frames are decoded by ffmpeg (the build's one decoder, so frame ``i`` here is frame ``i``
for the clips stage's ``trim=start_frame``), streamed one at a time (any length, constant
memory), upright (rotation flags applied), and fed, in order, to a PySceneDetect detector
(``SceneDetector.process_frame`` / ``post_process``), downscaled the way PySceneDetect's
SceneManager does by default (larger side to 256 px).

Detectors are a small registry (``shots.detector``): ``content`` (ContentDetector: HSV
frame difference against ``shots.threshold``) and ``adaptive`` (AdaptiveDetector: the
difference relative to its neighbours, ``shots.adaptive_threshold``). Both honour
``shots.min_scene_len`` (frames).

The rule runs it once per batch of videos (``--videos``, :mod:`pvtt.data.vbatch`): ``work/shots/<batch>/``
holds one such directory per video; a video whose build raises is that video's reject.

Output directory ``shots/<batch>/<id>/``::

    shots.json     {"video", "status": "ok"|"rejected"|"skipped", "reason", "detector",
                    "fps", "n_frames", "cuts": [first frame of each new shot],
                    "shots": [{"index", "start_frame", "end_frame" (exclusive),
                               "start_time", "end_time"}]}
    rejects.jsonl  0 or 1 row (stage "shots"); none when the video was rejected upstream
"""
from __future__ import annotations

import abc
import logging
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.io.rejects import Rejects
from genbuild.io.video import LIMITS, MediaError, MediaTimeout, ffmpeg_bin, input_args, probe
from genbuild.registry import Registry
from pvtt.data import vbatch

log = logging.getLogger("pvtt.data.shots")

STAGE = "shots"
DEFAULTS = {"detector": "content", "threshold": 27.0, "min_scene_len": 12,
            "adaptive_threshold": 3.0, "min_content_val": 15.0, "window_width": 2}
PROCESS_WIDTH = 256   # scenedetect.scene_manager.DEFAULT_MIN_WIDTH (auto-downscale target)


# ----------------------------------------------------------------------------- detectors

class ShotDetector(abc.ABC):
    """Finds hard cuts in a stream of BGR frames; ``cuts`` are first frames of new shots."""

    name: str = ""

    def __init__(self, cfg: dict):
        self.cfg = cfg

    @abc.abstractmethod
    def detect(self, frames: Iterator[np.ndarray], fps: Fraction) -> tuple[list[int], int]:
        """Consume ``frames`` (BGR uint8, in order); return (sorted cut frame indices, frames read)."""


class _PySceneDetect(ShotDetector):
    """Runs one ``scenedetect`` SceneDetector frame by frame, as SceneManager does."""

    def make(self):  # pragma: no cover - abstract in practice
        raise NotImplementedError

    def detect(self, frames, fps):
        from scenedetect import FrameTimecode

        det = self.make()
        cuts: list[int] = []
        n = 0
        last = None
        for frame in frames:
            last = FrameTimecode(n, fps=fps)
            cuts += [tc.frame_num for tc in det.process_frame(last, frame)]
            n += 1
        if last is not None:
            cuts += [tc.frame_num for tc in det.post_process(last)]
        return sorted({c for c in cuts if 0 < c < n}), n


class ContentShotDetector(_PySceneDetect):
    """PySceneDetect ContentDetector (threshold on the mean HSV change between frames)."""

    name = "content"

    def make(self):
        from scenedetect import ContentDetector
        return ContentDetector(threshold=self.cfg["threshold"], min_scene_len=self.cfg["min_scene_len"])


class AdaptiveShotDetector(_PySceneDetect):
    """PySceneDetect AdaptiveDetector (the change relative to a rolling average of neighbours)."""

    name = "adaptive"

    def make(self):
        from scenedetect import AdaptiveDetector
        return AdaptiveDetector(adaptive_threshold=self.cfg["adaptive_threshold"],
                                min_scene_len=self.cfg["min_scene_len"],
                                window_width=self.cfg["window_width"],
                                min_content_val=self.cfg["min_content_val"])


DETECTORS = Registry("shots.detector", "detector")
DETECTORS.register(ContentShotDetector.name)(ContentShotDetector)
DETECTORS.register(AdaptiveShotDetector.name)(AdaptiveShotDetector)


def get_detector(cfg: dict) -> ShotDetector:
    return DETECTORS.create(cfg["detector"], cfg)


# ----------------------------------------------------------------------------- params

def _num(cfg: dict, key: str, lo: float, integer: bool = False, hi: float | None = None) -> None:
    v = cfg[key]
    ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float)) and v >= lo
    ok = ok and (isinstance(v, int) or math.isfinite(v))      # inf/NaN: no threshold (an int: no overflow)
    if ok and hi is not None:
        ok = v <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        rng = f">= {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ValueError(f"params key 'shots.{key}' must be {kind} {rng}, got {v!r}")


def validate_params(params: dict) -> dict:
    """Return the ``shots`` settings with defaults; a bad value raises ValueError naming the key."""
    sub = cli.get(params, "shots", {}) or {}
    if not isinstance(sub, dict):
        raise ValueError(f"params key 'shots' must be a mapping, got {sub!r}")
    cfg = {**DEFAULTS, **sub}
    DETECTORS.check(cfg["detector"])
    _num(cfg, "threshold", 0.0, hi=255.0)
    _num(cfg, "min_scene_len", 1, integer=True)
    _num(cfg, "adaptive_threshold", 0.0)
    _num(cfg, "min_content_val", 0.0, hi=255.0)
    _num(cfg, "window_width", 1, integer=True)
    return cfg


# ----------------------------------------------------------------------------- decoding

def process_size(width: int, height: int) -> tuple[int, int]:
    """Frame size the detector sees: SceneManager's auto-downscale (larger side to 256 px, never up)."""
    factor = max(1.0, max(width, height) / PROCESS_WIDTH)
    return max(1, round(width / factor)), max(1, round(height / factor))


def iter_frames_bgr(path: Path, size: tuple[int, int], threads: int = 1) -> Iterator[np.ndarray]:
    """Stream every decoded frame of ``path`` as BGR uint8 (H, W, 3), in decode (presentation) order.

    One frame at a time through a pipe (memory does not grow with the video's length); every
    frame is kept (``-fps_mode passthrough``: a variable-frame-rate source is neither padded
    nor thinned, frame ``i`` is the ``i``-th decoded frame as in the clips stage's trim), and
    frames come out upright (ffmpeg auto-rotates a rotation-flagged stream; ``size`` is the
    display size that probe() reports).
    """
    w, h = size
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-threads", str(max(1, threads)), *input_args(path),
           "-map", "0:v:0", "-vf", f"scale={w}:{h}:flags=bilinear", "-fps_mode", "passthrough",
           "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    limit = LIMITS["stream"]
    expired = threading.Event()

    def expire() -> None:                              # a hung decoder cannot hold the job forever
        expired.set()
        proc.kill()
    watchdog = threading.Timer(limit, expire)
    watchdog.start()
    nbytes = w * h * 3
    try:
        while True:
            buf = proc.stdout.read(nbytes)
            if len(buf) < nbytes:
                break
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        rc = proc.wait()
        watchdog.cancel()
    if expired.is_set():
        raise MediaTimeout(f"{path}: decode timed out after {limit:g} s (params video.timeouts.stream)")
    if rc != 0:
        raise MediaError(f"{path}: decode failed ({err[-300:] or f'ffmpeg exit {rc}'})")


# ----------------------------------------------------------------------------- stage

def shots_from_cuts(cuts: list[int], n_frames: int, fps: float) -> list[dict]:
    """Shots covering [0, n_frames) split at ``cuts``; times in seconds (rounded to 6 digits)."""
    bounds = [0] + [c for c in sorted(set(cuts)) if 0 < c < n_frames] + [n_frames]
    return [{"index": i, "start_frame": a, "end_frame": b,
             "start_time": round(a / fps, 6), "end_time": round(b / fps, 6)}
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def detect_shots(video: str | Path, params: dict, threads: int = 1) -> dict:
    """Detect the shots of one video file; return {"fps", "n_frames", "cuts", "shots"}. Raises MediaError.

    ``threads``: the job's threads, given to the decoder (the frames, hence the cuts, do not
    depend on it)."""
    cfg = validate_params(params)
    video = Path(video)
    info = probe(video, count_frames=False)
    fps = Fraction(info.fps).limit_denominator(1001)
    det = get_detector(cfg)
    cuts, n = det.detect(iter_frames_bgr(video, process_size(info.width, info.height), threads), fps)
    if n == 0:
        raise MediaError(f"{video}: decoded no frames")
    return {"fps": round(info.fps, 6), "n_frames": n, "cuts": cuts, "shots": shots_from_cuts(cuts, n, info.fps)}


def run(raw: str | Path, out: str | Path, params: dict, threads: int = 1) -> dict:
    """Build ``out`` (shots/<id>/) from ``raw`` (raw/<id>/); return what shots.json holds."""
    cfg = validate_params(params)
    raw = Path(raw)
    info = read_json(raw / "info.json")
    vid = info.get("id") or raw.name
    rejects = Rejects(STAGE)
    result: dict[str, Any] = {"video": vid, "status": "ok", "reason": None, "detector": cfg["detector"],
                              "fps": None, "n_frames": None, "cuts": [], "shots": []}
    if info.get("status") != "ok":
        result["status"] = "skipped"
        log.info("%s: skipped (ingest status %s)", vid, info.get("status"))
    else:
        try:
            result.update(detect_shots(raw / "video.mp4", {"shots": cfg}, threads))
        except MediaError as e:
            reason = f"unreadable video: {e}"
            result.update(status="rejected", reason=reason)
            rejects.add(vid, reason)
        else:
            log.info("%s: %d frames, %d shots, cuts at %s", vid, result["n_frames"], len(result["shots"]),
                     result["cuts"])
    with atomic_path(out, directory=True) as tmp:
        write_json(tmp / "shots.json", result)
        rejects.write(tmp / "rejects.jsonl")
    return result


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Detect the shots (hard cuts) of one batch of ingested videos.")
    ap.add_argument("--raw", required=True, help="the ingested batch, e.g. work/raw/<batch> (one <id>/ per video)")
    ap.add_argument("--videos", nargs="+", help="ids of the batch's videos (without: one video, the paths are its own)")
    ap.add_argument("--out", required=True, help="the batch's directory, e.g. work/shots/<batch>")
    ap.add_argument("--threads", type=int, default=1, help="decoder threads (the rule's threads)")
    args = ap.parse_args(argv)
    validate_params(args.params)
    if args.videos is None:
        run(args.raw, args.out, args.params, args.threads)
        return
    raw = Path(args.raw)
    vbatch.run_videos(STAGE, args.out, args.videos, lambda v, out: run(raw / v, out, args.params, args.threads),
                      "shots.json", lambda v, reason: {"video": v, "status": "rejected", "reason": reason,
                                                       "fps": None, "n_frames": None, "cuts": [], "shots": []})


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
