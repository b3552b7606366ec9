"""Quality filter L1/L2 for synthesised pairs (one pairs shard at a time).

L1 (composite fidelity)
  * ``bg_ssim``: SSIM (luma, metrics.ssim) between the edited video and the source clip
    outside the *dilated union* of the original and the new product masks. The dilation
    radius is ``max(4, ceil(0.03 * max(H, W)))`` px, so it covers the inpainted band around
    the removed product at any resolution. Pass when ``>= filter.l1.min_bg_ssim``.
  * ``presence``: fraction of frames whose new product mask is non-empty. Pass when
    ``>= filter.l1.min_presence``.

L2 (video quality)
  * ``warp_error``: metrics.warp_error of the edited video over consecutive frame pairs
    (t, t+1) for every ``WARP_STRIDE``-th t (t = 0, 2, 4, ...): half the optical-flow work,
    same meaning as the full metric. Pass when ``<= filter.l2.max_warp_error``.
  * ``sharpness_ratio``: metrics.sharpness of the edited frames over source frames inside the
    new product's bounding box (per frame, padded by ``BBOX_PAD`` px; the whole frame where
    the new mask is empty in every frame). Pass when ``>= filter.l2.min_sharpness_ratio``.

L2, learned (optional, ``filter.l2.learned``; off when absent/null): CLIP-I and DINO-I of the
edited video's product crops vs the reference image, MUSIQ of the edited frames and CLIP temporal
consistency, from local weights through genbuild.metrics.learned's loaders (see :mod:`pvtt.filter.learned`).
Each configured score is a gate with its own ``min``; missing weights stop the stage.

L3, VLM (optional, ``filter.l3.vlm``; off when absent/null): a Qwen2-VL model scores the pairs that
pass L1 and L2 from a few edited frames, the reference and the caption (see :mod:`pvtt.filter.vlm`);
the human part of L3 (a review sheet of a sample) is :mod:`pvtt.filter.review`.

A pair is kept when L1, L2 (and the L3 VLM score, when configured) pass. Failures go to
``rejects.jsonl`` (stage ``filter``) with reasons such as ``"l1: bg_ssim 0.7100 < 0.85"``,
``"l2: clip_i 0.2100 < 0.25"`` or ``"l3: vlm_score 4 < 6"``; unreadable inputs are rejected with
an ``"error: ..."`` reason and left out of ``scores.json``. With learned scores or the VLM on,
``scores.json`` also names the networks used (``models``).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from genbuild import stage as cli
from genbuild.hf_loading import WeightsLayoutError
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.io.masks import load_masks
from genbuild.io.rejects import Rejects
from genbuild.io.video import MediaError, read_frames, read_image
from genbuild.metrics import classical as metrics
from genbuild.weights import MissingWeightsError
from pvtt.filter import learned as filter_learned
from pvtt.filter import vlm as vlm_score

log = logging.getLogger("pvtt.filter")

STAGE = "filter"
WARP_STRIDE = 2          # flow-based metric on pairs (t, t+1) for t = 0, 2, 4, ...
BBOX_PAD = 4             # px around the new product's bbox for the sharpness ratio
EPS = 1e-6


def _number(params: dict, key: str, lo: float | None = None, hi: float | None = None) -> float:
    try:
        v = cli.get(params, key)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"params key '{key}' must be a finite number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"params key '{key}' must be in [{lo}, {hi if hi is not None else 'inf'}], got {v!r}")
    return float(v)


def thresholds(params: dict) -> dict:
    """Validate and return the four thresholds; a bad or missing value raises ValueError naming its key."""
    return {
        "min_bg_ssim": _number(params, "filter.l1.min_bg_ssim", -1.0, 1.0),
        "min_presence": _number(params, "filter.l1.min_presence", 0.0, 1.0),
        "max_warp_error": _number(params, "filter.l2.max_warp_error", 0.0),
        "min_sharpness_ratio": _number(params, "filter.l2.min_sharpness_ratio", 0.0),
    }


def dilation_radius(h: int, w: int) -> int:
    return max(4, math.ceil(0.03 * max(h, w)))


def _dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return np.stack([cv2.dilate(m.astype(np.uint8), k) > 0 for m in masks])


def _bbox(mask: np.ndarray, pad: int) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    h, w = mask.shape
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)
    return int(y0), int(y1), int(x0), int(x1)


def _r(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def score_pair(source: np.ndarray, edited: np.ndarray, old_masks: np.ndarray, new_masks: np.ndarray,
               th: dict) -> dict:
    """Score one pair from decoded frames (N,H,W,3) and bool masks (N,H,W).

    Returns {"l1": {"bg_ssim","presence","pass"}, "l2": {"warp_error","sharpness_ratio","pass"},
    "kept", "reasons"}; shape mismatches raise ValueError.
    """
    n = len(source)
    for name, arr in (("edited", edited), ("original mask", old_masks), ("new mask", new_masks)):
        if arr.shape[:3] != source.shape[:3]:
            raise ValueError(f"{name} shape {tuple(arr.shape[:3])} != source clip {tuple(source.shape[:3])}")
    h, w = source.shape[1:3]
    edit_region = _dilate(np.logical_or(old_masks, new_masks), dilation_radius(h, w))
    bg = ~edit_region
    bg_ssim = metrics.ssim(source, edited, mask=bg) if bg.any() else float("nan")
    presence = float(np.mean([m.any() for m in new_masks])) if n else 0.0

    pairs = [edited[t:t + 2] for t in range(0, n - 1, WARP_STRIDE)]
    warp_err = float(np.mean([metrics.warp_error(p) for p in pairs])) if pairs else 0.0

    src_crops, edt_crops = [], []
    for t in range(n):
        bb = _bbox(new_masks[t], BBOX_PAD)
        if bb is None:
            continue
        y0, y1, x0, x1 = bb
        src_crops.append(metrics.sharpness(source[t, y0:y1, x0:x1]))
        edt_crops.append(metrics.sharpness(edited[t, y0:y1, x0:x1]))
    if src_crops:
        s_src, s_edt = float(np.mean(src_crops)), float(np.mean(edt_crops))
    else:
        s_src, s_edt = metrics.sharpness(source), metrics.sharpness(edited)
    sharp_ratio = (s_edt + EPS) / (s_src + EPS)

    reasons = []
    if not math.isfinite(bg_ssim):
        reasons.append("l1: bg_ssim undefined (no background pixels outside the edit region)")
    elif bg_ssim < th["min_bg_ssim"]:
        reasons.append(f"l1: bg_ssim {bg_ssim:.4f} < {th['min_bg_ssim']:g}")
    if presence < th["min_presence"]:
        reasons.append(f"l1: presence {presence:.4f} < {th['min_presence']:g}")
    l1_pass = not reasons
    n_l1 = len(reasons)
    if warp_err > th["max_warp_error"]:
        reasons.append(f"l2: warp_error {warp_err:.4f} > {th['max_warp_error']:g}")
    if sharp_ratio < th["min_sharpness_ratio"]:
        reasons.append(f"l2: sharpness_ratio {sharp_ratio:.4f} < {th['min_sharpness_ratio']:g}")
    l2_pass = len(reasons) == n_l1
    return {
        "l1": {"bg_ssim": _r(bg_ssim), "presence": _r(presence), "pass": l1_pass},
        "l2": {"warp_error": _r(warp_err), "sharpness_ratio": _r(sharp_ratio), "pass": l2_pass},
        "kept": l1_pass and l2_pass,
        "reasons": reasons,
    }


def _load_pair(pair: dict, work: Path, synth_dir: Path) -> tuple[np.ndarray, ...]:
    pid = pair["id"]
    src_path = work / pair["clip_path"]
    edt_path = synth_dir / pid / "edited.mp4"
    old_path = work / pair["mask_path"]
    new_path = synth_dir / pid / "mask.npy.gz"
    for p in (old_path, new_path):
        if not p.exists():
            raise MediaError(f"{p}: no such file")
    source = read_frames(src_path)
    edited = read_frames(edt_path)
    try:
        old_masks = load_masks(old_path)
        new_masks = load_masks(new_path)
    except (OSError, ValueError, EOFError) as e:
        raise MediaError(f"cannot read masks ({e.__class__.__name__}: {e})") from e
    if len(edited) != len(source):
        raise ValueError(f"edited video has {len(edited)} frames, source clip {len(source)}")
    return source, edited, old_masks, new_masks


def _reference(pair: dict, work: Path) -> np.ndarray:
    """The pair's reference image (the products-stage RGBA cut-out) on white, squared; MediaError if unreadable."""
    if not pair.get("reference_path"):
        raise MediaError("pair has no reference_path")
    return filter_learned.reference_on_white(read_image(work / pair["reference_path"], mode="RGBA"))


def _add_learned(res: dict, values: dict, reasons: list[str]) -> None:
    """Merge learned L2 scores into a score_pair result (after the weight-free L2 reasons)."""
    res["l2"].update(values)
    if reasons:
        res["l2"]["pass"] = False
        res["reasons"] = res["reasons"] + reasons
    res["kept"] = res["l1"]["pass"] and res["l2"]["pass"]


def run(params: dict, work: str | Path, pairs_file: str | Path, synth_dir: str | Path, out: str | Path,
        root: str | Path = ".") -> dict:
    """Score every synthesised pair of one shard; write OUT/scores.json and OUT/rejects.jsonl.

    ``root``: where the weights paths of ``filter.l2.learned`` / ``filter.l3.vlm`` are relative to (the
    repo root in the build). Configured learned scores or VLM whose weights are missing raise
    MissingWeightsError before anything is scored.
    """
    th = thresholds(params)
    filter_learned.read_config(params)     # validate both configs before loading any network
    vlm_score.read_config(params)
    learned = filter_learned.load(params, root)
    vlm = vlm_score.load(params, root)
    work, pairs_file, synth_dir = Path(work), Path(pairs_file), Path(synth_dir)
    pairs_doc = read_json(pairs_file)
    shard = pairs_doc.get("shard", pairs_file.stem)
    by_id = {p["id"]: p for p in pairs_doc.get("pairs", [])}
    synth_json = synth_dir / "synth.json"
    if not synth_json.exists():
        raise FileNotFoundError(f"{synth_json}: synth stage output missing")
    synth_status = read_json(synth_json).get("pairs", {})
    ok_ids = sorted(pid for pid, s in synth_status.items() if isinstance(s, dict) and s.get("status") == "ok")
    rejects = Rejects(STAGE)
    scores: dict[str, dict] = {}
    for i, pid in enumerate(ok_ids):
        pair = by_id.get(pid)
        if pair is None:
            rejects.add(pid, "error: synthesised pair not in the pairs shard", shard=shard)
            continue
        try:
            frames = _load_pair(pair, work, synth_dir)
            res = score_pair(*frames, th)
            edited, new_masks = frames[1], frames[3]
            ref = _reference(pair, work) if learned and learned.needs_reference else None
            if learned:
                _add_learned(res, *learned.score(edited, new_masks, ref))
            if vlm:
                if res["kept"]:  # cascade: the VLM only judges what L1/L2 keep
                    l3, why = vlm.score(edited, ref if ref is not None else _reference(pair, work), pair)
                else:
                    l3, why = {"vlm_score": None, "vlm_answer": None, "pass": None, "skipped": "rejected by l1/l2"}, []
                res["l3"] = l3
                res["reasons"] = res["reasons"] + why
                res["kept"] = res["kept"] and bool(l3["pass"])
        except (MediaError, ValueError) as e:
            rejects.add(pid, f"error: {e}", shard=shard)
            continue
        scores[pid] = res
        if not res["kept"]:
            extra = {"l3": res["l3"]} if "l3" in res else {}
            rejects.add(pid, "; ".join(res["reasons"]), shard=shard, l1=res["l1"], l2=res["l2"], **extra)
        learned_log = "".join(f" {k}={res['l2'].get(k)}" for k in (learned.metrics if learned else ()))
        vlm_log = f" vlm={res['l3']['vlm_score']}" if "l3" in res else ""
        log.info("[%d/%d] %s: bg_ssim=%s presence=%s warp=%s sharp=%s%s%s -> %s", i + 1, len(ok_ids), pid,
                 res["l1"]["bg_ssim"], res["l1"]["presence"], res["l2"]["warp_error"],
                 res["l2"]["sharpness_ratio"], learned_log, vlm_log, "kept" if res["kept"] else "rejected")
    doc = {"shard": shard, "pairs": scores}
    models = {**(learned.implementation if learned else {}), **({"vlm": vlm.implementation} if vlm else {})}
    if models:
        doc["models"] = models
    with atomic_path(out, directory=True) as tmp:
        write_json(tmp / "scores.json", doc)
        rejects.write(tmp / "rejects.jsonl")
    kept = sum(1 for r in scores.values() if r["kept"])
    log.info("shard %s: %d synthesised, %d scored, %d kept, %d rejected %s", shard, len(ok_ids), len(scores),
             kept, len(rejects), rejects.by_reason())
    return doc


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Filter L1/L2 (background SSIM, presence, warp error, sharpness ratio; optional learned "
                    "scores) and the optional L3 VLM score.")
    ap.add_argument("--work", required=True, help="work directory (clip/mask paths in pairs are relative to it)")
    ap.add_argument("--pairs", required=True, help="pairs shard JSON (work/pairs/shard-XXXX.json)")
    ap.add_argument("--synth", required=True, help="synth shard directory (work/synth/shard-XXXX)")
    ap.add_argument("--out", required=True, help="output directory (work/filter/shard-XXXX)")
    ap.add_argument("--root", default=".", help="directory the weights paths in params are relative to")
    a = ap.parse_args(argv)
    try:
        run(a.params, a.work, a.pairs, a.synth, a.out, a.root)
    except (MissingWeightsError, WeightsLayoutError) as e:
        log.error("%s", e)
        raise SystemExit(f"filter: {e}") from None


if __name__ == "__main__":
    main()
