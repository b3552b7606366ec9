"""The AV filter on the real generated sample (every planted failure caught for its own reason,
every good clip kept) and its estimators on synthetic signals with known answers."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from avgen.data import measure
from avgen.data.probe import probe_av
from avgen.data.quality import DEFAULT_FILTER, REASON_KEYS, THRESHOLD_KEYS, judge, reason_key, validate_filter_params
from avgen.data.sample import FAILURE_KINDS, make_sample

FILTER = {"min_fps": 24, "min_side": 480, "max_side": 1080, "min_sharpness": 100.0, "max_cuts_per_second": 2.0,
          "cut_threshold": 27.0, "min_sample_rate": 16000, "min_snr_db": 10.0, "max_silence": 0.5, "silence_db": -50.0,
          "max_clipping": 0.001, "clip_level": 0.999}


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    out = tmp_path_factory.mktemp("avquality") / "sample"
    res = make_sample(out, {"n_good": 3, "failures": list(FAILURE_KINDS)}, 0, {"crf": 17, "preset": "medium", "threads": 1})
    return out, res["truth"], {cid: judge(out / f"clips/{cid}.mp4", FILTER) for cid in res["truth"]}


@pytest.mark.parametrize("kind", FAILURE_KINDS)
def test_each_planted_failure_is_rejected_for_its_own_reason_only(judged, kind):
    _, truth, results = judged
    assert truth[f"avfail_{kind}"]["expect"] == kind
    m, reasons = results[f"avfail_{kind}"]
    assert {reason_key(r) for r in reasons} == {kind}, (reasons, m)


def test_good_clips_are_kept(judged):
    _, truth, results = judged
    good = [cid for cid, t in truth.items() if t["kind"] == "good"]
    assert len(good) == 3
    for cid in good:
        m, reasons = results[cid]
        assert reasons == [], (cid, reasons, m)
        assert m["sharpness"] > 1000 and m["cuts_per_second"] == 0 and m["snr_db"] > 20
        assert m["silence"] < 0.1 and m["clipping"] == 0


def test_reasons_name_what_was_measured_and_the_param(judged):
    _, _, results = judged
    texts = {cid: reasons[0] for cid, (_, reasons) in results.items() if reasons}
    assert texts["avfail_low_fps"] == "low_fps: 15.0 fps < filter.min_fps 24"
    assert texts["avfail_small"] == "small: 320x240, shorter side 240 < filter.min_side 480"
    assert texts["avfail_no_audio"] == "no_audio: the file has no audio stream"
    assert texts["avfail_many_cuts"].startswith("many_cuts: 3.5 cuts/s >= filter.max_cuts_per_second 2")
    for cid, text in texts.items():
        assert reason_key(text) in REASON_KEYS and ("filter." in text or cid == "avfail_no_audio"), text
    m, _ = results["avfail_no_audio"]
    assert m["has_audio"] is False and m["snr_db"] is None and m["sharpness"] > 100


def test_thresholds_come_from_params(judged):
    out, _, _ = judged
    _, reasons = judge(out / "clips/av0000.mp4", {**FILTER, "min_side": 100, "max_side": 400, "min_fps": 30,
                                                   "min_sample_rate": 22050})
    assert [reason_key(r) for r in reasons] == ["too_large", "low_fps", "low_sample_rate"]


def test_probe_and_read_audio_of_unreadable_or_silent_files(judged, tmp_path):
    out, _, _ = judged
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="junk.mp4: not a readable video"):
        probe_av(tmp_path / "junk.mp4")
    with pytest.raises(ValueError, match="no such file"):
        probe_av(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="audio decode failed"):
        measure.read_audio(out / "clips/avfail_no_audio.mp4", 16000)


def test_validate_filter_params_names_the_key():
    assert validate_filter_params(FILTER) == {**DEFAULT_FILTER, **FILTER}
    assert validate_filter_params(None) == DEFAULT_FILTER and set(THRESHOLD_KEYS) >= set(FILTER)
    bad = [({"min_side": 1200}, "filter.min_side"), ({"max_silence": 1.5}, "filter.max_silence"),
           ({"max_clipping": -0.1}, "filter.max_clipping"), ({"min_fps": True}, "filter.min_fps"),
           ({"min_sample_rate": 16000.5}, "filter.min_sample_rate"), ({"min_sharpness": float("nan")}, "filter.min_sharpness"),
           ({"clip_level": 0}, "filter.clip_level"), ({"bogus": 1}, "filter.bogus")]
    for change, key in bad:
        with pytest.raises(ValueError, match=f"params key '{key}'"):
            validate_filter_params({**FILTER, **change})


# ----------------------------------------------------------------------------- estimators on known signals

def _glide(sr: int, seconds: float) -> np.ndarray:
    """A sine gliding 300 Hz -> 3 kHz -> 300 Hz each second (what the sample's source tone does)."""
    t = np.arange(int(seconds * sr)) / sr
    freq = 300.0 * 10 ** np.abs((t % 2.0) - 1.0)
    return 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / sr)


@pytest.mark.parametrize("truth_db", [5.0, 15.0, 25.0])
def test_snr_of_a_gliding_sine_in_white_noise(truth_db):
    sr = 16000
    s = _glide(sr, 4.0)
    noise = np.random.default_rng(int(truth_db)).normal(0.0, math.sqrt(np.mean(s ** 2) / 10 ** (truth_db / 10)), len(s))
    assert measure.snr_db(s + noise, sr) == pytest.approx(truth_db, abs=2.0)


def test_snr_limits():
    sr = 16000
    t = np.arange(2 * sr) / sr
    noise = np.random.default_rng(1).normal(0, 0.01, len(t))
    assert measure.snr_db(noise, sr) < 3.0                     # noise alone: no signal above the floor
    assert measure.snr_db(np.zeros(sr), sr) == measure.SNR_RANGE[0]
    assert measure.snr_db(np.concatenate([_glide(sr, 0.5), np.zeros(sr)]), sr) == measure.SNR_RANGE[1]
    # documented limitation: a steady sine holds its bins all the time, so it counts as noise
    assert measure.snr_db(0.3 * np.sin(2 * np.pi * 440 * t) + noise, sr) < 10.0


def test_silence_and_clipping_fractions():
    sr = 16000
    x = np.concatenate([_glide(sr, 1.0), np.zeros(sr)])
    assert measure.silence_fraction(x, sr, -50.0) == pytest.approx(0.5, abs=0.03)
    assert measure.silence_fraction(x * 1e-4, sr, -50.0) == 1.0
    assert measure.silence_fraction(np.full(sr, 0.01), sr, -50.0) == 0.0          # -40 dBFS is not silence
    y = np.zeros(10000)
    y[:25] = 1.0
    y[25:40] = -1.2
    y[40:100] = 0.998
    assert measure.clipping_fraction(y) == pytest.approx(40 / 10000)
    assert measure.clipping_fraction(y, level=0.99) == pytest.approx(100 / 10000)


def test_sharpness_of_detail_and_blur():
    rng = np.random.default_rng(0)
    img = np.clip(128 + rng.normal(0, 20, (8, 120, 160, 3)), 0, 255).astype(np.uint8)
    sharp = measure.sharpness(img)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 4.0) for f in img])
    assert sharp > 1000 > 100 > measure.sharpness(blurred)
    assert measure.sharpness(np.full((3, 40, 40, 3), 90, np.uint8)) == 0.0
