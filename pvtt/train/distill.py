"""Distillation stages: teacher -> student_16 -> student_8 -> student_4, each by DMD2 or MeanFlow.

Each student starts from the previous one (student_16 from the teacher); the real score is
always the frozen teacher. ``distill.<student>.method`` picks the method:
- ``dmd2`` (``genbuild.train.methods.dmd2``): distribution matching with a fake score, plus the
  generator's terms of ``distill.common.losses`` (temporal, background, identity, adversarial;
  pixel-space regression) from ``pvtt.train.distill_losses``;
- ``meanflow`` (``genbuild.train.methods.mean_flow``): the student, given an interval input,
  learns the teacher's mean velocity over each step (``distill.common.meanflow``).
``student_alt`` is a fourth student from student_4's start (student_8), with its own method and
steps, so that the report compares two methods on the same start; nothing downstream reads it.

The saved weights are the generator's EMA (``model.safetensors``); the raw generator is saved
beside it (``raw/``) so the report can compare the two. ``metrics.json`` also holds the method,
the training cost as counted network passes (``genbuild.train.cost``) and the quality gate.

With ``--checkpoint-dir`` the method's state (networks, EMA, optimisers, its noise generator),
the batch generator, the global RNGs and the loss rows are saved every
``distill.common.checkpoint_every`` steps (``genbuild.train.checkpoint``); a rerun resumes from the
newest matching checkpoint and ends with the same bytes as an uninterrupted run on CPU.

It reads the latent cache (``pvtt.train.latents``). Launched by ``torch.distributed.run`` with
WORLD_SIZE > 1, training is data-parallel (``genbuild.train.distributed``); rank 0 computes the
validation metric and writes checkpoints and the artifact.

This module only assembles the networks, the method and the generic ``Trainer``
(``genbuild.train.trainer``, which owns the loop, checkpoints and resume), then writes the artifact.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_csv, write_json
from genbuild.manifest import sha256_file, write_manifest
from genbuild.stage import parser, setup_logging
from genbuild.train import distributed as ddp
from genbuild.train.checkpoint import Checkpointer, fingerprint
from genbuild.train.cost import total_cost
from genbuild.train.flow import pick_batch
from genbuild.train.methods.dmd2 import DMD2, DMDConfig, few_step_mse
from genbuild.train.methods.mean_flow import MeanFlow, MeanFlowConfig
from genbuild.train.methods.student import GeneratorTerm
from genbuild.train.trainer import Run, Trainer
from genbuild.workflow import script_code_files
from pvtt.models.bundle import load_bundle
from pvtt.models.dit import PVTTDiT, read_config
from pvtt.train.distill_losses import adversarial, build_terms
from pvtt.train.gate import GateFailed, GateResult
from pvtt.train.gate import check as gate_check
from pvtt.train.latents import latent_files, load_latents
from pvtt.train.phases import STUDENTS

log = logging.getLogger(__name__)


METHODS = ("dmd2", "meanflow")


def method_name(params: dict, student: str) -> str:
    """``distill.<student>.method`` (default dmd2), checked."""
    name = params["distill"][student].get("method", "dmd2")
    if name not in METHODS:
        raise ValueError(f"distill.{student}.method: unknown '{name}' (known: {', '.join(METHODS)})")
    return name


def _config(params: dict, student: str, shift: float) -> DMDConfig | MeanFlowConfig:
    common, own = params["distill"]["common"], params["distill"][student]
    shared = {"steps": int(own["steps"]), "iterations": int(own["iterations"]), "lr": float(own["lr"]),
              "cfg_scale": float(common["cfg_scale"]), "shift": shift, "batch_size": int(common.get("batch_size", 4)),
              "ema_decay": float(common.get("ema_decay", 0.9)), "seed": int(common.get("seed", 0))}
    if method_name(params, student) == "meanflow":
        mf = common.get("meanflow") or {}
        return MeanFlowConfig(**shared, **{k: float(v) for k, v in mf.items()}, param_prefix="distill.common.meanflow.")
    return DMDConfig(**shared, fake_lr=float(common["fake_lr"]), critic_steps=int(common["critic_steps"]),
                     regression_weight=float(common["regression_weight"]),
                     guidance_convention=common.get("guidance_convention", "standard"), param_prefix="distill.common.")


def _method(params: dict, cfg: DMDConfig | MeanFlowConfig, generator: PVTTDiT, bundle, device) -> DMD2 | MeanFlow:
    """The training method of ``cfg``'s kind around the generator and the frozen teacher, with the
    task's terms of ``distill.common.losses`` and the regression (the adversarial term needs
    DMD2's fake score: DMD2 only)."""
    common = params["distill"]["common"]
    terms, regression = build_terms(common.get("losses") or {}, bundle, int(bundle.components["image_encoder"]["size"]),
                                    _lpips(common.get("lpips"), device))
    if isinstance(cfg, MeanFlowConfig):
        terms = {"regression": GeneratorTerm(float(common["regression_weight"]), regression), **terms}
        return MeanFlow(generator, bundle.dit, cfg, terms=terms)
    gan = adversarial((common.get("losses") or {}).get("adversarial"), bundle.dit, cfg.seed)
    return DMD2(generator, bundle.dit, cfg, terms=terms, regression=regression, adversarial=gan)


def _lpips(entry: dict | None, device: torch.device):
    """The LPIPS network of the pixel regression, from ``distill.common.lpips`` (None: MSE only)."""
    if not entry:
        return None
    from genbuild.metrics.learned import Unavailable, load_lpips

    try:
        return load_lpips(entry, Path("."), str(device)).net.requires_grad_(False)
    except Unavailable as e:
        raise ValueError(f"distill.common.lpips: {e}") from None


def _gate(params: dict, student: str, model, bundle, val, cfg: DMDConfig | MeanFlowConfig, report: Path | None) -> GateResult | None:
    """The student against the teacher on val (``pvtt.train.gate``); the verdict also goes to
    ``report`` (outside the output, so it survives a failed rule)."""
    gp = params["distill"].get("gate")
    if gp is None:
        log.warning("%s: distill.gate is not set: no quality gate", student)
        return None
    ep = params.get("eval") or {}
    if next(bundle.dit.parameters()).device.type != "cpu":
        bundle.dit.to_device(torch.device("cpu"))
    result = gate_check(model, bundle.dit, val, bundle, cfg.steps, int(gp.get("teacher_steps", ep.get("teacher_steps", 50))),
                        float(ep.get("cfg_scale", cfg.cfg_scale)), cfg.shift, int(gp.get("items", 8)), float(gp["max_drop"]))
    log.info("%s: gate %s: %s", student, "passed" if result.passed else "FAILED",
             ", ".join(f"{k} {100 * d:+.1f} %" for k, d in result.drops.items()))
    if report is not None:
        write_json(report, {"student": student, **result.as_dict()})
    return result


def distill_student(latents_dir: Path, teacher_dir: Path, init_dir: Path, student: str, out_dir: Path, params: dict,
                    checkpoint_dir: Path | None = None, device: str | torch.device = "cpu",
                    gate_report: Path | None = None) -> dict:
    common = params["distill"]["common"]
    device = torch.device(device)
    world, rank = ddp.world()
    tcfg = read_config(teacher_dir)
    bundle = load_bundle(teacher_dir)
    cfg = _config(params, student, float(tcfg["shift"]))
    generator = PVTTDiT.load(init_dir)
    if isinstance(cfg, MeanFlowConfig):  # MeanFlow's student takes the step's length too
        generator = generator.with_average_velocity(cfg.seed)
    torch.manual_seed(cfg.seed)
    train, val = load_latents(latents_dir, tcfg["components"])
    files = latent_files(latents_dir)
    inputs = {**{p.name: sha256_file(p) for p in files}, "teacher": sha256_file(teacher_dir / "model.safetensors"),
              "init": sha256_file(init_dir / "model.safetensors")}
    fp = fingerprint(student, {"student": student, **params}, inputs, script_code_files("distill"), world_size=world)
    ckpt = Checkpointer(checkpoint_dir, int(common.get("checkpoint_every", 10)), fp, student, writer=rank == 0)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    trainer = Trainer(student, cfg.iterations, ckpt, {"batch": g}, log_every=max(1, cfg.iterations // 10), unit="iter")
    before = None
    if rank == 0 and not trainer.resuming:  # validation runs on the CPU, before the networks move to the device
        before = few_step_mse(generator, val.target, val.cond, cfg.steps, cfg.shift)
    if device.type != "cpu":
        generator.to_device(device)
        bundle.dit.to_device(device)
    method = _method(params, cfg, generator, bundle, device)
    run = trainer.fit(method, lambda start: functools.partial(pick_batch, train, cfg.batch_size, g), {"before": before})
    if rank != 0:
        ddp.barrier()
        return {}
    if device.type != "cpu":
        method.ema.to_device(torch.device("cpu"))
    after = few_step_mse(method.ema, val.target, val.cond, cfg.steps, cfg.shift)
    log.info("%s: %.2f samples/s (%d process%s)", student, (cfg.iterations - run.start) * cfg.batch_size / max(run.seconds, 1e-9),
             world, "es" if world > 1 else "")
    before = run.extra["before"]
    metrics = {"method": method_name(params, student), "steps": cfg.steps, "iterations": cfg.iterations,
               "val_mse_before": round(before, 6), "val_mse_after": round(after, 6),
               "init": str(init_dir), "teacher": str(teacher_dir), "training_cost": total_cost(run.rows)}
    log.info("%s: %d-step val MSE %.4f -> %.4f; %.1f s of training in this process; cost %s", student, cfg.steps,
             before, after, run.seconds, metrics["training_cost"])
    metrics["losses"] = list(method.columns)
    gate = _gate(params, student, method.ema, bundle, val, cfg, gate_report)
    if gate is not None:
        metrics["gate"] = gate.as_dict()
        if not gate.passed:
            raise GateFailed(gate.message(student))
    _write_artifact(out_dir, method, run, cfg, tcfg, metrics, params, student,
                    [init_dir / "model.safetensors", teacher_dir / "model.safetensors", *files], len(train))
    ddp.barrier()
    return metrics


def _write_artifact(out_dir: Path, dmd: DMD2 | MeanFlow, run: Run, cfg: DMDConfig | MeanFlowConfig, tcfg: dict,
                    metrics: dict, params: dict, student: str, inputs: list[Path], n_train: int) -> None:
    """The generator's EMA (and, in ``raw/``, the generator itself), the loss table, the metrics and
    the manifest."""
    with atomic_path(out_dir, directory=True) as tmp:
        extra = {"components": tcfg["components"], "kind": "student", "steps": cfg.steps, "shift": cfg.shift,
                 "cfg_baked": cfg.cfg_scale, "method": metrics["method"]}
        dmd.ema.save(tmp, extra={**extra, "weights": "ema"})
        dmd.generator.save(tmp / "raw", extra={**extra, "weights": "raw"})
        write_csv(tmp / "loss.csv", ["iteration", *dmd.columns],
                  ([it, *(f"{losses[c]:.6f}" for c in dmd.columns)] for it, losses in run.rows))
        write_json(tmp / "metrics.json", metrics)
        write_manifest(tmp, student, params, inputs, {"train_triplets": n_train}, extra={"metrics": metrics})


def main(argv=None) -> None:
    setup_logging(logging.INFO if ddp.launched_rank() == 0 else logging.WARNING)
    ap = parser("Distil a few-step student from the teacher (distill.<student>.method: DMD2 or MeanFlow), "
                "starting from --init.")
    ap.add_argument("--latents", required=True, type=Path, help="the latent cache (artifacts/latents)")
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--init", required=True, type=Path, help="model to start from (teacher or previous student)")
    ap.add_argument("--student", required=True, choices=list(STUDENTS))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for the whole job (split over processes)")
    ap.add_argument("--gpus", type=int, default=0, help="GPUs of the job: > 0 trains on cuda:LOCAL_RANK when CUDA is there")
    ap.add_argument("--checkpoint-dir", type=Path, default=None,
                    help="where to save and resume checkpoints (outside the output: Snakemake deletes failed outputs)")
    ap.add_argument("--gate-report", type=Path, default=None,
                    help="where the quality gate's verdict goes as JSON (outside the output: kept when the gate fails)")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads // max(1, ddp.launched_world())))
    device = ddp.init(a.gpus, a.student)
    try:
        distill_student(a.latents, a.teacher, a.init, a.student, a.out, a.params, a.checkpoint_dir, device,
                        a.gate_report)
    except GateFailed as e:
        log.error("%s", e)
        raise SystemExit(1) from None
    finally:
        ddp.shutdown()
