"""Evaluation stage: every model on the benchmark split, weight-free metrics, metrics JSON + HTML report.

The teacher samples with ``eval.teacher_steps`` steps and CFG; each student with its own step
count and no CFG (guidance is distilled into it); every form of student_4 the engine stage built
(ONNX fp32/fp16/INT8, INT8/FP8 PyTorch) runs student_4's schedule, and the report shows each
one's quality change from the fp32 student.
The unedited template is scored too, as the do-nothing baseline. Metrics compare decoded
frames at the training resolution with the ground-truth edit: PSNR, SSIM, background PSNR
outside the edit region, temporal consistency (1 - flow warp error) and seconds per video.
Learned metrics (``genbuild.metrics.learned``: CLIP-I and DINO-I against the product image, LPIPS against
the ground truth, FVD over the benchmark set, MUSIQ) load their weights from the local paths in
``eval.metrics``; a metric whose weights are absent is listed as unavailable, with the reason.
The benchmark split is chosen by hash of the source video at pack time and never trained on.
The report ends with a "Dataset" section: the dataset card's stage table and its SVG plots
(``<dataset>/plots/*.svg``, ``pvtt.pack.dataset_card``), inlined; the dataset is an input of the rule.
"""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
import torch

from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.manifest import write_manifest
from genbuild.media import on_white, side_by_side, to_uint8, write_gif
from genbuild.metrics.learned import load_metrics
from genbuild.stage import parser, setup_logging
from genbuild.train.flow import sample
from pvtt.deploy import forms
from pvtt.eval.regions import ReferenceSimilarity, clip_scores
from pvtt.eval.report import dataset_section, render
from pvtt.models.bundle import load_bundle
from pvtt.models.dit import PVTTDiT, read_config
from pvtt.train.data import encode
from pvtt.train.loader import load_all
from pvtt.train.periodic_eval import COLUMNS as EVAL_COLUMNS
from pvtt.train.phases import STUDENTS, TEACHER_PHASES

PHASE_RULES = [rule for _, rule in TEACHER_PHASES]  # the last is `teacher`, the one the students distil
log = logging.getLogger(__name__)


def _model_runs(model_dirs: dict[str, Path], bundle, engine_dir: Path | None, ep: dict,
                threads: int) -> dict[str, tuple]:
    """name -> (denoiser, steps, cfg scale) of every model to sample, in report order.

    The benchmark is encoded once with the final teacher's bundle, so an earlier teacher phase is
    only comparable (and only run) when it uses the same conditioning components. The engine is
    student_4 exported, so it reuses student_4's step count.
    """
    runs: dict[str, tuple] = {}
    for name in PHASE_RULES[:-1]:  # earlier phases: how much each phase added
        if name in model_dirs and read_config(model_dirs[name])["components"] == bundle.components:
            runs[name] = (PVTTDiT.load(model_dirs[name]), int(ep["teacher_steps"]), float(ep["cfg_scale"]))
    runs["teacher"] = (bundle.dit, int(ep["teacher_steps"]), float(ep["cfg_scale"]))
    for name in STUDENTS:
        if name in model_dirs:
            steps = int(read_config(model_dirs[name])["steps"])
            runs[name] = (PVTTDiT.load(model_dirs[name]), steps, 1.0)   # the EMA weights, what the artifact is
            if (model_dirs[name] / "raw" / "model.safetensors").is_file():  # the raw generator, to compare
                runs[f"{name}_raw"] = (PVTTDiT.load(model_dirs[name] / "raw"), steps, 1.0)
    if engine_dir is not None and "student_4" in runs:
        runs.update({name: (model, runs["student_4"][1], 1.0) for name, model in deployed_forms(engine_dir, threads).items()})
    return runs


def deployed_forms(engine_dir: Path, threads: int) -> dict[str, object]:
    """student_4_<form> -> its denoiser, for every form the engine stage built (``pvtt.deploy.forms``)."""
    return {f"student_4_{form}": forms.load(engine_dir, form, threads) for form in forms.built(engine_dir)}


# The metrics the methods and the deployed-forms tables show, and the forms' quality deltas.
TABLE_METRICS = ("psnr", "ssim", "mask_psnr", "bg_psnr", "temporal_consistency")


def deployment_table(results: dict[str, dict], engine_dir: Path | None) -> tuple[str, list[str], list[list]]:
    """student_4's deployed forms against the fp32 student on the benchmark: each metric's change,
    seconds per video, and the engine check's error (or why a form was not built)."""
    base, rows = results.get("student_4", {}), []
    for form, info in (forms.engines(engine_dir) if engine_dir else {}).items():
        res = results.get(f"student_4_{form}")
        if res is None:
            rows.append([form, "not run here: " + str(info.get("reason") or "no runtime"), *[""] * (len(TABLE_METRICS) + 2)])
            continue
        rows.append([form, "built", *(res[k] - base[k] for k in TABLE_METRICS), res["seconds_per_video"],
                     info.get("max_abs_diff_sampled_latents", float("nan"))])
    return ("student_4 deployed: change from the fp32 student on the benchmark (engine stage)",
            ["form", "status", *(f"Δ {k}" for k in TABLE_METRICS), "seconds_per_video", "latent |diff| (check)"], rows)


def _mean_scores(preds: list[np.ndarray], truth: list[np.ndarray], masks: list[np.ndarray], tr,
                 ref_sim: ReferenceSimilarity, learned: dict) -> dict:
    """Weight-free metrics per item, learned item metrics, then the set metrics (FVD), averaged.

    Every model and the unedited template go through this one function, so their numbers are
    comparable by construction.
    """
    per = [{**clip_scores(preds[i], truth[i], masks[i]), ref_sim.name: ref_sim(preds[i], masks[i], tr.reference_rgba[i])}
           for i in range(len(tr))]
    references = [on_white(r) for r in tr.reference_rgba]
    for name, m in learned.items():
        if hasattr(m, "score"):
            for i, p in enumerate(per):
                p[name] = m.score(preds[i], truth[i], references[i], masks[i])
    out = {k: float(np.nanmean([p[k] for p in per])) for k in per[0]}
    out.update({name: float(m.score_set(preds, truth)) for name, m in learned.items() if hasattr(m, "score_set")})
    return out


def _sample_benchmark(model, data, bundle, steps: int, shift: float, cfg: float,
                      n: int, keep_dilate: int | None = None) -> tuple[list[np.ndarray], list[float]]:
    """(decoded frames, seconds) per benchmark item for one model.

    Item i's noise is seeded with 1000 + i, so every model starts from the same noise and the
    comparison measures the models, not the draw; the time covers sampling and decoding.
    ``keep_dilate`` (not None): the source latents are kept outside the mask grown by that many
    latent cells at every step (``Conditions.keep_background``).
    """
    if isinstance(model, torch.nn.Module):
        model.eval()
    preds, seconds = [], []
    for i in range(n):
        cond = data.cond.select(slice(i, i + 1))
        noise = torch.randn(data.target[i:i + 1].shape, generator=torch.Generator().manual_seed(1000 + i))
        t0 = time.perf_counter()
        keep = cond.keep_background(keep_dilate) if keep_dilate is not None else None
        lat = sample(model, cond, noise, steps, shift, cfg, keep=keep)
        frames = bundle.codec.decode(lat)[0]
        seconds.append(time.perf_counter() - t0)
        preds.append(to_uint8(frames))
    return preds, seconds


def _write_media(tmp: Path, tr, source: list[np.ndarray], truth: list[np.ndarray],
                 outputs: dict[str, list[np.ndarray]]) -> list[dict]:
    """One side-by-side GIF per benchmark item (template, product, truth, every model) and its
    report entry: the report shows the clips, so failures no metric catches are still seen."""
    (tmp / "media").mkdir()
    items = []
    for i, key in enumerate(tr.keys):
        cols = [("template", source[i]), ("product", on_white(tr.reference_rgba[i])),
                ("truth", truth[i])] + [(n.replace("student_", "s"), outputs[n][i]) for n in outputs]
        write_gif(tmp / "media" / f"{key}.gif", side_by_side(cols))
        items.append({"key": key, "caption": tr.captions[i], "gif": f"media/{key}.gif"})
    return items


def _report_notes(ep: dict, unavailable: dict, summary: dict) -> list[str]:
    """The report's notes: how each model was sampled and each metric computed (or why it is
    missing), so the numbers can be read without the code."""
    return [
        f"Teacher: {int(ep['teacher_steps'])} steps with CFG {float(ep['cfg_scale']):.1f}; "
        "students: their own steps, no CFG (distilled in); student_N holds the EMA weights, student_N_raw the "
        "generator itself.",
        "keep_background: the template's latents are kept outside the edit mask (grown by "
        f"{int((ep.get('keep_background') or {}).get('dilate', 1))} latent cells) at every sampling step; "
        "the teacher is also shown with the other setting.",
        "template_unedited scores the source clip itself: the do-nothing baseline.",
        *(f"Unavailable: {reason}" for reason in unavailable.values()),
        *(f"{name}: {impl}" for name, impl in summary["implementations"].items()),
        "seconds_per_video = sampling + decoding one benchmark clip on this machine's CPU."]


def evaluate(dataset_dir: Path, model_dirs: dict[str, Path], engine_dir: Path | None, out_dir: Path, params: dict,
             threads: int = 1) -> dict:
    ep, td = params["eval"], params["train_data"]
    learned, unavailable = load_metrics(ep.get("metrics"), Path("."))
    for reason in unavailable.values():
        log.info("eval: unavailable: %s", reason)
    teacher_dir = model_dirs["teacher"]
    bundle = load_bundle(teacher_dir)
    tr = load_all(dataset_dir, "benchmark", td, limit=int(ep["max_videos"]))
    data = encode(tr, bundle)
    shift = float(read_config(teacher_dir)["shift"])
    truth = [to_uint8(v) for v in tr.edited]
    source = [to_uint8(v) for v in tr.source]
    masks = [m[0].numpy() > 0.5 for m in tr.mask]
    runs = _model_runs(model_dirs, bundle, engine_dir, ep, threads)
    results: dict[str, dict] = {"template_unedited": {}}
    outputs: dict[str, list[np.ndarray]] = {}
    ref_sim = ReferenceSimilarity(bundle.image_encoder, td["reference_size"], bundle.components["image_encoder"].get("kind", "tiny"))

    results["template_unedited"] = _mean_scores(source, truth, masks, tr, ref_sim, learned)
    keep = ep.get("keep_background") or {}
    keep_on, dilate = bool(keep.get("enabled", False)), int(keep.get("dilate", 1))
    # The teacher with the other keep_background setting too: the report shows what it changes.
    other = f"teacher_keep_background_{'off' if keep_on else 'on'}"
    order = list(runs)
    order.insert(order.index("teacher") + 1, other)
    runs = {name: runs[name if name != other else "teacher"] for name in order}
    for name, (model, steps, cfg) in runs.items():
        keeps = keep_on != (name == other)
        preds, seconds = _sample_benchmark(model, data, bundle, steps, shift, cfg, len(tr), dilate if keeps else None)
        outputs[name] = preds
        results[name] = _mean_scores(preds, truth, masks, tr, ref_sim, learned)
        results[name].update({"steps": steps, "cfg_scale": cfg, "keep_background": keeps,
                              "seconds_per_video": float(np.mean(seconds))})
        if name.startswith("student_4_") and "student_4" in results:  # a deployed form: its quality delta
            results[name]["quality_delta_vs_student_4"] = {k: results[name][k] - results["student_4"][k]
                                                           for k in TABLE_METRICS}
        log.info("eval %s (%d steps, cfg %.1f): %s", name, steps, cfg,
                 ", ".join(f"{k} {v:.3f}" for k, v in results[name].items() if isinstance(v, float)))
    summary = {
        "benchmark_items": len(tr), "resolution": [int(td["width"]), int(td["height"])], "frames": int(td["frames"]),
        "models": results,
        "implementations": {"psnr/ssim": "genbuild.metrics.classical (SSIM: Gaussian 11x11, sigma 1.5, luma)",
                            "mask_*/bg_*": "inside / outside the edit mask (pvtt.eval.regions)",
                            ref_sim.name: "cosine of the image encoder's first token, generated mask region vs the "
                                          "reference view, both letterboxed on grey (pvtt.eval.regions)",
                            "temporal_consistency": "1 - mean |f_t - warp(f_t+1)| / 255, OpenCV Farneback flow",
                            **{name: m.implementation for name, m in learned.items()}},
        "unavailable": unavailable,
    }
    with atomic_path(out_dir, directory=True) as tmp:
        shown = {n: o for n, o in outputs.items() if "quality_delta_vs_student_4" not in results[n]}  # forms look alike
        items = _write_media(tmp, tr, source, truth, shown)
        write_json(tmp / "metrics.json", summary)
        render(tmp / "report.html", "PVTT evaluation", summary, items,
               tables=[methods_table(model_dirs, results), deployment_table(results, engine_dir), training_table(model_dirs)],
               sections=dataset_sections(dataset_dir), notes=_report_notes(ep, unavailable, summary))
        write_manifest(tmp, "eval", params, [p / "model.safetensors" for p in model_dirs.values()],
                       {"benchmark_items": len(tr), "models": len(runs)})
    return summary


def dataset_sections(dataset_dir: Path) -> list[tuple[str, str]]:
    """The report's "Dataset" section from the dataset's card.json and its SVG plots (the dataset is
    an input of the eval rule); none when the dataset has no card."""
    card_file = Path(dataset_dir) / "card.json"
    if not card_file.is_file():
        return []
    card = read_json(card_file)
    plots = [(p, (Path(dataset_dir) / p).read_text(encoding="utf-8")) for p in card.get("plots", [])
             if (Path(dataset_dir) / p).is_file()]
    return [("Dataset", dataset_section(card, plots))]


def methods_table(model_dirs: dict[str, Path], results: dict[str, dict]) -> tuple[str, list[str], list[list]]:
    """The distillation methods side by side: each student's method, steps, quality on the
    benchmark, seconds per video and training cost (network forward-equivalents per the
    student's metrics.json, ``genbuild.train.cost``); student_4 and student_alt share their start."""
    rows = []
    for name in STUDENTS:
        if name not in model_dirs or name not in results or not (model_dirs[name] / "metrics.json").is_file():
            continue
        own, res = read_json(model_dirs[name] / "metrics.json"), results[name]
        ref = next((k for k in res if k.startswith("ref_sim_")), None)
        cost = (own.get("training_cost") or {}).get("forward_equivalents", float("nan"))
        rows.append([name, own.get("method", "dmd2"), res["steps"], *(res.get(k, float("nan")) for k in TABLE_METRICS),
                     res.get(ref, float("nan")) if ref else float("nan"), res["seconds_per_video"], own.get("iterations"),
                     cost])
    return ("Distillation methods (student_4 and student_alt both start from student_8)",
            ["student", "method", "steps", *TABLE_METRICS, "ref_sim", "seconds_per_video", "iterations",
             "training forward-equivalents"], rows)


def training_table(model_dirs: dict[str, Path]) -> tuple[str, list[str], list[list]]:
    """Every teacher phase's in-training evaluations (eval.csv), one row per checkpoint."""
    rows = []
    for name in PHASE_RULES:
        if name in model_dirs and (model_dirs[name] / "eval.csv").is_file():
            with open(model_dirs[name] / "eval.csv", newline="") as f:
                rows += [[name, int(r["step"])] + [float(r[c]) for c in EVAL_COLUMNS[1:]] for r in csv.DictReader(f)]
    return ("Training checkpoints (first val triplets, during training)", ["phase", *EVAL_COLUMNS], rows)


def main(argv=None) -> None:
    setup_logging()
    ap = parser("Evaluate the teacher, the students and the engine on the benchmark split.")
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--phases", nargs="*", type=Path, default=[], help="earlier teacher phases (teacher_phase1, teacher_phase2)")
    ap.add_argument("--students", nargs="*", type=Path, default=[])
    ap.add_argument("--engine", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    dirs = {"teacher": a.teacher, **{p.name: p for p in a.phases}, **{p.name: p for p in a.students}}
    evaluate(a.dataset, dirs, a.engine, a.out, a.params, a.threads)
