"""The features artifact as training data: one split's arrays in memory, batches drawn from them.

The features stage already encoded everything (SD-VAE latents, log-mel, CLIP/CLAP text
embeddings), so a training step only indexes arrays. A sample's target is the flat joint vector
of ``avgen.models.conditions`` (its video latents and its mel, or one of them for a unimodal
batch): the kit's flow-matching code sees one tensor per sample whatever the modalities.
Held in memory: the sample and CI fit easily; at full scale the same arrays would be streamed
shard by shard (not built yet: noted in the README).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ARRAYS = ("latents", "mel", "clip_text", "clap_text", "clip_frames", "clap_audio", "snr_db", "sharpness")


@dataclass
class FeatureSet:
    """One split's features, as tensors (row i of every field is sample ``ids[i]``)."""

    ids: list[str]
    captions: list[str]
    latents: torch.Tensor      # (N, 4, F, h, w)
    mel: torch.Tensor          # (N, n_mels, T)
    clip_text: torch.Tensor    # (N, Dc)
    clap_text: torch.Tensor    # (N, Da)
    clip_frames: torch.Tensor  # (N, Dc): the clip's frames (mean embedding)
    clap_audio: torch.Tensor   # (N, Da): the clip's audio
    snr_db: torch.Tensor       # (N,) the filter's measurements
    sharpness: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx) -> FeatureSet:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return FeatureSet([self.ids[i] for i in idx.tolist()], [self.captions[i] for i in idx.tolist()],
                          *(getattr(self, a)[idx] for a in ARRAYS))


def split_files(features_dir: str | Path, split: str) -> list[Path]:
    return sorted((Path(features_dir) / "shards").glob(f"{split}-*.npz"))


def load_split(features_dir: str | Path, split: str) -> FeatureSet:
    """Every sample of ``split``; an empty split is an error naming the artifact."""
    files = split_files(features_dir, split)
    if not files:
        raise FileNotFoundError(f"{features_dir}/shards: no '{split}' features (is the features artifact built, "
                                f"and did the dataset put clips in the {split} split?)")
    parts = [dict(np.load(f)) for f in files]
    cat = {a: torch.from_numpy(np.concatenate([p[a] for p in parts]).astype(np.float32)) for a in ARRAYS}
    ids = [str(i) for p in parts for i in p["ids"]]
    captions = [str(c) for p in parts for c in p["captions"]]
    return FeatureSet(ids, captions, *(cat[a] for a in ARRAYS))
