"""AVGen evaluation: the benchmark split x (stage 3, INT8) -> metrics and an HTML report with playable mp4s.

For each of the first ``eval.max_items`` benchmark clips, each model generates a clip from the
clip's caption (seeded: ``eval.seed`` + item), timed (seconds per sample, sampling + decoding).
Metrics, each with its implementation named (numbers differ between implementations):

- AV-Align (weight-free, ``avgen.eval.av_align``): audio onsets against optical-flow peaks; also
  on the ground truth and on the ground truth with its audio shifted by 0.5 s, the check that
  the metric sees synchronisation at all;
- CLIP score and CLAP score (``avgen.eval.scores``): the open_clip / CLAP encoders from local
  weights; with the sample's stand-in encoders they are reported unavailable, not a number;
- FVD (the kit's I3D, ``eval.fvd.weights``) and FAD (VGGish, ``eval.fad.weights``), generated vs
  ground-truth sets: reported unavailable, naming the path, when the weights are absent.

The report (``report.html``) shows each benchmark clip's ground truth beside each model's output,
as mp4s with their sound muxed in (H.264 + AAC, ``genbuild.io.av``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.av import write_av
from genbuild.io.jsonio import write_json
from genbuild.io.video import read_frames_bytes
from genbuild.manifest import write_manifest
from genbuild.metrics.learned import Unavailable

log = logging.getLogger("avgen.eval.eval")

STAGE = "avgen_eval"
SHIFT_SECONDS = 0.5


def ground_truth(dataset: Path, n: int) -> list[dict]:
    """The first ``n`` benchmark clips (shard order): frames, audio, caption, id."""
    from avgen.pack.format import iter_samples, split_shards

    out = []
    for shard in split_shards(dataset, "benchmark"):
        for s in iter_samples(shard):
            out.append({"id": s["meta"]["id"], "caption": s["caption"], "frames": read_frames_bytes(s["mp4"]), "audio": s["audio"],
                        "sample_rate": s["sample_rate"], "fps": s["meta"]["fps"]})
            if len(out) == n:
                return out
    if not out:
        raise FileNotFoundError(f"{dataset}: no benchmark clips (pack.benchmark_fraction is 0, or too few clips kept)")
    return out


def shifted(audio: np.ndarray, sr: int, seconds: float = SHIFT_SECONDS) -> np.ndarray:
    """The audio delayed by ``seconds`` (zeros in front, same length): a clip out of sync by that much."""
    k = int(round(seconds * sr))
    return np.concatenate([np.zeros(k, np.float32), audio[:len(audio) - k]]) if k < len(audio) else np.zeros_like(audio)


def _av_align(items: list[dict], tol: int, audio_key: str = "audio") -> float:
    from avgen.eval.av_align import av_align

    return round(float(np.mean([av_align(i["frames"], i["fps"], i[audio_key], i["sample_rate"], tol) for i in items])), 4)


def _set_metric(load, score, what: str) -> dict:
    """A set metric (FVD, FAD): its value, or unavailable with the reason (weights absent)."""
    try:
        metric = load()
    except Unavailable as e:
        return {"value": None, "available": False, "reason": str(e)}
    return {"value": round(float(score(metric)), 4), "available": True,
            "implementation": getattr(metric, "implementation", what)}


def score_model(gen: list[dict], truth: list[dict], encoders, params: dict) -> dict:
    from avgen.eval.scores import clap_score, clip_score
    from genbuild.metrics.learned import load_metric
    from genbuild.metrics.vggish import load_fad

    ev, (clip, clap) = params["eval"], encoders
    sr = gen[0]["sample_rate"]
    return {
        "av_align": _av_align(gen, int(ev["av_align_tolerance"])),
        "clip_score": clip_score(clip, [g["frames"] for g in gen], [t["caption"] for t in truth]),
        "clap_score": clap_score(clap, [g["audio"] for g in gen], sr, [t["caption"] for t in truth]),
        "fvd": _set_metric(lambda: load_metric("fvd", ev["fvd"]), lambda m: m.score_set([g["frames"] for g in gen],
                                                                                         [t["frames"] for t in truth]), "fvd"),
        "fad": _set_metric(lambda: load_fad(ev["fad"]["weights"]),
                           lambda m: m.score([t["audio"] for t in truth], [g["audio"] for g in gen], sr), "fad"),
        "seconds_per_sample": round(float(np.mean([g["seconds"] for g in gen])), 4),
    }


def generate_all(model_dir: Path, truth: list[dict], params: dict) -> list[dict]:
    from avgen.deploy.generate import Generator

    ev = params["eval"]
    gen = Generator(model_dir)
    gen.generate(truth[0]["caption"], 0, 1, float(ev["cfg_scale"]))  # warm-up: one-time costs are not seconds per sample
    out = []
    for k, t in enumerate(truth):
        g = gen.generate(t["caption"], int(ev["seed"]) + k, int(ev["steps"]), float(ev["cfg_scale"]))
        out.append({"id": t["id"], "frames": g.frames, "audio": g.audio, "fps": g.fps, "sample_rate": g.sample_rate,
                    "seconds": g.seconds})
        log.info("%s: %s item %d/%d generated in %.2f s", STAGE, model_dir.name, k + 1, len(truth), g.seconds)
    return out


def run(dataset: str | Path, features: str | Path, models: dict[str, Path], out: str | Path, params: dict) -> dict:
    from avgen.eval.report import write_report
    from avgen.features.encoders import build_encoders

    ev = params["eval"]
    truth = ground_truth(Path(dataset), int(ev["max_items"]))
    for t in truth:
        t["audio_shifted"] = shifted(t["audio"], t["sample_rate"])
    tol = int(ev["av_align_tolerance"])
    metrics = {"items": len(truth), "ground_truth": {"av_align": _av_align(truth, tol),
                                                     f"av_align_audio_shifted_{SHIFT_SECONDS}s": _av_align(truth, tol, "audio_shifted")}}
    encoders = build_encoders(params["features"], Path("."), allow_stand_in=True)
    outputs = {}
    for name, model_dir in models.items():
        outputs[name] = generate_all(Path(model_dir), truth, params)
        metrics[name] = score_model(outputs[name], truth, encoders, params)
    with atomic_path(out, directory=True) as tmp:
        (tmp / "media").mkdir()
        for t in truth:
            write_av(tmp / "media" / f"{t['id']}_truth.mp4", t["frames"], t["fps"], t["audio"], t["sample_rate"])
            for name, gen in outputs.items():
                g = next(x for x in gen if x["id"] == t["id"])
                write_av(tmp / "media" / f"{t['id']}_{name}.mp4", g["frames"], g["fps"], g["audio"], g["sample_rate"])
        write_json(tmp / "metrics.json", metrics)
        write_report(tmp / "report.html", metrics, [t["id"] for t in truth], {t["id"]: t["caption"] for t in truth},
                     list(models))
        write_manifest(tmp, STAGE, params, [p for m in models.values() for p in sorted(Path(m).rglob("*.safetensors"))],
                       {"items": len(truth)}, extra={"metrics": metrics})
    return metrics


def main(argv: list[str] | None = None) -> None:
    import torch

    cli.setup_logging()
    ap = cli.parser("Evaluate AVGen stage 3 and its INT8 model on the benchmark split; write metrics and a report.")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--model", required=True, help="artifacts/avgen_stage3")
    ap.add_argument("--int8", required=True, help="artifacts/avgen_int8")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    m = run(args.dataset, args.features, {"stage3": Path(args.model), "int8": Path(args.int8)}, args.out, args.params)
    log.info("%s: %s", STAGE, m)
