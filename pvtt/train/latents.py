"""Latent cache stage: encode the packed train and val splits once, so training reads tensors.

Decoding mp4s and running the codec and the frozen condition encoders costs more than a
tiny training step and is the same for the teacher and all three students; done here once,
the training rules load a few safetensors files instead. The files hold, per split, the
edited-video latents (the target) and the conditions (source latents, mask latents,
reference-image tokens, caption tokens), plus the sample keys in the metadata.

The components (codec, encoders, preset's text width) are written to ``components.json`` and
the clip geometry to ``train_data.json``; a trainer whose params ask for others refuses with a
message naming both, instead of training on tensors from another encoder or resolution.

When teacher phase 1 trains another model or resolution (``teacher_phases.phase1.model`` /
``.train_data``: the seed's 1.3B prototype at 480p), its cache is encoded too, into
``phase1/`` inside the same artifact.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_json
from genbuild.manifest import write_manifest
from genbuild.stage import parser, setup_logging
from pvtt.models.bundle import components_from_params, encoders_for
from pvtt.models.conditions import Conditions
from pvtt.train.data import Encoded, encode
from pvtt.train.loader import load_all, shard_paths
from pvtt.train.phases import phase1_spec

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
FIELDS = ("target", "source", "mask", "image_tokens", "text_tokens")


def encode_dataset(dataset_dir: Path, out_dir: Path, params: dict, workers: int = 0) -> dict:
    """Write the cache of the top-level model/train_data, plus ``phase1/`` when phase 1 differs.

    ``workers`` processes decode the shards (``pvtt.train.loader``) while this one encodes."""
    with atomic_path(out_dir, directory=True) as tmp:
        counts, inputs = _encode_spec(dataset_dir, tmp, params.get("model", {}), params["train_data"], workers)
        spec = phase1_spec(params)
        if spec:
            log.info("latents: teacher phase 1 trains %s at %sx%s: encoding its cache into phase1/", spec[0].get("preset"),
                     spec[1]["width"], spec[1]["height"])
            counts["phase1"], _ = _encode_spec(dataset_dir, tmp / "phase1", *spec, workers)
        write_manifest(tmp, "latents", params, inputs, counts)
    return counts


def _encode_spec(dataset_dir: Path, tmp: Path, model: dict, td: dict, workers: int) -> tuple[dict, list[Path]]:
    components = components_from_params(model, td)  # kinds and placement (model.device / model.dtype) from params
    bundle = encoders_for(components)
    log.info("latents: codec %s, image encoder %s, text encoder %s, on %s in %s (model.device / model.dtype)",
             *(components[c]["kind"] for c in ("codec", "image_encoder", "text_encoder")), components["device"],
             components["dtype"])
    counts, inputs = {}, []
    tmp.mkdir(exist_ok=True)
    for split in SPLITS:
        try:
            paths = shard_paths(dataset_dir, split)
        except FileNotFoundError:
            if split == "train":
                raise
            log.info("latents: no '%s' split in %s: the trainers validate on train", split, dataset_dir)
            continue
        enc = encode(load_all(dataset_dir, split, td, workers), bundle)
        tensors = {"target": enc.target, **{f: getattr(enc.cond, f) for f in FIELDS[1:]}}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / f"{split}.safetensors"),
                  metadata={"keys": json.dumps(enc.keys)})
        counts[split] = len(enc)
        inputs += paths
        log.info("latents: %s: %d triplets, target %s, image tokens %s, text tokens %s", split, len(enc),
                 tuple(enc.target.shape), tuple(enc.cond.image_tokens.shape), tuple(enc.cond.text_tokens.shape))
    write_json(tmp / "components.json", components)
    write_json(tmp / "train_data.json", td)
    return counts, inputs


def read_split(latents_dir: Path, split: str) -> Encoded:
    path = Path(latents_dir) / f"{split}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{latents_dir}: no '{split}' latents (is the latents stage built?)")
    with safe_open(str(path), "pt") as f:
        keys = json.loads(f.metadata()["keys"])
        t = {name: f.get_tensor(name) for name in FIELDS}
    return Encoded(keys, t["target"], Conditions(*(t[name] for name in FIELDS[1:])))


def latent_files(latents_dir: Path) -> list[Path]:
    """The files a trainer reads: its inputs for the manifest and the checkpoint fingerprint."""
    d = Path(latents_dir)
    names = ("components.json", "train_data.json", *(f"{s}.safetensors" for s in SPLITS))
    return [d / n for n in names if (d / n).is_file()]


def load_latents(latents_dir: Path, components: dict, train_data: dict | None = None) -> tuple[Encoded, Encoded]:
    """(train, val) latents, val falling back to train when the dataset has no val split.

    ``components`` (and ``train_data`` when given) are the ones the model will be trained or
    distilled with; they must be the ones the latents were encoded with.
    """
    d = Path(latents_dir)
    if not (d / "components.json").is_file():
        raise FileNotFoundError(f"{d}: no latent cache here (build it: snakemake artifacts/latents)")
    have = json.loads((d / "components.json").read_text())
    if have != components:
        raise ValueError(f"{latents_dir} was encoded with components {have}, but the model uses {components}: "
                         "rebuild the latents (snakemake artifacts/latents) with the same model/train_data params")
    have_td = json.loads((d / "train_data.json").read_text()) if (d / "train_data.json").is_file() else None
    if train_data is not None and have_td is not None and have_td != dict(train_data):
        raise ValueError(f"{latents_dir} holds clips encoded with train_data {have_td}, but this run asks for "
                         f"{dict(train_data)}: rebuild the latents with the same train_data params")
    train = read_split(latents_dir, "train")
    try:
        val = read_split(latents_dir, "val")
    except FileNotFoundError:
        val = train
    return train, val


def main(argv=None) -> None:
    setup_logging()
    ap = parser("Encode the packed train/val splits once (codec latents, image and caption tokens).")
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    encode_dataset(a.dataset, a.out, a.params, workers=max(0, a.threads - 1))
