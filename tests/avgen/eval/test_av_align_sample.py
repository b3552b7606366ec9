"""AV-Align on the embedded sample's own clips, as the evaluation sees them.

The evaluation (avgen.eval.eval) scores the benchmark ground truth and the same clips with their
audio delayed by 0.5 s, and the truth must win: that is the check that the metric sees
synchronisation at all. The benchmark split is whichever ~20 % of the good clips the pack stage
picks, so it must hold for every good clip, not on average. Here: the CI sample's good clips
(params.yaml with configs/ci.yaml: n_good 6, the build's seed and encoder; the planted failures
are left out, a clip depends only on its own index), after the format stage (``avgen.format``:
64 x 64 centre crop at 8 fps, 16 kHz mono, 2 s), scored with the eval's own shift and tolerance.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avgen.data.sample import make_sample
from avgen.data.standardise import standardise
from avgen.eval import av_align as A
from avgen.eval.eval import SHIFT_SECONDS, shifted
from genbuild.params import load

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """{clip id: (events, audio onsets, flow peaks, AV-Align in sync, AV-Align shifted)}, plus the format."""
    cfg = load(ROOT / "params.yaml", [ROOT / "configs/ci.yaml"])
    av = cfg["avgen"]
    out = tmp_path_factory.mktemp("av_align_sample") / "sample"
    res = make_sample(out, {**av["sample"], "failures": []}, int(cfg["seed"]), cfg["video"])
    fmt, tol = av["format"], av["eval"]["av_align_tolerance"]
    fps, sr = float(fmt["fps"]), int(fmt["sample_rate"])
    rows = {}
    for cid, t in res["truth"].items():
        frames, audio, _ = standardise(out / f"clips/{cid}.mp4", fmt)
        late = shifted(audio, sr, SHIFT_SECONDS)
        rows[cid] = (np.asarray(t["events"]), A.audio_peaks(audio, sr), A.video_peaks(frames, fps),
                     A.av_align(frames, fps, audio, sr, tol), A.av_align(frames, fps, late, sr, tol))
    return rows, fps, tol


def test_the_ci_sample_has_six_good_clips(scored):
    rows, _, _ = scored
    assert sorted(rows) == [f"av{i:04d}" for i in range(6)]


def test_every_impact_is_an_audio_onset_and_has_a_flow_peak_in_the_window(scored):
    """What the in-sync score rests on: each truth event is heard (onset within 30 ms) and seen (a
    flow peak strictly within the tolerance window), after the format stage."""
    rows, fps, tol = scored
    for cid, (events, onsets, peaks, _, _) in rows.items():
        assert len(onsets) == len(events) and np.abs(onsets - events).max() < 0.03, (cid, events, onsets)
        assert all(np.abs(peaks - e).min() < tol / fps for e in events), (cid, events, peaks)


def test_every_good_clip_scores_higher_in_sync_than_shifted(scored):
    rows, _, _ = scored
    for cid, (events, _, peaks, sync, late) in rows.items():
        assert 0.0 <= late < sync <= 1.0, (cid, sync, late, events, peaks)


def test_in_sync_beats_shifted_clearly_on_average(scored):
    rows, _, _ = scored
    sync = np.mean([r[3] for r in rows.values()])
    late = np.mean([r[4] for r in rows.values()])
    assert sync - late >= 0.3, (sync, late, {cid: (round(r[3], 3), round(r[4], 3)) for cid, r in rows.items()})
