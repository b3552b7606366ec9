"""The teacher hyperparameter search (pvtt.train.hpo) on the tiny latent cache of test_checkpoint.

Trials are a few teacher steps each, so the whole module runs in seconds on 2 cores; one
intra-op thread keeps the arithmetic (and hence the values) identical between runs.
"""
from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from test_checkpoint import make_tiny_latents, teacher_params

from genbuild.params import ParamsError
from pvtt.train.hpo import search

SPACE = {"lr": [1.0e-4, 3.0e-3], "batch_size": [2, 4], "grad_accum": [1, 2], "warmup": [0, 3]}


def hpo_params(trials=3, iterations=6, seed=0, **space) -> dict:
    return {**teacher_params(), "hpo": {"trials": trials, "iterations": iterations, "seed": seed,
                                        "space": {**SPACE, **space}}}


def read_trials(out):
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_tiny_latents(tmp_path_factory.mktemp("hpo"))
    torch.set_num_threads(before)


@pytest.mark.slow  # a training run: make test, not test-fast
def test_search_writes_best_and_is_deterministic(latents, tmp_path):
    out = tmp_path / "hpo"
    best = search(latents, out, hpo_params())
    assert sorted(p.name for p in out.iterdir()) == ["best.json", "best_params.yaml", "trials.csv"]  # scratch gone
    assert not list(tmp_path.glob(".hpo.tmp-*"))
    rows = read_trials(out)
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    for r in rows:
        assert SPACE["lr"][0] <= float(r["lr"]) <= SPACE["lr"][1]
        assert int(r["batch_size"]) in SPACE["batch_size"] and int(r["grad_accum"]) in SPACE["grad_accum"]
        assert SPACE["warmup"][0] <= int(r["warmup"]) <= SPACE["warmup"][1] and float(r["seconds"]) > 0
    assert json.loads((out / "best.json").read_text()) == best
    winner = min(rows, key=lambda r: float(r["value"]))
    assert abs(best["value"] - min(float(r["value"]) for r in rows)) < 1e-6 and best["trial"] == int(winner["number"])
    overlay = yaml.safe_load((out / "best_params.yaml").read_text())
    assert overlay == {"pvtt": {"teacher": best["params"]}} and set(best["params"]) == set(SPACE)
    assert overlay["pvtt"]["teacher"]["batch_size"] == int(winner["batch_size"])
    # Same seed: same trial params and, on CPU with one thread, the same values.
    again = tmp_path / "again"
    assert search(latents, again, hpo_params()) == best
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_trials(again)] == strip


@pytest.mark.parametrize("key,value,msg", [
    ("lr", [3e-3, 1e-4], "hpo.space.lr must be [low, high] with 0 < low < high"),
    ("lr", [0, 1e-3], "hpo.space.lr must be"),
    ("batch_size", [], "hpo.space.batch_size must be a non-empty list"),
    ("grad_accum", [0, 1], "hpo.space.grad_accum must be"),
    ("warmup", [5, 2], "hpo.space.warmup must be"),
    ("shift", [1, 2], "hpo.space.shift is not searchable"),
])
def test_invalid_space_names_the_key(tmp_path, key, value, msg):
    with pytest.raises(ParamsError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        search(tmp_path / "lat", tmp_path / "out", hpo_params(**{key: value}))
    assert not (tmp_path / "out").exists()


def test_invalid_counts_name_the_key(tmp_path):
    bad = hpo_params()
    bad["hpo"]["trials"] = 0
    with pytest.raises(ParamsError, match="hpo.trials must be an integer >= 1"):
        search(tmp_path / "lat", tmp_path / "out", bad)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a training run: make test, not test-fast
def test_failed_trial_is_recorded_and_the_search_goes_on(latents, tmp_path):
    """A real failure: an lr of ~1e33 makes the weights overflow, the validation loss is NaN and
    the trial is FAIL with the reason; the other trials (seed 15: lr ~2e-2 and ~1e-2) complete."""
    out = tmp_path / "hpo"
    space = {"lr": [1.0e-4, 1.0e40], "batch_size": [2], "grad_accum": [1], "warmup": [0, 2]}
    best = search(latents, out, hpo_params(iterations=3, seed=15, **space))
    rows = read_trials(out)
    assert rows[0]["state"] == "FAIL" and rows[0]["value"] == "" and float(rows[0]["lr"]) > 1e20
    assert "diverged" in rows[0]["error"]
    done = [r for r in rows if r["state"] == "COMPLETE"]
    assert done and best["trial"] != 0 and abs(best["value"] - min(float(r["value"]) for r in done)) < 1e-6
    # Every trial failing: the search raises with the first error and writes nothing.
    with pytest.raises(RuntimeError, match=r"all 2 trials failed; the first \(trial 0.*diverged"):
        search(latents, tmp_path / "none", hpo_params(trials=2, iterations=2, lr=[1.0e30, 1.0e35], **{
            k: space[k] for k in ("batch_size", "grad_accum", "warmup")}))
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none.tmp-*"))


def test_cli(latents, tmp_path):
    """scripts/hpo.py's main: --params JSON as the rules pass it, one trial."""
    from pvtt.train.hpo import main

    out = tmp_path / "cli"
    main(["--params", json.dumps(hpo_params(trials=1, iterations=2)), "--latents", str(latents),
          "--out", str(out), "--threads", "1"])
    assert json.loads((out / "best.json").read_text())["trial"] == 0
