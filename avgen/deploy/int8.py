"""AVGen INT8: stage 3's network with weight-only int8 linears (``genbuild.quant``), and its quality delta.

The deliverable the plan asks for beside the bf16 model. What it costs in quality is measured
here on the val split, against the fp32 network it came from: the fixed-noise flow-matching
loss of both (joint, video-only, audio-only) and the relative L2 distance of their velocities on
the same noisy inputs. Both go to ``metrics.json`` with the bytes of each. The artifact holds
``model.safetensors`` (the quantised state dict), the fp32 architecture's configs (``model/``
without weights is not enough for Diffusers, so the per-module ``config.json`` files are kept)
and ``config.json`` copied from stage 3 with ``"quantization": "int8_weight_only"``.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.manifest import write_manifest
from genbuild.quant import load_quantized, quantize, weight_bytes
from genbuild.train.flow import call_model, noisy, shift_sigma

log = logging.getLogger("avgen.deploy.int8")

STAGE = "avgen_int8"
FORMAT = "int8_weight_only"


def load_int8(model_dir: str | Path):
    """The INT8 network of an ``avgen_int8`` artifact."""
    from avgen.models.network import AVGenNetwork

    model_dir = Path(model_dir)
    configs = {name: read_json(model_dir / "model" / name / "config.json") for name in ("backbone", "alignment",
                                                                                          "audio_decoder", "video_decoder")}
    net = AVGenNetwork.from_config({n: {k: v for k, v in c.items() if not k.startswith("_")} for n, c in configs.items()})
    return load_quantized(net, load_file(str(model_dir / "model.safetensors"))).eval()


@torch.no_grad()
def velocity_delta(ref, quant, val, shift: float, levels: int, seed: int = 7) -> float:
    """Relative L2 distance of the two networks' velocities at the same noisy joint inputs."""
    from avgen.train.train import batch_of

    x0, cond = batch_of(val, torch.arange(len(val)), "joint")
    g = torch.Generator().manual_seed(seed)
    num = den = 0.0
    for k in range(levels):
        s = shift_sigma(torch.full((len(x0),), (k + 0.5) / levels), shift)
        x_t = noisy(x0, torch.randn(x0.shape, generator=g), s)
        a, b = call_model(ref, x_t, s, cond), call_model(quant, x_t, s, cond)
        num += float(((a - b) ** 2).sum())
        den += float((a ** 2).sum())
    return round((num / max(den, 1e-30)) ** 0.5, 6)


def run(model_dir: str | Path, features: str | Path, out: str | Path, params: dict) -> dict:
    from avgen.models.network import AVGenNetwork
    from avgen.train.data import load_split
    from avgen.train.train import val_losses

    model_dir, shift, levels = Path(model_dir), float(params["train"]["common"]["shift"]), int(params["int8"]["eval_levels"])
    ref = AVGenNetwork.from_pretrained(model_dir / "model").eval()
    quant = AVGenNetwork.from_pretrained(model_dir / "model").eval()
    names = quantize(quant)
    val = load_split(features, "val")
    fp32, int8 = val_losses(ref, val, shift), val_losses(quant, val, shift)
    metrics = {"format": FORMAT, "quantized_linears": len(names), "bytes_fp32": weight_bytes(ref),
               "bytes_int8": weight_bytes(quant), "velocity_rel_l2": velocity_delta(ref, quant, val, shift, levels),
               **{f"val_loss_fp32_{m}": v for m, v in fp32.items()}, **{f"val_loss_int8_{m}": v for m, v in int8.items()},
               **{f"val_loss_delta_{m}": round(int8[m] - fp32[m], 6) for m in fp32}}
    metrics["compression"] = round(metrics["bytes_fp32"] / metrics["bytes_int8"], 3)
    with atomic_path(out, directory=True) as tmp:
        save_file({k: v.contiguous() for k, v in quant.state_dict().items()}, str(tmp / "model.safetensors"))
        for cfg in sorted((model_dir / "model").glob("*/config.json")):
            (tmp / "model" / cfg.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cfg, tmp / "model" / cfg.parent.name / "config.json")
        write_json(tmp / "config.json", {**read_json(model_dir / "config.json"), "quantization": FORMAT,
                                         "quantized_linears": names})
        write_json(tmp / "metrics.json", metrics)
        write_manifest(tmp, STAGE, params, sorted((model_dir / "model").rglob("*.safetensors")),
                       {"quantized_linears": len(names)}, extra={"metrics": metrics})
    log.info("%s: %d linears -> int8, %.1fx smaller; val loss joint %.4f -> %.4f; velocity rel. L2 %.4f", STAGE,
             len(names), metrics["compression"], fp32["joint"], int8["joint"], metrics["velocity_rel_l2"])
    return metrics


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Quantise AVGen stage 3 to weight-only INT8 and measure the quality delta on the val split.")
    ap.add_argument("--model", required=True, help="artifacts/avgen_stage3")
    ap.add_argument("--features", required=True, help="artifacts/avgen_features")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    run(args.model, args.features, args.out, args.params)
