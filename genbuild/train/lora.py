"""LoRA on the PVTT DiT with peft: which layers adapt, what else trains, save, merge.

A pretrained Wan DiT is too large to fine-tune whole at 14B, and its prior is what we want to
keep; LoRA adapts chosen linear layers of every block (``targets``: self-attention q/k/v/o,
cross-attention q/k/v/o, the FFN), while the weights PVTT adds (the patch embedding with the
source and mask channels, the image branch) train in full (``train_modules``), since they
start at zero and have no pretrained value to keep.

Adapters are injected with peft's ``inject_adapter_in_model`` (no wrapper class, so the
module tree, forward and checkpoints stay the PVTT DiT's). ``adapter_state`` is what
``save_adapter`` writes alone as safetensors; ``merge_lora`` folds the adapters into the base
linears and removes them, giving back a plain PVTT DiT (same keys as before LoRA) for the
students, the ONNX engine and the evaluation.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

log = logging.getLogger(__name__)

TARGETS = {
    "self_attn": r"self_attn\.(q|k|v|o)",
    "cross_attn": r"cross_attn\.(q|k|v|o)",
    "ffn": r"ffn\.(0|2)",
}
DEFAULT_TRAIN_MODULES = ("patch_embedding", "img_emb", "cross_attn.k_img", "cross_attn.v_img", "cross_attn.norm_k_img")


def target_regex(targets: list[str]) -> str:
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"teacher.lora.targets: {unknown or 'empty'} (known: {', '.join(TARGETS)})")
    return r"blocks\.\d+\.(" + "|".join(TARGETS[t] for t in targets) + ")"


def apply_lora(dit: torch.nn.Module, cfg: dict) -> dict:
    """Inject LoRA into ``dit.wan`` and set requires_grad: adapters and ``train_modules`` only."""
    from peft import LoraConfig, inject_adapter_in_model

    rank, alpha = int(cfg["rank"]), float(cfg.get("alpha", cfg["rank"]))
    targets = list(cfg.get("targets", ["self_attn", "cross_attn", "ffn"]))
    conf = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_regex(targets), lora_dropout=0.0,
                      init_lora_weights=True)  # B = 0: the adapted model starts as the base
    inject_adapter_in_model(conf, dit.wan)
    train_modules = tuple(cfg.get("train_modules", DEFAULT_TRAIN_MODULES))
    for name, p in dit.wan.named_parameters():
        p.requires_grad = "lora_" in name or any(name.startswith(m) or f".{m}." in name for m in train_modules)
    n_lora = sum(p.numel() for n, p in dit.wan.named_parameters() if "lora_" in n)
    n_train = sum(p.numel() for p in dit.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in dit.parameters())
    log.info("LoRA rank %d alpha %g on %s: %.3fM adapter params, %.3fM of %.3fM trainable", rank, alpha,
             ", ".join(targets), n_lora / 1e6, n_train / 1e6, n_all / 1e6)
    return {"rank": rank, "alpha": alpha, "targets": targets, "train_modules": list(train_modules),
            "adapter_params": n_lora, "trainable_params": n_train}


def unfreeze_last_blocks(dit: torch.nn.Module, n: int) -> list[int]:
    """Train the last ``n`` DiT blocks in full beside the adapters (the seed's phase 3).

    The blocks' base linears (under peft's ``base_layer``) start to learn too; ``merge_lora``
    later adds the adapters' deltas onto those trained weights.
    """
    blocks = dit.wan.blocks
    if not 0 < n <= len(blocks):
        raise ValueError(f"teacher unfreeze: {n} blocks asked, the DiT has {len(blocks)}")
    chosen = list(range(len(blocks) - n, len(blocks)))
    for i in chosen:
        blocks[i].requires_grad_(True)
    n_train = sum(p.numel() for p in dit.parameters() if p.requires_grad)
    log.info("unfroze DiT blocks %s: %.3fM trainable params", chosen, n_train / 1e6)
    return chosen


def adapter_state(dit: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights alone, in peft's key layout (what peft's loaders read)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(dit.wan).items()}


def save_adapter(dit: torch.nn.Module, out_dir: Path, info: dict) -> None:
    out = Path(out_dir)
    save_file(adapter_state(dit), str(out / "adapter.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(info, sort_keys=True, indent=2) + "\n")


@torch.no_grad()
def merge_lora(dit: torch.nn.Module) -> int:
    """Fold every adapter into its base linear and put the plain linear back; returns the count."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(dit.wan.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent = dit.wan.get_submodule(name.rsplit(".", 1)[0]) if "." in name else dit.wan
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())
            merged += 1
    for p in dit.parameters():
        p.requires_grad_(True)
    return merged
