"""AVGen-DiT end to end, on the shared ci-preset build (tests/e2e/conftest.py): every milestone,
the planted failures, the format, falling validation losses, INT8, evaluation, the generate CLI,
and which params rebuild what."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from e2e_helpers import dvc_changed_stages, dvc_ran_stages, read_params, run, snakemake_jobs, write_params

from genbuild.io.video import ffprobe_bin

pytestmark = pytest.mark.e2e

AV_MILESTONES = ["avgen_dataset", "avgen_features", "avgen_stage1", "avgen_stage2", "avgen_stage3", "avgen_int8",
                 "avgen_eval"]


def _streams(path) -> dict[str, dict]:
    res = subprocess.run([ffprobe_bin(), "-v", "error", "-show_streams", "-of", "json", str(path)], capture_output=True,
                         text=True, timeout=60, check=True)
    return {s["codec_type"]: s for s in json.loads(res.stdout)["streams"]}


def _json(path):
    return json.loads(path.read_text())


def test_dvc_repro_builds_every_avgen_milestone(repo):
    repo, log = repo
    assert [s for s in dvc_ran_stages(log) if s.startswith("avgen_")] == AV_MILESTONES
    for m in AV_MILESTONES:
        assert (repo / "artifacts" / m / "manifest.json").exists(), m


def test_every_planted_failure_is_rejected_for_its_own_reason(repo):
    repo, _ = repo
    truth = _json(repo / "work/avgen/sample/truth.json")
    rows = [json.loads(line) for line in (repo / "artifacts/avgen_dataset/rejects.jsonl").read_text().splitlines()]
    reasons = {r["item"]: r["reason"].split(":")[0] for r in rows}
    for cid, t in truth.items():
        if t["kind"] == "good":
            assert cid not in reasons, f"good clip {cid} rejected: {reasons.get(cid)}"
        else:
            assert reasons.get(cid) == t["expect"], (cid, reasons.get(cid))
    card = _json(repo / "artifacts/avgen_dataset/card.json")
    good = sum(t["kind"] == "good" for t in truth.values())
    assert card["counts"]["rows"] == len(truth) and card["counts"]["formatted"] == good
    assert card["pass_rate"] == round(good / len(truth), 4)
    assert sum(card["rejects"]["avgen_filter"].values()) == len(truth) - good


def test_shards_hold_the_models_format(repo):
    from avgen.pack.format import iter_samples, split_shards

    repo, _ = repo
    params = read_params(repo)["avgen"]["format"]
    shard = split_shards(repo / "artifacts/avgen_dataset", "train")[0]
    s = next(iter_samples(shard))
    mp4 = repo / "clip.mp4"
    mp4.write_bytes(s["mp4"])
    v = _streams(mp4)["video"]
    assert (v["width"], v["height"], v["codec_name"]) == (params["size"], params["size"], "h264")
    assert v["r_frame_rate"] == f"{params['fps']}/1"
    n = int(params["seconds"] * params["sample_rate"])
    assert s["sample_rate"] == params["sample_rate"] and len(s["audio"]) == n
    assert s["mel"].shape == (params["mel"]["n_mels"], 1 + n // params["mel"]["hop"])


def test_each_stage_lowers_its_validation_loss(repo):
    repo, _ = repo
    m1, m2, m3 = (_json(repo / f"artifacts/avgen_stage{k}/metrics.json") for k in (1, 2, 3))
    for modality in ("video", "audio"):  # stage 1 trains each modality alone
        assert m1[f"val_loss_after_{modality}"] < m1[f"val_loss_before_{modality}"], modality
    for m in (m2, m3):
        assert m["val_loss_after_joint"] < m["val_loss_before_joint"], m["stage"]
    assert m3["subset_size"] < m3["train_clips"] or m3["train_clips"] == 1
    cfg = _json(repo / "artifacts/avgen_stage3/model/backbone/config.json")
    assert cfg["_class_name"] == "UnifiedDiT"


def test_int8_model_is_smaller_and_close(repo):
    repo, _ = repo
    m = _json(repo / "artifacts/avgen_int8/metrics.json")
    assert m["compression"] > 3 and m["quantized_linears"] > 10
    assert m["velocity_rel_l2"] < 0.05 and abs(m["val_loss_delta_joint"]) < 0.05


def test_evaluation_reports_metrics_and_playable_clips(repo):
    repo, _ = repo
    m = _json(repo / "artifacts/avgen_eval/metrics.json")
    gt = m["ground_truth"]
    assert gt["av_align"] > gt["av_align_audio_shifted_0.5s"]
    for model in ("stage3", "int8"):
        assert m[model]["seconds_per_sample"] > 0 and 0 <= m[model]["av_align"] <= 1
        for learned in ("clip_score", "clap_score", "fvd", "fad"):  # stand-ins / no weights: unavailable, with the reason
            assert m[model][learned]["value"] is None and m[model][learned]["reason"], learned
    page = (repo / "artifacts/avgen_eval/report.html").read_text()
    clips = sorted((repo / "artifacts/avgen_eval/media").glob("*.mp4"))
    assert len(clips) == 3 * m["items"] and page.count("<video") == len(clips)
    s = _streams(clips[0])
    assert s["video"]["codec_name"] == "h264" and s["audio"]["codec_name"] == "aac"


def test_generate_cli_writes_h264_aac_at_the_models_rates(repo):
    repo, _ = repo
    out = repo / "generated.mp4"
    run([sys.executable, "-m", "avgen", "generate", "--prompt", "a red ball bouncing with a rising tone", "--out", str(out),
         "--model", "artifacts/avgen_int8", "--steps", "2"], repo)
    fmt = read_params(repo)["avgen"]["format"]
    s = _streams(out)
    assert s["video"]["codec_name"] == "h264" and s["video"]["r_frame_rate"] == f"{fmt['fps']}/1"
    assert s["audio"]["codec_name"] == "aac" and int(s["audio"]["sample_rate"]) == fmt["sample_rate"]
    bad = run([sys.executable, "-m", "avgen", "generate", "--prompt", "x", "--out", str(out), "--model", "nowhere"], repo,
              check=False)
    assert bad.returncode != 0 and "nowhere" in bad.stderr


def test_avgen_params_rebuild_only_downstream(repo):
    repo, _ = repo
    params = read_params(repo)
    before = json.dumps(params)
    params["avgen"]["train"]["stage3"]["lr"] *= 2
    write_params(repo, params)
    # (PVTT's tests before this one leave PVTT params changed: only AVGen's stages are looked at.)
    changed = {s for s in dvc_changed_stages(run(["dvc", "status"], repo).stdout) if s.startswith("avgen_")}
    assert changed == {"avgen_stage3"}  # DVC names the stage whose params changed; Snakemake reruns what follows
    dry = run(["snakemake", "-n", "--cores", "2", "all_avgen"], repo)
    assert set(snakemake_jobs(dry.stdout + dry.stderr)) - {"all_avgen"} == {"avgen_stage3", "avgen_int8", "avgen_eval"}
    params = json.loads(before)
    params["avgen"]["filter"]["min_snr_db"] = float(np.float32(params["avgen"]["filter"]["min_snr_db"]) + 1)
    write_params(repo, params)
    dry = set(snakemake_jobs(run(["snakemake", "-n", "--cores", "2", "all_avgen"], repo).stdout))
    assert {"avgen_filter", "avgen_format", "avgen_pack", "avgen_features", "avgen_stage1", "avgen_eval"} <= dry
    assert not dry & {"avgen_sample", "avgen_ingest", "pack", "teacher", "eval"}, dry
    write_params(repo, json.loads(before))
