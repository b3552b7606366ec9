"""The PVTT denoiser: DiffSynth's Wan DiT with source-video/mask channels and a reference image.

Layout (as Wan I2V): the DiT input is the noisy target latents concatenated on channels with
the source-video latents and the edit-region mask; the reference product image enters through
the image cross-attention branch (``img_emb`` + separate image k/v). The forward follows
DiffSynth's pipeline model function (``model_fn_wan_video``), the path that works in
diffsynth 2.1.12 (``WanModel.forward`` is out of step with its own ``patchify``).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import diffsynth.models.wan_video_dit as wan_dit
import torch
import torch.nn as nn
from diffsynth.models.wan_video_dit import WanModel, sinusoidal_embedding_1d
from einops import rearrange
from safetensors.torch import load_file, save_file

# Wan2.1/2.2 shapes; tiny is the sample/CI model (a few M params, trains on CPU in minutes).
# head_dim must make the 3-D RoPE split even (48, 96 or 128; 64 fails).
PRESETS: dict[str, dict] = {
    "tiny": {"dim": 96, "num_heads": 2, "num_layers": 2, "ffn_dim": 256, "freq_dim": 64, "text_dim": 32,
             "patch_size": [1, 2, 2], "eps": 1e-6},
    "1.3B": {"dim": 1536, "num_heads": 12, "num_layers": 30, "ffn_dim": 8960, "freq_dim": 256, "text_dim": 4096,
             "patch_size": [1, 2, 2], "eps": 1e-6},
    "14B": {"dim": 5120, "num_heads": 40, "num_layers": 40, "ffn_dim": 13824, "freq_dim": 256, "text_dim": 4096,
            "patch_size": [1, 2, 2], "eps": 1e-6},
    # Wan2.2 TI2V-5B: 48-channel latents from the Wan2.2 VAE (codec kind wan22_vae).
    "5B": {"dim": 3072, "num_heads": 24, "num_layers": 30, "ffn_dim": 14336, "freq_dim": 256, "text_dim": 4096,
           "patch_size": [1, 2, 2], "eps": 1e-6},
}


def _rope_apply_real(x: torch.Tensor, freqs, num_heads: int) -> torch.Tensor:
    """Real-valued RoPE (cos/sin) equal to DiffSynth's complex one; exportable to ONNX."""
    if not isinstance(freqs, tuple):
        return _ORIGINAL_ROPE(x, freqs, num_heads)
    cos, sin = freqs
    b, s, _ = x.shape
    xs = x.reshape(b, s, num_heads, -1, 2)
    xr, xi = xs[..., 0], xs[..., 1]
    out = torch.stack([xr * cos - xi * sin, xr * sin + xi * cos], dim=-1)
    return out.reshape(b, s, -1)


_ORIGINAL_ROPE = wan_dit.rope_apply


@contextlib.contextmanager
def real_rope():
    """Within this block the DiT uses real-valued RoPE (needed for ONNX export, which has no complex type)."""
    wan_dit.rope_apply = _rope_apply_real
    try:
        yield
    finally:
        wan_dit.rope_apply = _ORIGINAL_ROPE


PREDICTIONS = ("velocity", "source_residual")


class PVTTDiT(nn.Module):
    """Wan DiT conditioned on the source video, the edit mask and the reference image.

    ``prediction`` chooses what the network's head means; the module always returns the
    flow-matching velocity, so samplers, DMD2 and the ONNX engine are unchanged:
    - ``velocity`` (Wan's own, used with pretrained weights): the head is the velocity.
    - ``source_residual`` (the tiny sample models): the head is x0 - source and starts at
      zero, so an untrained model already reproduces the template and training only has to
      learn the edit; velocity = (x_t - x0) / s.

    ``average_velocity`` (a MeanFlow student, ``genbuild.train.methods.mean_flow``): the network
    also takes the step's length t - r (``interval``) and returns the mean velocity over it. The
    interval enters as a second sinusoidal embedding added to the time embedding, as MeanFlow's
    DiT adds its (t, t - r) embeddings; its last layer starts at zero, so a converted model
    (``with_average_velocity``) first predicts exactly what it did before, at every interval.
    """

    def __init__(self, arch: dict, latent_channels: int, mask_channels: int = 1, prediction: str = "velocity",
                 average_velocity: bool = False):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"model.prediction: unknown '{prediction}' (known: {', '.join(PREDICTIONS)})")
        self.arch = dict(arch)
        self.prediction = prediction
        self.average_velocity = bool(average_velocity)
        self.latent_channels, self.mask_channels = latent_channels, mask_channels
        self.use_real_rope = False
        self._real_rope_cache: dict = {}
        self.gradient_checkpointing = False
        self.wan = WanModel(
            dim=arch["dim"], in_dim=2 * latent_channels + mask_channels, ffn_dim=arch["ffn_dim"],
            out_dim=latent_channels, text_dim=arch["text_dim"], freq_dim=arch["freq_dim"], eps=arch["eps"],
            patch_size=tuple(arch["patch_size"]), num_heads=arch["num_heads"], num_layers=arch["num_layers"],
            has_image_input=True)
        image_dim = int(arch.get("image_dim", 1280))
        if image_dim != 1280:  # another image encoder than CLIP ViT-H (DINOv2): img_emb takes its width
            self.wan.img_emb = wan_dit.MLP(image_dim, arch["dim"])
        if prediction == "source_residual":
            nn.init.zeros_(self.wan.head.head.weight)
            nn.init.zeros_(self.wan.head.head.bias)
        if self.average_velocity:
            dim = arch["dim"]
            self.interval_embedding = nn.Sequential(nn.Linear(arch["freq_dim"], dim), nn.SiLU(), nn.Linear(dim, dim))
            nn.init.zeros_(self.interval_embedding[-1].weight)
            nn.init.zeros_(self.interval_embedding[-1].bias)

    @property
    def config(self) -> dict:
        return {"arch": self.arch, "latent_channels": self.latent_channels, "mask_channels": self.mask_channels,
                "prediction": self.prediction, "average_velocity": self.average_velocity}

    def with_average_velocity(self, seed: int = 0) -> PVTTDiT:
        """This model with an interval input added (zero at first: same outputs); itself if it has one."""
        if self.average_velocity:
            return self
        torch.manual_seed(seed)
        out = PVTTDiT(self.arch, self.latent_channels, self.mask_channels, self.prediction, average_velocity=True)
        missing, unexpected = out.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("interval_embedding.") for k in missing), (missing, unexpected)
        return out

    def _freqs(self, f: int, h: int, w: int):
        f, h, w = int(f), int(h), int(w)  # the ONNX tracer hands sizes over as tensors
        if self.use_real_rope and (f, h, w) in self._real_rope_cache:
            # Cached outside any trace, so an ONNX export sees plain float constants.
            return self._real_rope_cache[(f, h, w)]
        fr = self.wan.freqs
        freqs = torch.cat([
            fr[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            fr[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
            fr[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ], dim=-1).reshape(f * h * w, 1, -1)
        if self.use_real_rope:
            pair = (freqs.real.float().contiguous(), freqs.imag.float().contiguous())
            self._real_rope_cache[(f, h, w)] = pair
            return pair
        return freqs

    def forward(self, x_t: torch.Tensor, timestep: torch.Tensor, source: torch.Tensor, mask: torch.Tensor,
                image_tokens: torch.Tensor, text_tokens: torch.Tensor, interval: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the flow-matching velocity (noise - data) for latents ``x_t`` at ``timestep`` (0..1000);
        with ``average_velocity``, the mean velocity over the step of length ``interval`` (same units,
        None: 0, the instantaneous velocity)."""
        wan = self.wan
        t = wan.time_embedding(sinusoidal_embedding_1d(wan.freq_dim, timestep).to(x_t.dtype))
        if self.average_velocity:
            interval = torch.zeros_like(timestep) if interval is None else interval
            t = t + self.interval_embedding(sinusoidal_embedding_1d(wan.freq_dim, interval).to(x_t.dtype))
        t_mod = wan.time_projection(t).unflatten(1, (6, wan.dim))
        context = torch.cat([wan.img_emb(image_tokens), wan.text_embedding(text_tokens)], dim=1)
        x = wan.patch_embedding(torch.cat([x_t, source, mask], dim=1))
        f, h, w = x.shape[2:]
        x = rearrange(x, "b c f h w -> b (f h w) c").contiguous()
        freqs = self._freqs(f, h, w)
        for block in wan.blocks:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, context, t_mod, freqs, use_reentrant=False)
            else:
                x = block(x, context, t_mod, freqs)
        out = wan.unpatchify(wan.head(x, t), (f, h, w))
        if self.prediction == "velocity":
            return out
        sigma = (timestep / 1000.0).clamp_min(1e-4).view(-1, 1, 1, 1, 1).to(out.dtype)
        return (x_t - (source + out)) / sigma

    # -- persistence -------------------------------------------------------------------------
    def to_device(self, device) -> PVTTDiT:
        """``.to(device)``, plus the RoPE tables DiffSynth keeps as a plain attribute (not a buffer)."""
        self.to(device)
        self.wan.freqs = tuple(f.to(device) for f in self.wan.freqs)
        self._real_rope_cache.clear()
        return self

    def save(self, out_dir: str | Path, extra: dict | None = None) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps({**self.config, **(extra or {})}, sort_keys=True, indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: str | Path) -> PVTTDiT:
        d = Path(model_dir)
        for name in ("config.json", "model.safetensors"):
            if not (d / name).exists():
                raise FileNotFoundError(f"{d / name}: model file missing (build it, or `dvc pull {d}`)")
        cfg = json.loads((d / "config.json").read_text())
        model = cls(cfg["arch"], cfg["latent_channels"], cfg.get("mask_channels", 1), cfg.get("prediction", "velocity"),
                    cfg.get("average_velocity", False))
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        return model


def read_config(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())


def build_dit(preset: str, latent_channels: int, seed: int, prediction: str = "velocity",
              image_dim: int = 1280) -> PVTTDiT:
    """``image_dim``: width of the reference-image tokens (1280: CLIP ViT-H, Wan I2V's own)."""
    if preset not in PRESETS:
        raise ValueError(f"model.preset: unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    torch.manual_seed(seed)
    arch = dict(PRESETS[preset]) if image_dim == 1280 else {**PRESETS[preset], "image_dim": int(image_dim)}
    return PVTTDiT(arch, latent_channels, prediction=prediction)
