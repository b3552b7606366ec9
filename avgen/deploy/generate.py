"""Text -> a video with its soundtrack: the inference pipeline of a trained AVGen model.

``python -m avgen generate --prompt "..." --out clip.mp4`` loads a model artifact (stage 3 or the
INT8 one: ``config.json`` says which, and which frozen components and format it was trained
with), encodes the prompt with the same CLIP and CLAP text encoders the features stage used,
samples the joint latents with Diffusers' flow-matching Euler scheduler (``avgen.models.sampling``,
classifier-free guidance on the text), decodes the video latents with the frozen SD-VAE and the
mel with the HiFi-GAN vocoder, and writes an H.264 + AAC mp4 at the model's fps and sample rate.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genbuild.io.jsonio import read_json

log = logging.getLogger("avgen.deploy.generate")


@dataclass
class Generated:
    frames: np.ndarray      # (F, H, W, 3) uint8
    audio: np.ndarray       # (N,) float32
    fps: int
    sample_rate: int
    seconds: float          # wall time of this sample (sampling + decoding)


class Generator:
    """A loaded model with its frozen parts: ``generate(prompt, seed)`` -> ``Generated``."""

    def __init__(self, model_dir: str | Path, root: Path = Path("."), device: str = "cpu"):
        from avgen.features.encoders import build_encoders
        from avgen.features.frozen import build_vae, build_vocoder

        model_dir = Path(model_dir)
        self.config = read_json(model_dir / "config.json")
        feats = self.config["features"]
        self.network = _load_network(model_dir, self.config).to(device).eval()
        self.device = torch.device(device)
        self.clip, self.clap = build_encoders(feats["features"], root, allow_stand_in=self.config["preset"] == "tiny",
                                              device=device)
        self.vae = build_vae(feats["features"], root).to(device)
        self.vocoder = build_vocoder({"vocoder": self.config["vocoder"]}, root).to(device)
        self.shapes, self.format = feats["shapes"], feats["format"]

    def conditions(self, prompts: list[str]):
        from avgen.models.conditions import AVConditions

        return AVConditions(torch.as_tensor(np.asarray(self.clip.text(prompts)), dtype=torch.float32),
                            torch.as_tensor(np.asarray(self.clap.text(prompts)), dtype=torch.float32), "joint",
                            tuple(self.shapes["video"]), tuple(self.shapes["audio"]))

    @torch.no_grad()
    def generate(self, prompt: str, seed: int = 0, steps: int = 8, cfg_scale: float = 3.0) -> Generated:
        from avgen.models.frozen import decode_latents, vocode
        from avgen.models.sampling import sample

        t0 = time.perf_counter()
        cond = self.conditions([prompt]).to(self.device)
        g = torch.Generator().manual_seed(int(seed))
        video, mel = sample(self.network, cond, steps, g, shift=float(self.config["shift"]), cfg_scale=cfg_scale)
        frames = decode_latents(self.vae, video[0].float().cpu())
        audio = vocode(self.vocoder, mel[0].float().cpu())
        n = int(round(self.format["seconds"] * self.format["sample_rate"]))
        audio = np.pad(audio, (0, max(0, n - len(audio))))[:n]
        return Generated(frames, audio, int(self.format["fps"]), int(self.format["sample_rate"]), time.perf_counter() - t0)


def _load_network(model_dir: Path, config: dict):
    if config.get("quantization"):
        from avgen.deploy.int8 import load_int8

        return load_int8(model_dir)
    from avgen.models.network import AVGenNetwork

    return AVGenNetwork.from_pretrained(model_dir / "model")


def main(argv: list[str] | None = None) -> None:
    import argparse

    from genbuild.io.av import write_av
    from genbuild.stage import setup_logging

    setup_logging()
    ap = argparse.ArgumentParser(prog="python -m avgen generate", description="Generate a video with sound from a prompt.")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--out", required=True, type=Path, help="the mp4 to write (H.264 + AAC)")
    ap.add_argument("--model", type=Path, default=Path("artifacts/avgen_stage3"),
                    help="a model artifact: artifacts/avgen_stage3 (default) or artifacts/avgen_int8")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale on the text")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    if not (a.model / "config.json").exists():
        ap.error(f"--model {a.model}: not an AVGen model artifact (no config.json); build it with "
                 f"`make run PIPELINE=avgen` or `dvc pull {a.model}`")
    gen = Generator(a.model, device=a.device)
    out = gen.generate(a.prompt, a.seed, a.steps, a.cfg)
    write_av(a.out, out.frames, out.fps, out.audio, out.sample_rate)
    log.info("wrote %s: %d frames at %d fps, %.2f s of audio at %d Hz, in %.2f s", a.out, len(out.frames), out.fps,
             len(out.audio) / out.sample_rate, out.sample_rate, out.seconds)
