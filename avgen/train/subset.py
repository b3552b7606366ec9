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
import torch.nn.functional as F

from avgen.train.data import FeatureSet


def scores(data: FeatureSet, rank_by: str) -> torch.Tensor:
    if rank_by in ("snr_db", "sharpness"):
        return getattr(data, rank_by).clone()
    if rank_by == "clip_text":
        return F.cosine_similarity(data.clip_frames, data.clip_text, dim=1)
    if rank_by == "clap_text":
        return F.cosine_similarity(data.clap_audio, data.clap_text, dim=1)
    raise ValueError(f"params key 'train.stage3.subset.rank_by' must be snr_db, sharpness, clip_text or clap_text, "
                     f"got {rank_by!r}")


def select(data: FeatureSet, rule: dict) -> tuple[FeatureSet, dict]:
    """(the subset, a record of the choice for the artifact's metrics)."""
    ok = torch.ones(len(data), dtype=torch.bool)
    if rule.get("min_sharpness") is not None:
        ok &= data.sharpness >= float(rule["min_sharpness"])
    if rule.get("min_snr_db") is not None:
        ok &= data.snr_db >= float(rule["min_snr_db"])
    eligible = torch.nonzero(ok).flatten()
    if len(eligible) == 0:
        raise ValueError(f"train.stage3.subset: no train clip passes min_sharpness/min_snr_db ({rule}); "
                         f"loosen them or check the filter measurements")
    s = scores(data, rule["rank_by"])[eligible]
    keep = max(1, math.floor(len(data) * float(rule["top_fraction"])))
    order = torch.argsort(-s, stable=True)[:keep]
    chosen = eligible[order].sort().values
    record = {"subset_rule": rule, "subset_size": len(chosen), "train_size": len(data),
              "subset_ids": [data.ids[i] for i in chosen.tolist()]}
    return data.take(chosen), record
