"""The model's frozen components as params name them: kinds, placement, and the stand-in rule.

Three components condition the DiT: the latent ``codec``, the reference ``image_encoder`` and the
caption ``text_encoder`` (``model.<component>.kind``). Each kind is either *real* (loads published
weights from a local path) or a *stand-in* (weight-free or seeded random, with the real shapes:
what the sample and CI run).

Placement, as a Diffusers user sets ``torch_dtype`` and ``.to(device)``: ``model.device``
(``auto | cpu | cuda | cuda:N``) and ``model.dtype`` (``auto | float32 | bfloat16 | float16``) apply
to every component; ``model.<component>.device`` / ``.dtype`` override one (Wan's own code runs its
VAE in float32). ``auto``: CUDA when there is one, and bfloat16 on CUDA, float32 on the CPU. A
component computes on its device in its dtype and hands back float32 tensors on the device its
input came from (captions: the CPU), so callers never see the placement. The DiT itself is the
trained network: the trainer places it (one GPU per rank) and ``teacher.precision`` sets its
autocast.

No silent stand-in at scale: ``stand_in_error`` (raised by ``pvtt.pipeline.check_params`` at
start-up) stops a build that loads real base weights (``model.base``) while a stand-in sits in the
conditioning path, naming each key, unless ``model.allow_stand_ins`` lists that component.

No torch at import time: the Snakefile imports this through ``pvtt.pipeline``.
"""
from __future__ import annotations

import re

COMPONENTS = ("codec", "image_encoder", "text_encoder")

# What a component is when params do not say: the sample's stand-ins.
DEFAULTS: dict[str, dict] = {
    "codec": {"kind": "space_to_depth", "factor": 4},
    "image_encoder": {"kind": "tiny", "seed": 0},
    "text_encoder": {"kind": "hashed", "max_len": 16},
}

# kind -> what it is, for the stand-in rule and the error messages.
KINDS: dict[str, dict[str, str | None]] = {
    "codec": {"space_to_depth": "exact space-to-depth reshaping, not the Wan VAE", "wan_vae": None, "wan22_vae": None},
    "image_encoder": {"tiny": "frozen random patch projection, not CLIP ViT-H or DINOv2", "clip_vit_h": None,
                      "dinov2": None},
    "text_encoder": {"hashed": "random hashed word embeddings, not umT5", "umt5": None},
}

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
DEFAULT_DEVICE, DEFAULT_DTYPE = "cpu", "float32"  # a checkpoint or cache written before placement existed


def component_cfg(model: dict, name: str) -> dict:
    """``model.<name>`` as configured, or the sample's default."""
    return dict(model.get(name) or DEFAULTS[name])


def stand_ins(model: dict) -> dict[str, str]:
    """{component: kind} of the stand-ins this ``model`` section configures."""
    out = {}
    for name in COMPONENTS:
        kind = component_cfg(model, name).get("kind", DEFAULTS[name]["kind"])
        if KINDS[name].get(kind):
            out[name] = kind
    return out


def stand_in_error(ns: dict, prefix: str = "pvtt.") -> str | None:
    """Why the build must stop, when real base weights would be trained with a stand-in in the
    conditioning path (``pvtt.pipeline.check_params`` raises it at start-up); else None.

    ``ns``: the pipeline's params (``model``, ``teacher_phases``). Checks the top-level model and,
    when teacher phase 1 overrides it (``teacher_phases.phase1.model``), the merged phase-1 model.
    The error names each stand-in's key and the base that makes it wrong.
    """
    top = dict(ns.get("model") or {})
    over = dict(((ns.get("teacher_phases") or {}).get("phase1") or {}).get("model") or {})
    p1 = f"{prefix}teacher_phases.phase1.model"
    checks = [(top, {k: f"{prefix}model.{k}" for k in (*COMPONENTS, "base")})]
    if over:
        checks.append(({**top, **over}, {k: f"{p1 if k in over else prefix + 'model'}.{k}" for k in (*COMPONENTS, "base")}))
    msgs, names = [], set()
    for model, keys in checks:
        if not model.get("base"):
            continue
        allowed = set(model.get("allow_stand_ins") or [])
        bad = {name: kind for name, kind in stand_ins(model).items() if name not in allowed}
        if bad:
            names |= set(bad)
            listed = "; ".join(f"{keys[name]}.kind: {kind} ({'' if model.get(name) else 'unset, so the default: '}"
                               f"{KINDS[name][kind]})" for name, kind in bad.items())
            msgs.append(f"params: {keys['base']} loads real weights ({model['base']}), but the conditioning path "
                        f"has weight-free stand-ins: {listed}")
    if not msgs:
        return None
    return ("\n  ".join(msgs) + "\n  Configure the real components (README, \"Models\"), or, if this is wanted, say "
            f"so by name: {prefix}model.allow_stand_ins: [{', '.join(sorted(names))}]")


def placement_names(components: dict, name: str) -> tuple[str, str, str, str]:
    """(device, dtype, device key, dtype key) of one component: its own override, else the model's."""
    cfg = components.get(name) or {}
    dev_key = f"model.{name}.device" if "device" in cfg else "model.device"
    dt_key = f"model.{name}.dtype" if "dtype" in cfg else "model.dtype"
    return (str(cfg.get("device", components.get("device", DEFAULT_DEVICE))),
            str(cfg.get("dtype", components.get("dtype", DEFAULT_DTYPE))), dev_key, dt_key)


def resolve_placement(device: str, dtype: str, device_key: str = "model.device", dtype_key: str = "model.dtype"):
    """(torch.device, torch.dtype) for params names; ``auto`` as the module docstring says.

    An explicit ``cuda`` where there is no CUDA device stops, naming the key (no silent CPU run)."""
    import torch

    device, dtype = str(device), str(dtype)
    if not re.match(DEVICE_PATTERN, device):
        raise ValueError(f"{device_key}: {device!r} is not a device (auto, cpu, cuda or cuda:N)")
    if dtype not in DTYPES:
        raise ValueError(f"{dtype_key}: {dtype!r} is not a dtype ({', '.join(DTYPES)})")
    cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    elif device.startswith("cuda") and not cuda:
        raise ValueError(f"{device_key}: {device!r}, but this machine has no CUDA device (use 'cpu' or 'auto', or "
                         "run the job where the GPUs are: resources.train / resources.eval)")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{device_key}: {device!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dtype == "auto":
        dtype = "bfloat16" if dev.type == "cuda" else "float32"
    return dev, getattr(torch, dtype)
