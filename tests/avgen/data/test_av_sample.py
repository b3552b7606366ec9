"""The AVGen-DiT sample: real ffmpeg encodes, deterministic bytes, truth that matches the files."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from avgen.data import sample as av_sample
from avgen.data.measure import read_audio
from avgen.data.probe import probe_av

PARAMS = {"n_good": 1, "seconds": 2.0, "width": 640, "height": 480, "fps": 24, "sample_rate": 16000,
          "failures": ["small", "low_fps", "no_audio"]}
ENCODER = {"crf": 17, "preset": "medium", "threads": 1}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("avsample")
    a = av_sample.make_sample(root / "a", PARAMS, 7, ENCODER)
    b = av_sample.make_sample(root / "b", PARAMS, 7, ENCODER)
    return root / "a", root / "b", a, b


def test_rerun_gives_identical_bytes(two_runs):
    a, b, ra, rb = two_runs
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["clips/av0000.mp4", "clips/avfail_low_fps.mp4", "clips/avfail_no_audio.mp4",
                                       "clips/avfail_small.mp4", "manifest.csv", "truth.json"]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert ra == rb


def test_manifest_and_truth_describe_the_clips(two_runs):
    out, _, res, _ = two_runs
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == av_sample.clip_ids(PARAMS)
    truth = json.loads((out / "truth.json").read_text())
    assert set(truth) == {r["id"] for r in rows} and truth == res["truth"]
    for r in rows:
        t = truth[r["id"]]
        assert r["source"] == f"clips/{r['id']}.mp4" and r["caption"] == t["caption"] and "bouncing" in t["caption"]
        assert t["expect"] == (None if t["kind"] == "good" else t["kind"])
        info = probe_av(out / r["source"])
        assert [info["width"], info["height"]] == t["size"] and info["fps"] == pytest.approx(t["fps"])
        assert info["seconds"] == pytest.approx(2.0, abs=0.05)
        assert info["has_audio"] == (t["kind"] != "no_audio")
        ev = t["events"]
        assert ev == sorted(ev) and all(0 < e <= 2.0 for e in ev) and len(ev) >= 2
    assert truth["avfail_small"]["size"] == [320, 240] and truth["avfail_low_fps"]["fps"] == 15
    good = probe_av(out / "clips/av0000.mp4")
    assert (good["sample_rate"], good["channels"], good["video_codec"], good["audio_codec"]) == (16000, 1, "h264", "aac")


def test_impacts_are_heard_at_their_truth_times(two_runs):
    """Each isolated impact starts a broadband burst at its truth time (high-passed energy jumps)."""
    out, _, res, _ = two_runs
    sr = 16000
    d = np.diff(read_audio(out / "clips/av0000.mp4", sr).astype(np.float64)) ** 2
    ev = res["truth"]["av0000"]["events"]
    isolated = [t for i, t in enumerate(ev) if i == 0 or t - ev[i - 1] > 0.15]
    assert isolated
    for t in isolated:
        i = int(round(t * sr))
        after = d[i:i + int(0.015 * sr)].mean()
        before = d[max(0, i - int(0.06 * sr)):i - int(0.02 * sr)].mean()
        assert after > 4 * before, (t, after, before)


def test_clips_depend_on_their_own_index_only(tmp_path):
    """A clip's bytes do not change with the number of other clips (seeded by (seed, index))."""
    res = av_sample.make_sample(tmp_path / "one", {**PARAMS, "failures": ["small"]}, 7, ENCODER)
    assert res["truth"]["avfail_small"] == av_sample.make_sample(
        tmp_path / "two", {**PARAMS, "n_good": 0, "failures": ["small"]}, 7, ENCODER)["truth"]["avfail_small"]
    assert (tmp_path / "one/clips/avfail_small.mp4").read_bytes() == (tmp_path / "two/clips/avfail_small.mp4").read_bytes()


def test_bad_sample_params_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="'sample.failures'"):
        av_sample.make_sample(tmp_path / "x", {"failures": ["wobbly"]}, 0, ENCODER)
    with pytest.raises(ValueError, match="'sample.width'"):
        av_sample.make_sample(tmp_path / "x", {"width": 641}, 0, ENCODER)
    assert not (tmp_path / "x").exists()


def test_bounces_are_physical():
    segs, hits = av_sample.flights(0.4, 0.0, 0.4, 3.0)
    t_first = (2 * 0.4 / av_sample.GRAVITY) ** 0.5
    assert hits[0, 0] == pytest.approx(t_first) and hits[0, 1] == pytest.approx(av_sample.GRAVITY * t_first)
    assert np.all(np.diff(hits[:, 0]) > 0) and len(segs) == len(hits) + 1
    body = av_sample.Body("disc", "red", (255, 0, 0), 0.06, 0.5, 0.0, 0.4, segs, hits)
    assert body.height(hits[:, 0]) == pytest.approx(np.zeros(len(hits)), abs=1e-9)
    assert body.height(np.linspace(0, 3, 500)).max() <= 0.4 + 1e-9


def test_main_cli(tmp_path):
    p = {"seed": 3, "sample": {**PARAMS, "n_good": 0, "failures": ["no_audio"], "seconds": 1.0}, "video": ENCODER}
    av_sample.main(["--out", str(tmp_path / "s"), "--params", json.dumps(p)])
    truth = json.loads((tmp_path / "s/truth.json").read_text())
    assert list(truth) == ["avfail_no_audio"] and truth["avfail_no_audio"]["kind"] == "no_audio"


def test_scenes_keep_impacts_apart_and_objects_in_view():
    """What lets AV-Align tell a clip from its 0.5-s-delayed audio after the 64 x 64, 8 fps format
    (see the module docstring): one object, impacts FLIGHT apart and within 0.15 frame of a frame
    midpoint, the first late enough that the delayed audio's own onset at 0.5 s is far from it,
    the second before the last flow peak (1.75 s); big, slow, dark in grey against every wall,
    and inside the centred square."""
    luma = lambda rgb: 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]  # noqa: E731
    walls = [luma(w) for _, _, w in av_sample.FLOORS]
    t = np.linspace(0.0, 2.0, 401)
    for index in range(60):
        bodies = av_sample.plan_bodies(av_sample._rng(1234, 1, index), 2.0)
        assert len(bodies) == 1
        b = bodies[0]
        ev = b.impacts[:, 0]
        assert len(ev) == 2 and 0.79 <= ev[0] <= 0.84 and ev[1] - ev[0] == pytest.approx(0.875) and ev[1] < 1.75, ev
        frames = ev * av_sample.EVENT_FPS
        assert np.abs(frames - np.floor(frames) - 0.5).max() <= 0.15 + 1e-9, frames
        assert b.radius >= 0.1 and b.impacts[:, 1].max() * 64 / 8 < 6.5          # px per 8-fps frame at 64 x 64
        assert min(walls) - luma(b.rgb) > 50
        x = b.x(t, 640 / 480) * 640
        assert x.min() - b.radius * 480 >= 80 - 1e-6 and x.max() + b.radius * 480 <= 560 + 1e-6


def test_longer_clips_keep_bouncing_one_flight_apart():
    apex = av_sample.GRAVITY * av_sample.FLIGHT ** 2 / 8
    segs, hits = av_sample.flights(0.0, math.sqrt(2 * av_sample.GRAVITY * apex), apex, 20.0)
    assert len(hits) == int(20.0 / av_sample.FLIGHT) and np.diff(hits[:, 0]) == pytest.approx(av_sample.FLIGHT)


def test_the_tone_follows_the_source_height():
    """Zero crossings of the source's tone in 20 ms windows give the pitch its height asks for."""
    b = av_sample.plan_bodies(av_sample._rng(1234, 1, 0), 2.0)[0]
    sr, win = 16000, 320
    x = av_sample.tone(b, sr, 2 * sr)
    for start in range(0, len(x) - win, win):
        seg = x[start:start + win]
        measured = np.count_nonzero(np.signbit(seg[1:]) != np.signbit(seg[:-1])) * sr / (2 * win)
        frac = np.clip(b.height(np.arange(start, start + win) / sr) / b.apex, 0, 1).mean()
        expected = av_sample.TONE_HZ[0] + (av_sample.TONE_HZ[1] - av_sample.TONE_HZ[0]) * frac
        assert abs(measured - expected) < 60, (start / sr, measured, expected)
