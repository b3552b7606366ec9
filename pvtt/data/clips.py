"""Clips stage: cut every shot of one video into standard clips (``shots/<id>/`` -> ``clips/<id>/``).

Per shot ``[start_frame, end_frame)``: ``clips.trim_frames`` frames are dropped at both ends,
then the rest is split greedily into clips of at most ``clips.max_seconds`` (a remainder
shorter than ``clips.min_seconds`` is dropped; a shot shorter than ``clips.min_seconds`` is
rejected as "shot too short"). Each clip is cut by ffmpeg, frame-exact:

    trim=start_frame=S:end_frame=S+m, settb=1/num, setpts=N*den, fps=F,
    crop=cw:ch:x:y (centred, target aspect, source pixels), scale=W:H, setsar=1, format=yuv420p

and encoded H.264 with the build's bit-exact flags (``video.crf``, ``video.preset``,
``video.threads``). One ffmpeg process decodes the video once for up to ``BATCH`` clips
(``split`` into one chain per clip); frames stream through ffmpeg, nothing is held in Python,
so the length of the source does not matter. Frames are upright: ffmpeg applies a rotation
flag, and the source size (``src_width``/``src_height``, the crop) is probe()'s display size.

Frame-index timing: ``settb``/``setpts`` re-time segment frame ``N`` to exactly ``N / src_fps``
(``src_fps = num/den``, the source's average rate). For a constant-rate source that is its own
timing; a variable-frame-rate source (dropped or irregular frames) is thereby treated as if
its frames were evenly spaced, so that clip frame ``k`` still shows source frame
:func:`raw_frame_index` (its stored timestamps would make the fps filter repeat frames across
gaps and skip frames in bursts).

Frame timing is ffmpeg's ``fps`` filter (``round=near``): clip frame ``k`` shows the last
source frame ``j`` of the segment whose timestamp, rounded half away from zero to the output
time base, is <= k, i.e. ``j = ceil((k + 1/2) * src_fps / fps) - 1`` (see
:func:`raw_frame_index`, checked against ffmpeg in tests/test_clips.py), and a segment of
``m`` source frames yields ``round_half_up(m * fps / src_fps)`` frames.

The rule runs it once per batch of videos (``--videos``, :mod:`pvtt.data.vbatch`): ``work/clips/<batch>/``
holds one such directory per video; a video whose build raises is that video's reject.

Output directory ``clips/<batch>/<id>/``::

    <video>_s<shot:02d>c<k>.mp4
    clips.json     {"video", "status": "ok"|"rejected"|"skipped", "reason",
                    "clips": [{"id", "video", "shot", "path" (file name), "src_start_frame",
                               "src_n_frames", "src_start_time", "src_fps", "src_fps_exact",
                               "src_width", "src_height", "n_frames", "fps", "width",
                               "height", "duration", "crop": [x, y, w, h]}]}
    rejects.jsonl  stage "clips": shots too short, failed cuts
"""
from __future__ import annotations

import logging
import math
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.io.rejects import Rejects
from genbuild.io.video import MediaError, ffmpeg_bin, ffmpeg_url, input_args, mp4_video_facts, run_tool, x264_args
from pvtt.data import vbatch

log = logging.getLogger("pvtt.data.clips")

STAGE = "clips"
DEFAULTS = {"width": 160, "height": 90, "fps": 24, "min_seconds": 2.0, "max_seconds": 4.0, "trim_frames": 2}
VIDEO_DEFAULTS = {"crf": 17, "preset": "medium", "threads": 1}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
BATCH = 8          # clips cut per ffmpeg process (one decode of the source per batch)
_HALF = Fraction(1, 2)


# ----------------------------------------------------------------------------- params

def _check(ok: bool, key: str, what: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"params key '{key}' must be {what}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_params(params: dict) -> tuple[dict, dict]:
    """Return (clips settings, video settings) with defaults; a bad value raises ValueError naming the key."""
    sub = cli.get(params, "clips", {}) or {}
    vsub = cli.get(params, "video", {}) or {}
    _check(isinstance(sub, dict), "clips", "a mapping", sub)
    _check(isinstance(vsub, dict), "video", "a mapping", vsub)
    c = {**DEFAULTS, **sub}
    v = {**VIDEO_DEFAULTS, **vsub}
    for k in ("width", "height"):
        _check(_is_int(c[k]) and c[k] >= 2 and c[k] % 2 == 0, f"clips.{k}", "a positive even integer", c[k])
    _check(_is_num(c["fps"]) and c["fps"] > 0, "clips.fps", "a number > 0", c["fps"])
    _check(_is_num(c["min_seconds"]) and c["min_seconds"] > 0, "clips.min_seconds", "a number > 0", c["min_seconds"])
    _check(_is_num(c["max_seconds"]) and c["max_seconds"] >= c["min_seconds"], "clips.max_seconds",
           f"a number >= clips.min_seconds ({c['min_seconds']})", c["max_seconds"])
    _check(_is_int(c["trim_frames"]) and c["trim_frames"] >= 0, "clips.trim_frames", "an integer >= 0", c["trim_frames"])
    _check(_is_int(v["crf"]) and 0 <= v["crf"] <= 51, "video.crf", "an integer in [0, 51]", v["crf"])
    _check(v["preset"] in X264_PRESETS, "video.preset", f"one of {list(X264_PRESETS)}", v["preset"])
    _check(_is_int(v["threads"]) and v["threads"] >= 0, "video.threads", "an integer >= 0", v["threads"])
    return c, v


# ----------------------------------------------------------------------------- pure geometry / timing

def as_fraction(fps: float | str | Fraction) -> Fraction:
    """An exact frame rate: "30000/1001", 29.970030 (-> 30000/1001), 25 -> Fraction."""
    if isinstance(fps, Fraction):
        return fps
    if isinstance(fps, str):
        return Fraction(fps)
    return Fraction(fps).limit_denominator(1001)


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + _HALF)


def out_frame_count(src_frames: int, src_fps: Fraction, fps: Fraction) -> int:
    """Frames ffmpeg's fps filter makes from ``src_frames`` consecutive source frames."""
    return _round_half_up(src_frames * fps / src_fps)


def raw_frame_index(clip: dict, k: int) -> int:
    """Source-video frame index shown at frame ``k`` of ``clip`` (a clips.json entry).

    ffmpeg's fps filter (round=near) shows, at output frame k, the last source frame j whose
    time j/src_fps, rounded half-up to output ticks, is <= k: j = ceil((k + 1/2) * src_fps / fps) - 1.
    """
    if k < 0:
        raise IndexError(f"clip frame {k} < 0")
    src_fps = as_fraction(clip.get("src_fps_exact") or clip["src_fps"])
    fps = as_fraction(clip.get("fps_exact") or clip["fps"])
    j = math.ceil((k + _HALF) * src_fps / fps) - 1
    n_src = clip.get("src_n_frames")
    if n_src is not None:
        j = min(j, int(n_src) - 1)
    return int(clip["src_start_frame"]) + max(0, j)


def crop_box(src_w: int, src_h: int, width: int, height: int) -> list[int]:
    """Centred [x, y, w, h] of the largest source region with the target aspect (scale to cover)."""
    if src_w * height >= src_h * width:          # source wider than target: keep full height
        ch = src_h
        cw = min(src_w, max(1, round(src_h * width / height)))
    else:                                        # source taller: keep full width
        cw = src_w
        ch = min(src_h, max(1, round(src_w * height / width)))
    return [(src_w - cw) // 2, (src_h - ch) // 2, cw, ch]


def clip_geometry(clip: dict) -> tuple[float, float, float, float]:
    """(x0, y0, sx, sy): clip = (source - (x0, y0)) * (sx, sy), in pixel-edge coordinates."""
    x, y, w, h = clip["crop"]
    return float(x), float(y), clip["width"] / w, clip["height"] / h


def source_to_clip_xy(points: np.ndarray, clip: dict) -> np.ndarray:
    """Map (..., 2) source (x, y) positions to clip positions (pixel i spans [i, i+1) in both)."""
    x0, y0, sx, sy = clip_geometry(clip)
    p = np.asarray(points, dtype=np.float64)
    return np.stack([(p[..., 0] - x0) * sx, (p[..., 1] - y0) * sy], axis=-1)


def source_box_to_clip(box: list[float], clip: dict) -> list[float]:
    """Map a source box [x0, y0, x1, y1] (pixel edges) to clip coordinates, clamped to the clip."""
    (a, b), (c, d) = source_to_clip_xy(np.array([[box[0], box[1]], [box[2], box[3]]]), clip)
    W, H = clip["width"], clip["height"]
    return [float(np.clip(a, 0, W)), float(np.clip(b, 0, H)), float(np.clip(c, 0, W)), float(np.clip(d, 0, H))]


def clip_mask_from_source(mask_src: np.ndarray, clip: dict) -> np.ndarray:
    """Apply the clip's crop + scale to a source-resolution mask (H, W) (or (N, H, W)); returns bool.

    A clip pixel is True when at least half of the source area it covers is True (area
    resampling when shrinking, bilinear when enlarging: the pixel-centre alignment ffmpeg's
    scaler uses).
    """
    m = np.asarray(mask_src)
    if m.ndim == 3:
        return np.stack([clip_mask_from_source(f, clip) for f in m])
    sw, sh = clip.get("src_width"), clip.get("src_height")
    if (sw is not None and m.shape[1] != sw) or (sh is not None and m.shape[0] != sh):
        raise ValueError(f"mask shape {m.shape} does not match the clip's source {sw}x{sh}")
    x, y, w, h = clip["crop"]
    W, H = clip["width"], clip["height"]
    sub = (m[y:y + h, x:x + w] > 0).astype(np.float32)
    interp = cv2.INTER_AREA if (w >= W and h >= H) else cv2.INTER_LINEAR
    return cv2.resize(sub, (W, H), interpolation=interp) >= 0.5


def plan_shot(start: int, end: int, src_fps: Fraction, cfg: dict) -> tuple[list[tuple[int, int, int]], int]:
    """Split shot [start, end) into clips; return ([(src_start, src_frames, out_frames)], usable frames).

    ``trim_frames`` are dropped at both ends; clips are as long as possible (at most
    max_seconds), a remainder shorter than min_seconds is dropped. An empty list means the
    shot is too short.
    """
    fps = as_fraction(cfg["fps"])
    n_min = math.ceil(Fraction(str(cfg["min_seconds"])) * fps)
    n_max = math.floor(Fraction(str(cfg["max_seconds"])) * fps)
    r = fps / src_fps
    m_max = math.ceil((n_max + _HALF) / r) - 1          # most source frames giving <= n_max output frames
    a, b = start + cfg["trim_frames"], end - cfg["trim_frames"]
    plan = []
    pos = a
    while b - pos > 0 and m_max > 0:
        m = min(m_max, b - pos)
        n = out_frame_count(m, src_fps, fps)
        if n < n_min or n == 0:
            break
        plan.append((pos, m, n))
        pos += m
    return plan, max(0, b - a)


# ----------------------------------------------------------------------------- cutting

def _filter_chain(i: int, s: int, m: int, src_fps: Fraction, fps: Fraction, crop: list[int], W: int,
                  H: int) -> str:
    """One clip's chain. After the trim, frame N of the segment is re-timed to exactly N / src_fps
    (time base 1/num, pts N*den): frame-index timing, the same for a constant-frame-rate source
    as its own timestamps, and exact for a variable-frame-rate one (whose stored timestamps would
    make the fps filter pad gaps and thin bursts, breaking raw_frame_index)."""
    x, y, cw, ch = crop
    return (f"[v{i}]trim=start_frame={s}:end_frame={s + m},settb=1/{src_fps.numerator},"
            f"setpts=N*{src_fps.denominator},fps={fps},"
            f"crop={cw}:{ch}:{x}:{y}:exact=1,scale={W}:{H}:flags=area,setsar=1,format=yuv420p[o{i}]")


def cut_clips(src: Path, jobs: list[dict], out_dir: Path, cfg: dict, vcfg: dict, threads: int = 1) -> None:
    """Cut ``jobs`` (clips.json entries) from ``src`` into ``out_dir`` with one ffmpeg process. Raises MediaError."""
    fps = as_fraction(cfg["fps"])
    n = len(jobs)
    graph = [f"[0:v:0]split={n}" + "".join(f"[v{i}]" for i in range(n))] if n > 1 else []
    chains = []
    for i, c in enumerate(jobs):
        src_fps = as_fraction(c.get("src_fps_exact") or c["src_fps"])
        chain = _filter_chain(i, c["src_start_frame"], c["src_n_frames"], src_fps, fps, c["crop"], c["width"],
                              c["height"])
        chains.append(chain.replace(f"[v{i}]", "[0:v:0]", 1) if n == 1 else chain)
    # Decoding and filtering use the job's threads (same frames whatever the count); the encoder
    # uses video.threads, because x264's output bytes depend on its thread count.
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-y", "-threads", str(max(1, threads)),
           "-filter_complex_threads", str(max(1, threads)), *input_args(src), "-filter_complex", ";".join(graph + chains)]
    for i, c in enumerate(jobs):
        cmd += ["-map", f"[o{i}]", "-frames:v", str(c["n_frames"]), "-an",
                *x264_args(vcfg["crf"], vcfg["preset"], vcfg["threads"]), "-f", "mp4", ffmpeg_url(out_dir / c["path"])]
    res = run_tool(cmd, src, "cutting clips", text=True)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"ffmpeg exit {res.returncode}"
        raise MediaError(f"{src}: cutting {', '.join(c['id'] for c in jobs)} failed ({tail})")


# ----------------------------------------------------------------------------- stage

def plan_clips(video: str, shots: dict, info: dict, cfg: dict, rejects: Rejects) -> list[dict]:
    """clips.json entries for every shot (without cutting); too-short shots go to ``rejects``."""
    pr = info["probe"]
    src_fps = as_fraction(shots.get("fps") or pr["fps"])
    fps = as_fraction(cfg["fps"])
    sw, sh = int(pr["width"]), int(pr["height"])
    crop = crop_box(sw, sh, cfg["width"], cfg["height"])
    clips = []
    for shot in sorted(shots.get("shots") or [], key=lambda s: s["index"]):
        si = int(shot["index"])
        plan, usable = plan_shot(int(shot["start_frame"]), int(shot["end_frame"]), src_fps, cfg)
        if not plan:
            secs = usable / src_fps
            rejects.add(f"{video}_s{si:02d}",
                        f"shot too short: {float(secs):.2f}s ({usable} frames after trimming {cfg['trim_frames']} "
                        f"at both ends) < clips.min_seconds {cfg['min_seconds']}",
                        video=video, shot=si, frames=usable, seconds=round(float(secs), 6))
            continue
        for k, (s, m, n) in enumerate(plan):
            cid = f"{video}_s{si:02d}c{k}"
            clips.append({
                "id": cid, "video": video, "shot": si, "path": f"{cid}.mp4",
                "src_start_frame": s, "src_n_frames": m, "src_start_time": round(float(s / src_fps), 6),
                "src_fps": round(float(src_fps), 6), "src_fps_exact": str(src_fps),
                "src_width": sw, "src_height": sh,
                "n_frames": n, "fps": round(float(fps), 6), "width": cfg["width"], "height": cfg["height"],
                "duration": round(float(n / fps), 6), "crop": list(crop),
            })
        used = sum(m for _, m, _ in plan)
        if used < usable:
            log.info("%s shot %d: %d trailing frames dropped (shorter than clips.min_seconds)", video, si, usable - used)
    return clips


def run(raw: str | Path, shots_dir: str | Path, out: str | Path, params: dict, threads: int = 1) -> dict:
    """Build ``out`` (clips/<id>/) from ``raw`` (raw/<id>/) and ``shots_dir``; return what clips.json holds."""
    cfg, vcfg = validate_params(params)
    raw, shots_dir = Path(raw), Path(shots_dir)
    info = read_json(raw / "info.json")
    shots = read_json(shots_dir / "shots.json")
    video = shots.get("video") or info.get("id") or raw.name
    rejects = Rejects(STAGE)
    result: dict[str, Any] = {"video": video, "status": "ok", "reason": None, "clips": []}
    with atomic_path(out, directory=True) as tmp:
        if info.get("status") != "ok" or shots.get("status") != "ok":
            result["status"] = "skipped"
            log.info("%s: skipped (ingest %s, shots %s)", video, info.get("status"), shots.get("status"))
        else:
            planned = plan_clips(video, shots, info, cfg, rejects)
            src = raw / "video.mp4"
            for b in range(0, len(planned), BATCH):
                batch = planned[b:b + BATCH]
                try:
                    cut_clips(src, batch, tmp, cfg, vcfg, threads)
                except MediaError as e:
                    for c in batch:
                        rejects.add(c["id"], f"cut failed: {e}", video=video, shot=c["shot"])
                        (tmp / c["path"]).unlink(missing_ok=True)
                    continue
                for c in batch:
                    try:  # our own mp4: its index is exact, and reading it costs no process
                        got = mp4_video_facts(tmp / c["path"])
                        bad = got != (c["n_frames"], c["width"], c["height"])
                        detail = f"expected {c['n_frames']} frames {c['width']}x{c['height']}, got " \
                                 f"{got[0]} frames {got[1]}x{got[2]}"
                    except MediaError as e:
                        bad, detail = True, str(e)
                    if bad:
                        rejects.add(c["id"], f"cut mismatch: {detail}", video=video, shot=c["shot"])
                        (tmp / c["path"]).unlink(missing_ok=True)
                        continue
                    result["clips"].append(c)
                    log.info("%s: %s src frames %d..%d -> %d frames %.2fs", video, c["id"], c["src_start_frame"],
                             c["src_start_frame"] + c["src_n_frames"] - 1, c["n_frames"], c["duration"])
            if not result["clips"]:
                result["status"] = "rejected"
                result["reason"] = "no clip survived" + (f" ({', '.join(sorted(rejects.by_reason()))})" if len(rejects) else "")
        write_json(tmp / "clips.json", result)
        rejects.write(tmp / "rejects.jsonl")
    log.info("%s: %d clips, %d rejected %s", video, len(result["clips"]), len(rejects), rejects.by_reason())
    return result


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Cut the shots of one batch of videos into standard clips (size, fps, 2-4 s).")
    ap.add_argument("--raw", required=True, help="the ingested batch, e.g. work/raw/<batch>")
    ap.add_argument("--shots", required=True, help="the batch's shots, e.g. work/shots/<batch>")
    ap.add_argument("--videos", nargs="+", help="ids of the batch's videos (without: one video, the paths are its own)")
    ap.add_argument("--out", required=True, help="the batch's directory, e.g. work/clips/<batch>")
    ap.add_argument("--threads", type=int, default=1, help="decoder/filter threads (the rule's threads)")
    args = ap.parse_args(argv)
    validate_params(args.params)
    if args.videos is None:
        run(args.raw, args.shots, args.out, args.params, args.threads)
        return
    raw, shots = Path(args.raw), Path(args.shots)
    vbatch.run_videos(STAGE, args.out, args.videos,
                      lambda v, out: run(raw / v, shots / v, out, args.params, args.threads), "clips.json",
                      lambda v, reason: {"video": v, "status": "rejected", "reason": reason, "clips": []})


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
