"""Stage 3's high-quality subset, chosen by a params rule (``train.stage3.subset``).

The plan fine-tunes on "a curated subset"; here the curation is explicit and reproducible: clips
below ``min_sharpness`` (variance of the Laplacian) or ``min_snr_db`` are dropped, the rest are
ranked by ``rank_by`` (a filter measurement, ``snr_db`` / ``sharpness``, or how well the clip
matches its caption: ``clip_text`` = cosine of the CLIP frame and caption embeddings,
``clap_text`` = the same for CLAP audio) and the top ``top_fraction`` is kept (at least one).
"""
from __future__ import annotations

import math

import torch


def scores(data, rank_by: str) -> torch.Tensor:
    """One score per row of ``data`` (a ``FeatureSet`` or a memory-mapped ``FeatureStore``)."""
    if rank_by in ("snr_db", "sharpness"):
        return data.column(rank_by).clone()
    if rank_by == "clip_text":
        return data.cosine("clip_frames", "clip_text")
    if rank_by == "clap_text":
        return data.cosine("clap_audio", "clap_text")
    raise ValueError(f"params key 'train.stage3.subset.rank_by' must be snr_db, sharpness, clip_text or clap_text, "
                     f"got {rank_by!r}")


def select(data, rule: dict) -> tuple[object, dict]:
    """(the subset, a record of the choice: the rule, the sizes and the chosen ids)."""
    ok = torch.ones(len(data), dtype=torch.bool)
    if rule.get("min_sharpness") is not None:
        ok &= data.column("sharpness") >= float(rule["min_sharpness"])
    if rule.get("min_snr_db") is not None:
        ok &= data.column("snr_db") >= float(rule["min_snr_db"])
    eligible = torch.nonzero(ok).flatten()
    if len(eligible) == 0:
        raise ValueError(f"train.stage3.subset: no train clip passes min_sharpness/min_snr_db ({rule}); "
                         f"loosen them or check the filter measurements")
    s = scores(data, rule["rank_by"])[eligible]
    keep = max(1, math.floor(len(data) * float(rule["top_fraction"])))
    order = torch.argsort(-s, stable=True)[:keep]
    chosen = eligible[order].sort().values
    record = {"subset_rule": rule, "subset_size": len(chosen), "train_size": len(data), "subset_ids": data.id_list(chosen)}
    return data.subset(chosen), record
