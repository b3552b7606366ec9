"""Data-stage throughput: shots + clips against a bare ffmpeg decode+encode, in one run.

On a set of generated product videos (the sample generator at a chosen resolution), it times
the shots stage (PySceneDetect over every frame) followed by the clips stage (cut, crop,
resample and encode every clip), then, in the same process and on the same videos, a bare
``ffmpeg`` that decodes each whole video and encodes it to the clips' format (size, frame
rate, x264 crf/preset, threads). Throughput is source video seconds per wall second; the last
line is ``ratio=<stages / bare ffmpeg>``. The target is >= 0.5: the stages may cost at most
twice a plain transcode, although they decode the video twice (detection, then cutting).

    python -m pvtt.bench.data [--videos 6] [--width 640 --height 360] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genbuild.io.video import ffmpeg_bin, ffmpeg_url, input_args, x264_args
from genbuild.params import load
from genbuild.workflow import namespace
from pvtt.data import clips, ingest, sample, shots


def _bare_transcode(src: Path, dst: Path, cfg: dict, vcfg: dict, threads: int) -> None:
    """Decode the whole video and encode it as the clips stage encodes (size, fps, x264 settings)."""
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-y", "-threads", str(threads), *input_args(src),
           "-vf", f"fps={cfg['fps']},scale={cfg['width']}:{cfg['height']}:flags=area", "-an",
           *x264_args(vcfg["crf"], vcfg["preset"], vcfg["threads"]), ffmpeg_url(dst)]
    subprocess.run(cmd, check=True)


def bench(n_videos: int, width: int, height: int, threads: int, params: dict, work: Path) -> dict:
    params = {**params, "video": {**params["video"], "threads": threads}}  # the encoder's threads, both sides
    sp = {**params["sample"], "n_videos": n_videos, "resolutions": [[width, height]]}
    t0 = time.perf_counter()
    manifest = sample.generate_sample(work / "sample", {**params, "sample": sp})
    gen_s = time.perf_counter() - t0
    raws = []
    for v in manifest["videos"]:
        raw = work / "raw" / v["id"]
        ingest.run(work / "sample" / "manifest.json", v["id"], raw, params)
        raws.append(raw)
    seconds = sum(v["n_frames"] / v["fps"] for v in manifest["videos"])

    n_clips, shots_s, clips_s = 0, 0.0, 0.0
    for raw in raws:
        t1 = time.perf_counter()
        shots.run(raw, work / "shots" / raw.name, params, threads)
        t2 = time.perf_counter()
        n_clips += len(clips.run(raw, work / "shots" / raw.name, work / "clips" / raw.name, params, threads)
                       .get("clips", []))
        shots_s, clips_s = shots_s + t2 - t1, clips_s + time.perf_counter() - t2
    stage_s = shots_s + clips_s

    (work / "bare").mkdir()
    t2 = time.perf_counter()
    for raw in raws:
        _bare_transcode(raw / "video.mp4", work / "bare" / f"{raw.name}.mp4", params["clips"], params["video"], threads)
    bare_s = time.perf_counter() - t2
    stage_rate, bare_rate = seconds / stage_s, seconds / bare_s
    return {"videos": n_videos, "size": f"{width}x{height}", "source_seconds": round(seconds, 1),
            "clips": n_clips, "clip_size": f"{params['clips']['width']}x{params['clips']['height']}",
            "threads": threads, "generate_s": round(gen_s, 1), "stages_s": round(stage_s, 2),
            "shots_s": round(shots_s, 2), "clips_s": round(clips_s, 2),
            "bare_ffmpeg_s": round(bare_s, 2), "stages_video_s_per_s": round(stage_rate, 2),
            "bare_video_s_per_s": round(bare_rate, 2), "ratio": round(stage_rate / bare_rate, 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--config", action="append", default=[], help="overlay (e.g. configs/full.yaml: 720p clips)")
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--threads", type=int, default=1, help="threads given to each stage and to the bare ffmpeg")
    a = ap.parse_args(argv)
    params = namespace(load(a.params, a.config), "pvtt")  # PVTT's keys with the shared ones
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-data-") as tmp:
        r = bench(a.videos, a.width, a.height, a.threads, params, Path(tmp))
    print(json.dumps(r, sort_keys=True))
    print(f"ratio={r['ratio']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
