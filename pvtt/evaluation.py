"""Evaluation stage: every model on the benchmark split, weight-free metrics, metrics JSON + HTML report.

The teacher samples with ``eval.teacher_steps`` steps and CFG; each student with its own step
count and no CFG (guidance is distilled into it); the ONNX engine runs student_4's schedule.
The unedited template is scored too, as the do-nothing baseline. Metrics compare decoded
frames at the training resolution with the ground-truth edit: PSNR, SSIM, background PSNR
outside the edit region, temporal consistency (1 - flow warp error) and seconds per video.
Learned metrics (CLIP-I, DINO-I, FVD, LPIPS) need weights and arrive with the real backends.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from . import metrics as M
from .cli import parser, setup_logging
from .engine import OnnxDenoiser
from .io.atomic import atomic_path
from .io.jsonio import write_json
from .manifest import write_manifest
from .models.bundle import load_bundle
from .models.dit import PVTTDiT, read_config
from .models.sampler import sample
from .report import on_white, render, side_by_side, write_gif
from .train.data import encode, load_split

log = logging.getLogger(__name__)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8."""
    x = ((frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).numpy()


def score(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    bg = ~mask.astype(bool)
    return {"psnr": M.psnr(pred, truth), "ssim": M.ssim(pred, truth),
            "bg_psnr": M.psnr(pred, truth, bg), "temporal_consistency": M.temporal_consistency(pred)}


def evaluate(dataset_dir: Path, model_dirs: dict[str, Path], engine_dir: Path | None, out_dir: Path, params: dict,
             threads: int = 1) -> dict:
    ep, td = params["eval"], params["train_data"]
    teacher_dir = model_dirs["teacher"]
    bundle = load_bundle(teacher_dir)
    tr = load_split(dataset_dir, "benchmark", td, limit=int(ep["max_videos"]))
    data = encode(tr, bundle)
    shift = float(read_config(teacher_dir)["shift"])
    truth = [to_uint8(v) for v in tr.edited]
    source = [to_uint8(v) for v in tr.source]
    masks = [m[0].numpy() > 0.5 for m in tr.mask]
    runs: dict[str, tuple] = {"teacher": (bundle.dit, int(ep["teacher_steps"]), float(ep["cfg_scale"]))}
    for name in ("student_16", "student_8", "student_4"):
        if name in model_dirs:
            runs[name] = (PVTTDiT.load(model_dirs[name]), int(read_config(model_dirs[name])["steps"]), 1.0)
    if engine_dir is not None and (engine_dir / "student_4.onnx").exists():
        runs["student_4_onnx"] = (OnnxDenoiser(engine_dir / "student_4.onnx", threads), runs["student_4"][1], 1.0)
    results: dict[str, dict] = {"template_unedited": {}}
    outputs: dict[str, list[np.ndarray]] = {}
    per_item = [score(source[i], truth[i], masks[i]) for i in range(len(tr))]
    results["template_unedited"] = {k: float(np.mean([p[k] for p in per_item])) for k in per_item[0]}
    for name, (model, steps, cfg) in runs.items():
        if isinstance(model, torch.nn.Module):
            model.eval()
        preds, scores, seconds = [], [], []
        for i in range(len(tr)):
            cond = data.cond.select(slice(i, i + 1))
            noise = torch.randn(data.target[i:i + 1].shape, generator=torch.Generator().manual_seed(1000 + i))
            t0 = time.perf_counter()
            lat = sample(model, cond, noise, steps, shift, cfg)
            frames = bundle.codec.decode(lat)[0]
            seconds.append(time.perf_counter() - t0)
            pred = to_uint8(frames)
            preds.append(pred)
            scores.append(score(pred, truth[i], masks[i]))
        outputs[name] = preds
        results[name] = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        results[name].update({"steps": steps, "cfg_scale": cfg, "seconds_per_video": float(np.mean(seconds))})
        log.info("eval %s (%d steps, cfg %.1f): %s", name, steps, cfg,
                 ", ".join(f"{k} {v:.3f}" for k, v in results[name].items() if isinstance(v, float)))
    summary = {
        "benchmark_items": len(tr), "resolution": [int(td["width"]), int(td["height"])], "frames": int(td["frames"]),
        "models": results,
        "implementations": {"psnr/ssim": "pvtt.metrics (SSIM: Gaussian 11x11, sigma 1.5, luma)",
                            "temporal_consistency": "1 - mean |f_t - warp(f_t+1)| / 255, OpenCV Farneback flow",
                            "unavailable": ["clip_i", "dino_i", "fvd", "lpips", "musiq"]},
    }
    with atomic_path(out_dir, directory=True) as tmp:
        (tmp / "media").mkdir()
        items = []
        for i, key in enumerate(tr.keys):
            cols = [("template", source[i]), ("product", on_white(tr.reference_rgba[i])),
                    ("truth", truth[i])] + [(n.replace("student_", "s"), outputs[n][i]) for n in outputs]
            write_gif(tmp / "media" / f"{key}.gif", side_by_side(cols))
            items.append({"key": key, "caption": tr.captions[i], "gif": f"media/{key}.gif"})
        write_json(tmp / "metrics.json", summary)
        render(tmp / "report.html", "PVTT evaluation", summary, items, notes=[
            "Teacher: %d steps with CFG %.1f; students: their own steps, no CFG (distilled in)." % (int(ep["teacher_steps"]), float(ep["cfg_scale"])),
            "template_unedited scores the source clip itself: the do-nothing baseline.",
            "CLIP-I, DINO-I, FVD, LPIPS and MUSIQ need model weights and are reported as unavailable here.",
            "seconds_per_video = sampling + decoding one benchmark clip on this machine's CPU."])
        write_manifest(tmp, "eval", params, [p / "model.safetensors" for p in model_dirs.values()],
                       {"benchmark_items": len(tr), "models": len(runs)})
    return summary


def main(argv=None) -> None:
    setup_logging()
    ap = parser("Evaluate the teacher, the students and the engine on the benchmark split.")
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--students", nargs="*", type=Path, default=[])
    ap.add_argument("--engine", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    dirs = {"teacher": a.teacher, **{p.name: p for p in a.students}}
    evaluate(a.dataset, dirs, a.engine, a.out, a.params, a.threads)
