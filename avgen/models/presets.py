"""AVGen-DiT sizes: ``tiny`` (the sample and CI: ~1M parameters, trains on CPU in seconds) and ``3.8B`` (the plan).

The plan fixes the 3.8B backbone's depth, width and heads (24 layers, 2048 hidden, 16 heads,
32x32-pixel patches = 4x4 on the SD-VAE latent grid) and each module's budget (backbone 3.0B,
audio decoder 300M, video decoder 500M, alignment 100M); the open dimensions are chosen here to
land on those budgets (``python -m avgen.models.presets`` prints the counts, a test holds them
within 10 %):

- backbone: an MLP per modality at ratio 4 (= 30 hidden^2 per block with the adaLN-Zero
  modulation, self- and cross-attention: 126M a block), 8 text tokens;
- audio decoder: 8 layers of width 1792 (14 heads of 128), MLP ratio 3.75;
- video decoder: 6 convolutions of 1920 channels (5 wide ones at 27 * 1920^2 each);
- alignment: cross-attention both ways with an MLP of ratio 2.5, full (not depthwise) temporal
  convolutions of width 3.
"""
from __future__ import annotations

import copy

import torch

from avgen.models.network import MODULES, AVGenNetwork

PRESETS: dict[str, dict[str, dict]] = {
    "tiny": {
        "backbone": {"latent_channels": 4, "mel_bins": 80, "patch_size": [1, 2, 2], "audio_patch": 5, "hidden": 64,
                     "layers": 2, "heads": 4, "mlp_ratio": 4.0, "clip_dim": 512, "clap_dim": 512, "text_tokens": 4,
                     "time_freq_dim": 64, "video_fps": 8.0, "audio_frame_rate": 62.5},
        "alignment": {"hidden": 64, "heads": 4, "mlp_ratio": 2.0, "kernel_size": 3, "depthwise": False},
        "audio_decoder": {"hidden": 64, "mel_bins": 80, "audio_patch": 5, "layers": 2, "width": 64, "heads": 4,
                          "mlp_ratio": 4.0},
        "video_decoder": {"hidden": 64, "latent_channels": 4, "patch_size": [1, 2, 2], "layers": 2, "channels": 16,
                          "groups": 4},
    },
    "3.8B": {
        "backbone": {"latent_channels": 4, "mel_bins": 80, "patch_size": [1, 4, 4], "audio_patch": 4, "hidden": 2048,
                     "layers": 24, "heads": 16, "mlp_ratio": 4.0, "clip_dim": 512, "clap_dim": 512, "text_tokens": 8,
                     "time_freq_dim": 256, "video_fps": 8.0, "audio_frame_rate": 62.5},
        "alignment": {"hidden": 2048, "heads": 16, "mlp_ratio": 2.5, "kernel_size": 3, "depthwise": False},
        "audio_decoder": {"hidden": 2048, "mel_bins": 80, "audio_patch": 4, "layers": 8, "width": 1792, "heads": 14,
                          "mlp_ratio": 3.75},
        "video_decoder": {"hidden": 2048, "latent_channels": 4, "patch_size": [1, 4, 4], "layers": 6, "channels": 1920,
                          "groups": 32},
    },
}

# The plan's parameter budget per module (the 3.8B preset is held within 10 % of it).
BUDGETS: dict[str, dict[str, int]] = {
    "3.8B": {"backbone": 3_000_000_000, "audio_decoder": 300_000_000, "video_decoder": 500_000_000,
             "alignment": 100_000_000},
}


def resolve(preset: str | dict) -> dict[str, dict]:
    """A preset name or an explicit ``{module: config}`` dict -> a fresh config dict."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"model.preset: unknown preset '{preset}' (known: {', '.join(PRESETS)})")
        return copy.deepcopy(PRESETS[preset])
    return copy.deepcopy(dict(preset))


def build(preset: str | dict, device: str | torch.device = "cpu", seed: int | None = 0) -> AVGenNetwork:
    """The network of ``preset``, initialised on ``device`` directly (a 3.8B model never goes through CPU memory);
    ``seed`` makes the initial weights reproducible (None: leave the RNG alone)."""
    config = resolve(preset)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device):
        return AVGenNetwork.from_config(config)


def count_parameters(preset: str | dict) -> dict[str, int]:
    """Parameters per module, counted on the meta device (no memory, no init time: the 3.8B counts in a second)."""
    with torch.device("meta"):
        net = AVGenNetwork.from_config(resolve(preset))
    return {name: sum(p.numel() for p in getattr(net, name).parameters()) for name in MODULES}


def table() -> str:
    """Every preset's counts, with the plan's budget and the deviation where there is one."""
    lines = [f"{'preset':<6} {'module':<14} {'parameters':>15} {'budget':>15} {'deviation':>9}"]
    for name in PRESETS:
        counts = count_parameters(name)
        budget = BUDGETS.get(name, {})
        for module, n in counts.items():
            b = budget.get(module)
            dev = f"{(n - b) / b:+.1%}" if b else ""
            lines.append(f"{name:<6} {module:<14} {n:>15,} {f'{b:,}' if b else '':>15} {dev:>9}")
        total_b = sum(budget.values())
        dev = f"{(sum(counts.values()) - total_b) / total_b:+.1%}" if total_b else ""
        lines.append(f"{name:<6} {'total':<14} {sum(counts.values()):>15,} {f'{total_b:,}' if total_b else '':>15} {dev:>9}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
