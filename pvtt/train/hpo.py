"""Hyperparameter search over the teacher's training (Optuna), on the sample's latent cache.

Each trial is a short teacher run (``hpo.iterations`` steps, no checkpoints) with ``lr``,
``batch_size``, ``grad_accum`` and ``warmup`` drawn from ``hpo.space``; the objective is its
``val_loss_after`` (minimised). A trial that raises, or whose loss is not finite (diverged), is
recorded as FAIL with its error and the search goes on: one bad corner of the space should not
cost the others. Only when every trial fails does the search raise, with the first error.

The sampler is ``TPESampler(seed=hpo.seed)`` with in-memory storage and one trial at a time, so
the same params and data give the same trial params (and, on CPU, the same values). The output
directory is written atomically (``genbuild.io.atomic``): trials train in scratch folders inside the
temporary sibling, removed after each trial, so a killed search leaves nothing at ``out_dir``.

Outputs: ``best.json`` ({value, params, trial}), ``trials.csv`` (one row per trial, with its
wall-clock seconds: a report, not a byte-reproducible artifact) and ``best_params.yaml``, an
overlay ``{pvtt: {teacher: {lr, batch_size, grad_accum, warmup}}}`` for the build.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import optuna
import torch
import yaml

from genbuild.io.atomic import atomic_path, write_text
from genbuild.io.jsonio import write_csv, write_json
from genbuild.params import ParamsError
from genbuild.stage import parser, setup_logging
from pvtt.train.teacher import train_teacher

LOG = logging.getLogger(__name__)
KEYS = ("lr", "batch_size", "grad_accum", "warmup")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_hpo(h) -> dict:
    """Validate the ``hpo`` block up front (before any training), naming the offending key."""
    if not isinstance(h, dict):
        raise ParamsError("params: hpo must be a mapping with trials, iterations, seed and space")
    for key in ("trials", "iterations"):
        if not _int(h.get(key)) or h[key] < 1:
            raise ParamsError(f"params: hpo.{key} must be an integer >= 1 (got {h.get(key)!r})")
    if not _int(h.get("seed", 0)) or h.get("seed", 0) < 0:
        raise ParamsError(f"params: hpo.seed must be an integer >= 0 (got {h.get('seed')!r})")
    space = h.get("space")
    if not isinstance(space, dict):
        raise ParamsError(f"params: hpo.space must be a mapping with keys {', '.join(KEYS)}")
    unknown = sorted(set(space) - set(KEYS))
    if unknown:
        raise ParamsError(f"params: hpo.space.{unknown[0]} is not searchable (keys: {', '.join(KEYS)})")
    for key in KEYS:
        if key not in space:
            raise ParamsError(f"params: hpo.space.{key} is missing")
    lr = space["lr"]
    if not (isinstance(lr, list) and len(lr) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                           for v in lr) and 0 < lr[0] < lr[1]):
        raise ParamsError(f"params: hpo.space.lr must be [low, high] with 0 < low < high (got {lr!r})")
    for key in ("batch_size", "grad_accum"):  # the schema's teacher.<key> is a positive integer too
        v = space[key]
        if not (isinstance(v, list) and v and all(_int(x) and x >= 1 for x in v)):
            raise ParamsError(f"params: hpo.space.{key} must be a non-empty list of integers >= 1 (got {v!r})")
    w = space["warmup"]
    if not (isinstance(w, list) and len(w) == 2 and all(_int(x) for x in w) and 0 <= w[0] <= w[1]):
        raise ParamsError(f"params: hpo.space.warmup must be [low, high] integers with 0 <= low <= high (got {w!r})")
    return {"trials": h["trials"], "iterations": h["iterations"], "seed": h.get("seed", 0), "space": space}


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """One point of the space: lr log-uniform (it acts multiplicatively), sizes categorical."""
    return {"lr": trial.suggest_float("lr", float(space["lr"][0]), float(space["lr"][1]), log=True),
            "batch_size": trial.suggest_categorical("batch_size", list(space["batch_size"])),
            "grad_accum": trial.suggest_categorical("grad_accum", list(space["grad_accum"])),
            "warmup": trial.suggest_int("warmup", space["warmup"][0], space["warmup"][1])}


def search(latents_dir: Path, out_dir: Path, params: dict, log: logging.Logger = LOG,
           device: str | torch.device = "cpu") -> dict:
    """Run the study and write out_dir; returns best.json's content."""
    h = check_hpo(params.get("hpo"))
    out_dir = Path(out_dir)
    sampler = optuna.samplers.TPESampler(seed=h["seed"], n_startup_trials=max(1, min(10, h["trials"] // 2)))
    study = optuna.create_study(direction="minimize", sampler=sampler, study_name="pvtt-teacher-hpo")
    with atomic_path(out_dir, directory=True) as tmp:
        def objective(trial: optuna.Trial) -> float:
            hp = suggest(trial, h["space"])
            teacher = {**params["teacher"], **hp, "iterations": h["iterations"], "checkpoint_every": 0,
                       "eval_every": 0}  # no checkpoints or periodic sampling: a trial is a loss probe
            scratch = tmp / f".trial-{trial.number:04d}"
            t0 = time.time()
            try:
                m = train_teacher(latents_dir, scratch, {**params, "teacher": teacher}, checkpoint_dir=None, device=device)
                value = float(m["val_loss_after"])
                if not math.isfinite(value):
                    raise FloatingPointError(f"training diverged: val_loss_after is {value}")
                return value
            except Exception as e:
                trial.set_user_attr("error", f"{type(e).__name__}: {e}")
                raise
            finally:
                trial.set_user_attr("seconds", round(time.time() - t0, 3))
                shutil.rmtree(scratch, ignore_errors=True)

        def progress(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
            done = [x for x in study.trials if x.state == optuna.trial.TrialState.COMPLETE]
            best = f"best so far {study.best_value:.6f} (trial {study.best_trial.number})" if done else "none complete yet"
            what = f"val_loss {t.value:.6f}" if t.value is not None else t.user_attrs.get("error", "")
            log.info("hpo trial %d (%d of %d) %s in %.1fs %s: %s; %s", t.number, t.number + 1, h["trials"], t.state.name,
                     t.user_attrs.get("seconds", 0.0), t.params, what, best)

        study.optimize(objective, n_trials=h["trials"], catch=(Exception,), callbacks=[progress])
        trials = study.trials
        write_csv(tmp / "trials.csv", ["number", "state", "value", *KEYS, "seconds", "error"],
                  ([t.number, t.state.name, "" if t.value is None else f"{t.value:.6f}",
                    *(t.params.get(k, "") for k in KEYS), t.user_attrs.get("seconds", ""),
                    t.user_attrs.get("error", "")] for t in trials))
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
            first = trials[0]
            raise RuntimeError(f"hpo: all {len(trials)} trials failed; the first (trial {first.number}, "
                               f"{first.params}): {first.user_attrs.get('error', 'unknown error')}")
        bt = study.best_trial
        best = {"value": bt.value, "params": dict(bt.params), "trial": bt.number}
        write_json(tmp / "best.json", best)
        write_text(tmp / "best_params.yaml",
                   f"# pvtt.train.hpo: best of {len(trials)} trials of {h['iterations']} teacher iterations "
                   f"(trial {bt.number}, val_loss_after {bt.value:.6f}).\n# warmup was tuned for that "
                   "length: scale it with teacher.iterations.\n"
                   + yaml.safe_dump({"pvtt": {"teacher": dict(bt.params)}}, sort_keys=True))
    log.info("hpo: best trial %d val_loss %.6f %s -> %s", bt.number, bt.value, bt.params, out_dir)
    return best


def main(argv=None) -> None:
    setup_logging()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial line replaces Optuna's
    ap = parser("Search the teacher's lr, batch size, accumulation and warm-up with Optuna on the latent cache.")
    ap.add_argument("--latents", required=True, type=Path, help="the latent cache (artifacts/latents)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for the trials' training")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    search(a.latents, a.out, a.params)
