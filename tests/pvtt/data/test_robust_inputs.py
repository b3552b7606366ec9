"""What real uploads contain, made by ffmpeg in the test and taken through ingest -> shots -> clips.

Each case asserts the outcome (accepted with the right probe and clips, or rejected with a
specific reason in rejects.jsonl) and that no stage crashed or left a half-written output.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from genbuild.io.jsonio import read_jsonl
from genbuild.io.video import probe, read_frames
from pvtt.data import clips as C
from pvtt.data import ingest, shots

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"ingest": {"min_frames": 12, "min_side": 16},
          "shots": {"detector": "content", "threshold": 27.0, "min_scene_len": 12},
          "clips": {"width": 32, "height": 18, "fps": 12, "min_seconds": 1.0, "max_seconds": 2.0, "trim_frames": 1},
          "video": {"crf": 18, "preset": "ultrafast", "threads": 1}}


def ff(*args: str, input: bytes | None = None) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, input=input)


def ffprobe_json(path: Path, *args: str) -> dict:
    res = subprocess.run(["ffprobe", "-v", "error", *args, "-of", "json", str(path)], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout)


def make_testsrc(path: Path, size: str = "64x48", rate: float = 25, seconds: float = 3, pix_fmt: str = "yuv420p",
            *extra: str) -> Path:
    ff("-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}", *extra, "-c:v", "libx264",
       "-preset", "ultrafast", "-pix_fmt", pix_fmt, str(path))
    return path


def assert_complete(out: Path, expected: set[str]) -> None:
    """The stage committed ``out`` whole: exactly ``expected``, and no temporary sibling left."""
    assert out.is_dir(), out
    assert {p.name for p in out.iterdir()} == expected, sorted(p.name for p in out.iterdir())
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


def pipeline(src: Path, vid: str = "v", params: dict = PARAMS) -> tuple[dict, dict, dict, Path]:
    """Run ingest, shots and clips on ``src`` (listed in a manifest next to it); check every output."""
    manifest = src.parent / f"{vid}.manifest.json"
    manifest.write_text(json.dumps({"videos": [{"id": vid, "path": src.name}]}))
    work = src.parent / "work"
    raw, sh, cl = work / "raw" / vid, work / "shots" / vid, work / "clips" / vid
    info = ingest.run(manifest, vid, raw, params)
    s = shots.run(raw, sh, params)
    c = C.run(raw, sh, cl, params)
    ok = info["status"] == "ok"
    assert_complete(raw, {"info.json", "rejects.jsonl"} | ({"video.mp4"} if ok else set()))
    assert_complete(sh, {"shots.json", "rejects.jsonl"})
    assert_complete(cl, {"clips.json", "rejects.jsonl"} | {x["path"] for x in c["clips"]})
    rows = read_jsonl(raw / "rejects.jsonl")
    if ok:
        assert rows == [] and s["status"] == "ok" and (raw / "video.mp4").exists()
    else:
        assert len(rows) == 1 and rows[0]["reason"] == info["reason"] and rows[0]["stage"] == "ingest"
        assert s["status"] == "skipped" and c["status"] == "skipped" and c["clips"] == []
    for x in c["clips"]:                    # every clip as planned: size, frame count, duration limits
        got = probe(cl / x["path"])
        assert (got.width, got.height, got.n_frames) == (32, 18, x["n_frames"])
        assert params["clips"]["min_seconds"] <= x["duration"] <= params["clips"]["max_seconds"]
    return info, s, c, work


def check_clips_ok(info: dict, s: dict, c: dict, n_frames: int) -> None:
    assert info["status"] == "ok", info["reason"]
    assert info["probe"]["n_frames"] == n_frames and s["n_frames"] == n_frames
    assert c["status"] == "ok" and c["clips"], c


# ----------------------------------------------------------------------------- cases

def test_variable_frame_rate_is_cut_by_frame_index(tmp_path):
    """Frames dropped at irregular places (-fps_mode vfr): every clip frame shows the source frame
    raw_frame_index() names, as for a constant-rate video (not whatever the timestamps would pick)."""
    n, w, h = 60, 32, 24
    frames = np.stack([np.full((h, w, 3), 8 + 4 * i, np.uint8) for i in range(n)])   # frame i has grey 8 + 4i
    keep = [i for i in range(n) if i % 4 != 1 and not 20 <= i <= 27]
    src = tmp_path / "vfr.mp4"
    ff("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25", "-i", "-",
       "-vf", r"select='not(eq(mod(n\,4)\,1))*not(between(n\,20\,27))'", "-fps_mode", "vfr",
       "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", str(src), input=frames.tobytes())
    pts = [int(p["pts"]) for p in ffprobe_json(src, "-select_streams", "v:0", "-show_entries", "packet=pts")["packets"]]
    assert len(set(np.diff(sorted(pts)))) > 1                                      # really variable
    params = {**PARAMS, "video": {**PARAMS["video"], "crf": 0}}
    info, s, c, work = pipeline(src, params=params)
    check_clips_ok(info, s, c, len(keep))
    assert info["probe"]["fps"] == pytest.approx(len(keep) / 2.4)                  # average rate
    assert len(read_frames(work / "raw" / "v" / "video.mp4", size=(8, 8))) == len(keep)   # no padded frames
    for clip in c["clips"]:
        got = read_frames(work / "clips" / "v" / clip["path"])
        shown = [(float(f.mean()) - 8) / 4 for f in got]
        expected = [keep[C.raw_frame_index(clip, k)] for k in range(len(got))]
        assert np.allclose(shown, expected, atol=0.5), (shown, expected)


def test_rotation_flag_decodes_upright_with_display_size(tmp_path):
    """A 64x48 stream (left half red, right half blue) flagged rotate 90 is shown 48x64, blue on top."""
    coded = tmp_path / "coded.mp4"
    ff("-f", "lavfi", "-i", "color=c=red:s=32x48:r=25:d=3[l];color=c=blue:s=32x48:r=25:d=3[r];[l][r]hstack",
       "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(coded))
    src = tmp_path / "rotated.mp4"
    ff("-i", str(coded), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(src))
    sd = ffprobe_json(src, "-select_streams", "v:0", "-show_entries", "stream=width,height:stream_side_data=rotation")
    assert sd["streams"][0]["width"] == 64 and sd["streams"][0]["side_data_list"][0]["rotation"] == 90
    info, s, c, work = pipeline(src)
    check_clips_ok(info, s, c, 75)
    assert (info["probe"]["width"], info["probe"]["height"], info["probe"]["rotation"]) == (48, 64, 90)
    up = read_frames(work / "raw" / "v" / "video.mp4")
    assert up.shape == (75, 64, 48, 3)
    assert up[0, 5, 24, 2] > 200 and up[0, 5, 24, 0] < 50                          # top: blue
    assert up[0, -5, 24, 0] > 200 and up[0, -5, 24, 2] < 50                        # bottom: red
    clip = c["clips"][0]
    assert clip["crop"] == C.crop_box(48, 64, 32, 18) == [0, 18, 48, 27]           # upright geometry
    f = read_frames(work / "clips" / "v" / clip["path"])[0].astype(int)
    assert f[2, 16, 2] > 200 and f[2, 16, 0] < 50 and f[-3, 16, 0] > 200 and f[-3, 16, 2] < 50
    side = ffprobe_json(work / "clips" / "v" / clip["path"], "-show_entries", "stream_side_data=rotation")
    assert not any(st.get("side_data_list") for st in side["streams"])            # no flag left on clips


def test_odd_size(tmp_path):
    src = make_testsrc(tmp_path / "odd.mp4", "65x49", 25, 3, "yuv444p")                 # 4:2:0 cannot hold 65x49
    info, s, c, _ = pipeline(src)
    check_clips_ok(info, s, c, 75)
    assert (info["probe"]["width"], info["probe"]["height"]) == (65, 49)
    assert c["clips"][0]["crop"] == C.crop_box(65, 49, 32, 18) == [0, 6, 65, 37]


@pytest.mark.parametrize("size,accepted", [("8x8", False), ("16x10", False), ("16x16", True)])
def test_tiny_sizes(tmp_path, size, accepted):
    src = make_testsrc(tmp_path / "tiny.mp4", size, 25, 3)
    info, s, c, _ = pipeline(src)
    if accepted:
        check_clips_ok(info, s, c, 75)
    else:
        assert info["status"] == "rejected"
        assert info["reason"] == (f"too small: {tmp_path / 'tiny.mp4'} is {size} (display size), a side below "
                                  f"ingest.min_side 16")


def test_ten_bit(tmp_path):
    src = make_testsrc(tmp_path / "ten.mp4", "64x48", 25, 3, "yuv420p10le")
    assert ffprobe_json(src, "-show_entries", "stream=pix_fmt")["streams"][0]["pix_fmt"] == "yuv420p10le"
    info, s, c, work = pipeline(src)
    check_clips_ok(info, s, c, 75)
    out = ffprobe_json(work / "clips" / "v" / c["clips"][0]["path"], "-show_entries", "stream=pix_fmt")
    assert out["streams"][0]["pix_fmt"] == "yuv420p"                               # clips are 8-bit 4:2:0


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_audio_tracks_are_ignored(tmp_path, ext):
    """Audio as the FIRST stream and longer than the video: the video is read, clips have no audio."""
    src = tmp_path / f"audio.{ext}"
    ff("-f", "lavfi", "-i", "sine=frequency=440:duration=5",
       "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=3",
       "-map", "0:a", "-map", "1:v", "-c:a", "aac", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
       str(src))
    info, s, c, work = pipeline(src)
    check_clips_ok(info, s, c, 75)
    raw = work / "raw" / "v" / "video.mp4"
    kinds = [st["codec_type"] for st in ffprobe_json(raw, "-show_entries", "stream=codec_type")["streams"]]
    assert kinds == (["audio", "video"] if ext == "mp4" else ["video"])           # mp4 copied, mkv remuxed (video)
    for clip in c["clips"]:
        kinds = [st["codec_type"] for st in
                 ffprobe_json(work / "clips" / "v" / clip["path"], "-show_entries", "stream=codec_type")["streams"]]
        assert kinds == ["video"]


def zero_frame_mp4(path: Path, tmp_path: Path) -> Path:
    """An mp4 whose video track exists (codec, size) but holds no sample: the sample tables of a
    one-frame mp4 are emptied in place (stsz/stts/stsc/stco entry counts set to 0)."""
    one = make_testsrc(tmp_path / "one.mp4", "64x48", 25, 1, "yuv420p", "-frames:v", "1")
    data = bytearray(one.read_bytes())
    for box, offset in ((b"stsz", 12), (b"stts", 8), (b"stsc", 8), (b"stco", 8)):
        i = data.find(box)
        assert i > 0, box
        struct.pack_into(">I", data, i + offset, 0)
    path.write_bytes(bytes(data))
    return path


def test_zero_frame_video_stream_rejected(tmp_path):
    src = zero_frame_mp4(tmp_path / "zero.mp4", tmp_path)
    st = ffprobe_json(src, "-show_entries", "stream=codec_type,width")["streams"]
    assert st == [{"codec_type": "video", "width": 64}]                           # a video stream is there
    info, _, _, _ = pipeline(src)
    assert info["status"] == "rejected"
    assert info["reason"] == f"no frames: {src}: video stream has no decodable frames"


@pytest.mark.parametrize("faststart", [True, False])
def test_truncated_file_rejected(tmp_path, faststart):
    """Cut in half. Decision: rejected, never cut down to its decodable prefix (ingest copies bytes
    as they are; a container listing frames that do not decode would break every later stage)."""
    whole = make_testsrc(tmp_path / "whole.mp4", "64x48", 25, 4, "yuv420p",
                         *(["-movflags", "+faststart"] if faststart else []))
    src = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    info, _, _, _ = pipeline(src)
    assert info["status"] == "rejected"
    if faststart:      # index intact, media data missing: some frames decode
        assert info["reason"].startswith(f"truncated: {src}: the container lists 100 frames but only ")
        assert "partial file" in info["reason"] and " @ 0x" not in info["reason"]    # reason is reproducible
    else:              # the index (moov) was at the end: nothing to read
        assert info["reason"].startswith(f"unreadable video: {src}: not a readable video")


LONG_RUN = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from pvtt.data import clips, ingest, shots
    manifest, work, params = Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info = ingest.run(manifest, "long", work / "raw", params)
    s = shots.run(work / "raw", work / "shots", params)
    c = clips.run(work / "raw", work / "shots", work / "clips", params)
    print(json.dumps({"info": info, "shots": s, "clips": c, "rss_before_kb": before,
                      "rss_after_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
""")


def test_very_long_video_is_streamed(tmp_path):
    """10 minutes at 2 fps, 320x240 (1200 frames; decoded RGB would be 276 MB): shots and clips
    stream frames through pipes, so neither Python nor ffmpeg holds the video in memory."""
    src = tmp_path / "long.mp4"
    ff("-f", "lavfi", "-i", "color=c=0x606060:s=320x240:r=2:d=600",
       "-vf", "drawbox=x=t*0.5:y=100:w=20:h=20:c=white:t=fill",
       "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(src))
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"videos": [{"id": "long", "path": "long.mp4"}]}))
    params = {**PARAMS, "clips": {**PARAMS["clips"], "fps": 4, "min_seconds": 1.0, "max_seconds": 20.0}}
    res = subprocess.run([sys.executable, "-c", LONG_RUN, str(ROOT), str(manifest), str(tmp_path / "work"),
                          json.dumps(params)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    info, s, c = out["info"], out["shots"], out["clips"]
    check_clips_ok(info, s, c, 1200)
    assert info["probe"]["duration"] == pytest.approx(600.0) and s["cuts"] == []
    # one shot of 1200 frames, 1 trimmed at each end: 29 clips of 40 source frames (20 s), then 38 (19 s)
    assert [x["src_n_frames"] for x in c["clips"]] == [40] * 29 + [38]
    assert all(1.0 <= x["duration"] <= 20.0 and x["n_frames"] <= 80 for x in c["clips"])
    assert sum(x["src_n_frames"] for x in c["clips"]) == 1198
    work = tmp_path / "work"
    assert_complete(work / "clips", {"clips.json", "rejects.jsonl"} | {x["path"] for x in c["clips"]})
    for x in c["clips"][::10]:
        assert probe(work / "clips" / x["path"]).n_frames == x["n_frames"]
    grown_mb = (out["rss_after_kb"] - out["rss_before_kb"]) / 1024
    assert grown_mb < 100, f"Python grew by {grown_mb:.0f} MB: frames are not streamed"
    assert out["children_kb"] / 1024 < 200, f"an ffmpeg child peaked at {out['children_kb'] / 1024:.0f} MB"
