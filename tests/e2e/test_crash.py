"""Crash safety with the real tools: processes killed with SIGKILL, real Snakemake and DVC.

One throw-away copy of the repo (ci preset, teacher 30 iterations, a checkpoint every 10)
serves the whole module, in the order a build goes:
1. the dataset build is SIGKILLed (the whole Snakemake process group) while a `synth` job is
   writing; no half-written artifact is left at any output path, `--rerun-incomplete` finishes
   the build, and DVC records it cleanly;
2. the teacher's training process is SIGKILLed after a checkpoint (Snakemake sees the job fail);
   rerunning Snakemake resumes from the checkpoint and ends with the same bytes as an
   uninterrupted run;
3. two drivers on one checkout: while `dvc repro` builds student_16, a second `snakemake` and a
   second `dvc repro` refuse with their lock messages, and the first finishes cleanly.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from e2e_helpers import cmdline, descendants, dvc_changed_stages, env, make_repo, run
from safetensors.torch import load_file

pytestmark = pytest.mark.e2e

# Small where it does not weaken the point: the teacher still passes checkpoints mid-run, and
# student_16 only has to hold the lock while a second driver tries.
OVERLAY = {"pvtt": {"teacher": {"checkpoint_every": 10},
                    "teacher_phases": {"phase1": {"iterations": 10}, "phase2": {"iterations": 10},
                                       "phase3": {"iterations": 30}},
                    "distill": {"student_16": {"iterations": 4}}}}
NOT_ARTIFACTS = ("work/logs", "work/benchmarks", "work/checkpoints")


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a driver and everything it started, as a lost node or the OOM killer would."""
    pids = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)


def start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    f = open(log, "w")
    return subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(cond, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before: {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.02)


def leftovers(repo: Path) -> list[Path]:
    """Hidden temporaries of atomic writes (``.name.tmp-PID``) anywhere under work/ and artifacts/."""
    return sorted(p for top in ("work", "artifacts") if (repo / top).exists()
                  for p in (repo / top).rglob(".*.tmp-*"))


def snapshot(repo: Path) -> dict[str, str]:
    """sha256 of every artifact file (not logs/benchmarks/checkpoints, not inside a temporary)."""
    out = {}
    for top in ("work", "artifacts"):
        for p in (repo / top).rglob("*"):
            rel = p.relative_to(repo).as_posix()
            if not p.is_file() or rel.startswith(NOT_ARTIFACTS) or any(".tmp-" in part for part in p.parts):
                continue
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("crash")
    return make_repo(base / "repo", overlay=OVERLAY)


@pytest.fixture(scope="module")
def killed_data(repo):
    """Build the dataset; SIGKILL the whole Snakemake process group while a synth job writes."""
    proc = start(["snakemake", "--cores", "2", "artifacts/dataset"], repo, repo.parent / "data_killed.log")
    synth = repo / "work/synth"
    wait_for(lambda: synth.exists() and any(p.name.startswith(".shard-") for p in synth.iterdir()),
             600, proc, "a synth job writing its temporary output")
    kill_tree(proc)
    left = leftovers(repo)
    info = {"leftovers": left, "after_kill": snapshot(repo),
            "finals_after_kill": {p: (p.parent / p.name[1:].split(".tmp-")[0]).exists() for p in left}}
    # Snakemake's own lock survives a SIGKILL: the next run says so and how to clear it.
    locked = run(["snakemake", "--cores", "2", "artifacts/dataset"], repo, check=False)
    info["locked_msg"] = locked.stdout + locked.stderr
    run(["snakemake", "--unlock", "artifacts/dataset"], repo)
    res = run(["snakemake", "--cores", "2", "--rerun-incomplete", "artifacts/dataset"], repo, timeout=1200)
    info["rerun_log"] = res.stdout + res.stderr
    info["after_rerun"] = snapshot(repo)
    info["leftovers_after"] = leftovers(repo)
    run(["dvc", "commit", "-f", "dataset"], repo)
    return info


def test_killed_data_stage_leaves_no_half_written_artifact(repo, killed_data):
    info = killed_data
    tmp = [p for p in info["leftovers"] if p.parent.name == "synth"]
    assert tmp, f"the kill should land while a synth job writes; leftovers: {info['leftovers']}"
    for p in tmp:  # the killed job's output path was never created: only its hidden temporary existed
        assert not info["finals_after_kill"][p], p
    assert "Directory cannot be locked" in info["locked_msg"] and "--unlock" in info["locked_msg"]
    assert "synth" in info["rerun_log"]
    assert info["leftovers_after"] == [], "the rerun removes the temporaries of killed jobs"
    # Whatever was at an output path after the kill was complete: the finished build has the
    # same bytes there (every stage is byte-reproducible), and only the missing ones were added.
    changed = {k for k, h in info["after_kill"].items() if info["after_rerun"].get(k) != h}
    assert not changed, sorted(changed)[:20]
    assert len(info["after_rerun"]) > len(info["after_kill"])
    assert (repo / "artifacts/dataset/manifest.json").exists()
    assert dvc_changed_stages(run(["dvc", "status", "dataset"], repo).stdout) == []


@pytest.fixture(scope="module")
def killed_teacher(repo, killed_data):
    """SIGKILL the teacher's training process (torchrun's worker) once a checkpoint is on disk."""
    ck = repo / "work/checkpoints/teacher"
    proc = start(["snakemake", "--cores", "2", "artifacts/teacher"], repo, repo.parent / "teacher_killed.log")
    wait_for(lambda: ck.exists() and any(p.name.startswith("step-") for p in ck.iterdir()), 900, proc,
             "the teacher's first checkpoint")
    workers = [p for p in descendants(proc.pid)
               if "scripts/teacher.py" in cmdline(p) and "torch.distributed.run" not in cmdline(p)]
    assert len(workers) == 1, [cmdline(p) for p in descendants(proc.pid)]
    os.kill(workers[0], signal.SIGKILL)
    rc = proc.wait(timeout=300)
    killed_log = (repo.parent / "teacher_killed.log").read_text()
    steps_before = sorted(p.name for p in ck.glob("step-*.pt"))
    teacher_log_killed = (repo / "work/logs/teacher.log").read_text()
    exists_after_kill = (repo / "artifacts/teacher").exists()
    res = run(["snakemake", "--cores", "2", "artifacts/teacher"], repo, timeout=900)
    run(["dvc", "commit", "-f", "latents", "teacher_phase1", "teacher_phase2", "teacher"], repo)
    return {"rc": rc, "killed_log": killed_log, "steps_before": steps_before, "log_killed": teacher_log_killed,
            "exists_after_kill": exists_after_kill, "rerun": res.stdout + res.stderr,
            "log_resumed": (repo / "work/logs/teacher.log").read_text()}


def test_killed_teacher_resumes_to_identical_weights(repo, killed_teacher, tmp_path):
    k = killed_teacher
    assert k["rc"] != 0 and "Error in rule teacher" in k["killed_log"], k["killed_log"][-3000:]
    assert not k["exists_after_kill"], "a failed job leaves no artifact"
    assert k["steps_before"], "the checkpoint survives the failed job (it is not a Snakemake output)"
    assert "torch.distributed.run" in k["killed_log"]
    assert "Signal 9 (SIGKILL) received by PID" in k["log_killed"], k["log_killed"][-3000:]  # torchrun's report
    log = k["log_resumed"]
    assert "resuming from step " in log, log[-3000:]
    step = int(log.split("resuming from step ")[1].split()[0])
    assert step in (10, 20), step
    # An uninterrupted run with the same params (phase 3's, as its manifest records them), data,
    # starting point (phase 2) and threads, without torchrun or checkpoints.
    art = repo / "artifacts/teacher"
    params = json.loads((art / "manifest.json").read_text())["params"]
    assert params["phase"] == "phase3" and params["teacher"]["iterations"] == 30
    ref = tmp_path / "ref"
    run([sys.executable, "scripts/teacher.py", "--params", json.dumps(params), "--latents", "artifacts/latents",
         "--init", "artifacts/teacher_phase2", "--out", str(ref), "--threads", "2"], repo, timeout=900)
    assert (art / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    a, b = load_file(str(art / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    for f in ("loss.csv", "eval.csv", "metrics.json", "manifest.json", "config.json", "adapter.safetensors",
              "dvclive/metrics.json", "dvclive/plots/metrics/train/loss.tsv"):
        assert (art / f).read_bytes() == (ref / f).read_bytes(), f
    assert len((art / "loss.csv").read_text().splitlines()) == 31
    assert dvc_changed_stages(run(["dvc", "status", "dataset", "latents", "teacher_phase1", "teacher_phase2", "teacher"],
                                  repo).stdout) == []


def test_second_driver_refuses_and_nothing_is_corrupted(repo, killed_teacher):
    first = start(["dvc", "repro", "student_16"], repo, repo.parent / "first_driver.log")
    locks = repo / ".snakemake/locks"
    wait_for(lambda: locks.exists() and any(locks.iterdir()), 300, first, "the first driver's Snakemake lock")
    sm = run(["snakemake", "--cores", "1", "artifacts/student_16"], repo, check=False)
    dv = run(["dvc", "repro", "student_16"], repo, check=False)
    rc = first.wait(timeout=900)
    first_log = (repo.parent / "first_driver.log").read_text()
    assert rc == 0, first_log[-4000:]
    assert sm.returncode != 0 and "Directory cannot be locked" in sm.stdout + sm.stderr, (sm.stdout + sm.stderr)[-3000:]
    # DVC names the blocking process ("... is busy, it is being blocked by: (PID n): dvc repro ...")
    # or, when it is the repo lock, says "Unable to acquire lock".
    dv_msg = dv.stdout + dv.stderr
    assert dv.returncode != 0 and ("is being blocked by" in dv_msg and "dvc repro" in dv_msg
                                   or "Unable to acquire lock" in dv_msg), dv_msg[-3000:]
    assert "Running stage 'student_16'" in first_log
    art = repo / "artifacts/student_16"
    assert {"model.safetensors", "config.json", "manifest.json", "metrics.json", "loss.csv"} <= {p.name for p in art.iterdir()}
    load_file(str(art / "model.safetensors"))
    assert leftovers(repo) == []
    assert dvc_changed_stages(run(["dvc", "status", "dataset", "teacher", "student_16"], repo).stdout) == []
    assert snakemake_nothing_to_do(repo)


def snakemake_nothing_to_do(repo: Path) -> bool:
    res = run(["snakemake", "-n", "--cores", "1", "artifacts/student_16"], repo)
    return "Nothing to be done" in res.stdout + res.stderr
