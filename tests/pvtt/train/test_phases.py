"""The teacher's chained phases, evaluation during training, and the DVCLive logs DVC reads.

Runs the real teacher loop on the tiny dataset's latent cache (see test_checkpoint.py), and
real `dvc plots show` / `dvc metrics show` on the artifact it writes.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_checkpoint import MODEL, TD, make_tiny_dataset, make_tiny_latents, teacher_params

from pvtt.train.phases import phase1_spec, phase_params

PHASES = {"phase1": {"iterations": 8, "model": None, "train_data": None},
          "phase2": {"iterations": 6, "lora": {"rank": 4, "alpha": 4}},
          "phase3": {"iterations": 6, "lora": {"rank": 4, "alpha": 4}, "unfreeze": 1}}


def chained(**teacher) -> dict:
    return {**teacher_params(**teacher), "teacher_phases": PHASES}


@pytest.fixture(scope="module")
def lat(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_latents(tmp_path_factory.mktemp("phases"))


def test_phase_params_override_the_shared_teacher_keys():
    p = phase_params(chained(lr=1e-3), "phase3")
    assert p["teacher"]["iterations"] == 6 and p["teacher"]["unfreeze"] == 1 and p["teacher"]["lr"] == 1e-3
    assert p["phase"] == "phase3" and p["model"] == MODEL and "teacher_phases" in p
    bad = {**chained(), "teacher_phases": {**PHASES, "phase2": {"model": {"preset": "14B"}}}}
    with pytest.raises(ValueError, match="teacher_phases.phase2.model: only phase1"):
        phase_params(bad, "phase2")
    with pytest.raises(ValueError, match="phase4"):
        phase_params(chained(), "phase4")
    assert phase1_spec(chained()) is None
    other = {**chained(), "teacher_phases": {**PHASES, "phase1": {"train_data": {"width": 16}}}}
    assert phase1_spec(other)[1] == {**TD, "width": 16}


@pytest.mark.slow  # a training run: make test, not test-fast
def test_three_phases_chain_and_phase3_unfreezes_the_last_block(lat, tmp_path):
    from pvtt.train.teacher import train_teacher

    params = chained()
    dirs = {}
    for phase, prev in (("phase1", None), ("phase2", "phase1"), ("phase3", "phase2")):
        dirs[phase] = tmp_path / phase
        train_teacher(lat, dirs[phase], phase_params(params, phase), init_dir=dirs.get(prev))
    cfg = {p: json.loads((d / "config.json").read_text()) for p, d in dirs.items()}
    assert cfg["phase1"]["started_from"] == "scratch"
    assert cfg["phase2"]["started_from"] == "previous phase phase1"
    assert cfg["phase3"]["started_from"] == "previous phase phase2"
    adapter = json.loads((dirs["phase3"] / "adapter_config.json").read_text())
    assert adapter["unfrozen_blocks"] == [1] and adapter["rank"] == 4
    w2, w3 = load_file(str(dirs["phase2"] / "model.safetensors")), load_file(str(dirs["phase3"] / "model.safetensors"))
    # Not a LoRA target: trains in phase 3 only in the unfrozen (last) block.
    assert not torch.equal(w2["wan.blocks.1.modulation"], w3["wan.blocks.1.modulation"])
    assert torch.equal(w2["wan.blocks.0.modulation"], w3["wan.blocks.0.modulation"])
    # LoRA-adapted linears of the frozen block moved (adapters merged in).
    assert not torch.equal(w2["wan.blocks.0.self_attn.q.weight"], w3["wan.blocks.0.self_attn.q.weight"])
    with pytest.raises(ValueError, match="unfreeze needs lora.rank"):
        train_teacher(lat, tmp_path / "x", phase_params({**params, "teacher_phases": {
            **PHASES, "phase2": {"iterations": 2, "unfreeze": 1}}}, "phase2"))


def test_a_phase_on_another_model_starts_from_base_or_scratch(lat, tmp_path):
    """Phase 2 after a phase 1 that trained another model does not load its weights."""
    from pvtt.train.teacher import train_teacher

    p1 = tmp_path / "p1"
    train_teacher(lat, p1, teacher_params(iterations=2, eval_every=0))
    cfg = json.loads((p1 / "config.json").read_text())
    cfg["components"]["preset"] = "1.3B"  # as if phase 1 had been the 1.3B prototype
    (p1 / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "p2"
    train_teacher(lat, out, teacher_params(iterations=2, eval_every=0), init_dir=p1)
    assert json.loads((out / "config.json").read_text())["started_from"].startswith("base (previous phase p1 trained")


def test_phase1_resolution_gets_its_own_latent_cache(tmp_path):
    from pvtt.models.bundle import components_from_params
    from pvtt.train.latents import encode_dataset, load_latents

    ds = make_tiny_dataset(tmp_path / "dataset")
    small = {**TD, "width": 16, "height": 16}
    encode_dataset(ds, tmp_path / "latents", {"model": MODEL, "train_data": TD,
                                              "teacher_phases": {"phase1": {"train_data": small}}})
    comp = components_from_params(MODEL, TD)
    train, _ = load_latents(tmp_path / "latents", comp, TD)
    small_train, _ = load_latents(tmp_path / "latents" / "phase1", components_from_params(MODEL, small), small)
    assert small_train.target.shape[-1] * 2 == train.target.shape[-1]
    with pytest.raises(ValueError, match="train_data"):
        load_latents(tmp_path / "latents", comp, small)


@pytest.mark.slow  # a training run: make test, not test-fast
def test_periodic_evaluation_does_not_change_training(lat, tmp_path):
    from pvtt.train.teacher import train_teacher

    train_teacher(lat, tmp_path / "off", teacher_params(eval_every=0))
    train_teacher(lat, tmp_path / "on", teacher_params(eval_every=4, eval_items=2, eval_steps=3))
    a, b = load_file(str(tmp_path / "off/model.safetensors")), load_file(str(tmp_path / "on/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "on/eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [4, 8, 12]
    assert all(float(r["psnr"]) > 5 and 0 < float(r["ssim"]) <= 1 and float(r["val_loss"]) > 0 for r in rows)
    assert (tmp_path / "off/eval.csv").read_text().strip() == "step,val_loss,psnr,ssim,mask_psnr,bg_psnr"
    metrics = json.loads((tmp_path / "on/metrics.json").read_text())
    assert metrics["eval_psnr"] == pytest.approx(float(rows[-1]["psnr"]), abs=1e-5)


def test_dvclive_logs_are_what_dvc_plots_and_metrics_read(lat, tmp_path):
    """The live log (with throughput) and the artifact's replayed series, read by real DVC."""
    from pvtt.train.teacher import train_teacher

    repo = tmp_path / "repo"
    repo.mkdir()
    out, live = repo / "artifacts/teacher", repo / "work/dvclive/teacher"
    train_teacher(lat, out, teacher_params(eval_every=6, eval_items=1, eval_steps=2), live_dir=live)
    live_metrics = json.loads((live / "metrics.json").read_text())
    assert live_metrics["perf"]["samples_per_s"] > 0 and "loss" in live_metrics["train"]
    assert "perf" not in json.loads((out / "dvclive/metrics.json").read_text())  # wall-clock stays out of artifacts
    loss_rows = (out / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert loss_rows[0] == "step\tloss" and len(loss_rows) == 1 + 12
    assert sorted(p.name for p in (out / "dvclive/plots/images/eval").iterdir()) == [
        "sample_step000006.gif", "sample_step000012.gif"]
    from PIL import Image

    # Animations with every frame of the clip (not a still of the first), in the artifact and the live log.
    for gif in (out / "dvclive/plots/images/eval/sample_step000012.gif", live / "plots/images/eval/sample_step000012.gif"):
        assert Image.open(gif).n_frames == TD["frames"], gif
    # Real DVC over a dvc.yaml shaped as genbuild.dvcgen writes it.
    (repo / "dvc.yaml").write_text(
        "metrics:\n- artifacts/teacher/dvclive/metrics.json\n"
        "plots:\n- artifacts/teacher/dvclive/plots/metrics:\n    x: step\n- artifacts/teacher/dvclive/plots/images\n")
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], dvc + ["init", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    res = subprocess.run(dvc + ["metrics", "show", "--json"], cwd=repo, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "val_loss_after" in res.stdout and "psnr" in res.stdout
    res = subprocess.run(dvc + ["plots", "show", "--json", "--split"], cwd=repo, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)["data"]
    assert any(k.endswith("train/loss.tsv") for k in shown) and any(k.endswith(".gif") for k in shown), list(shown)


def test_wandb_offline_mirror(lat, tmp_path):
    from pvtt.train.teacher import train_teacher

    train_teacher(lat, tmp_path / "out", teacher_params(iterations=3, eval_every=3, eval_items=1, eval_steps=2,
                                                       log={"wandb": True}), live_dir=tmp_path / "dvclive/teacher")
    runs = list((tmp_path / "dvclive/wandb").rglob("offline-run-*/*.wandb"))  # beside the DVCLive runs
    assert len(runs) == 1 and runs[0].stat().st_size > 0
