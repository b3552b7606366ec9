"""A PVTT model loaded once, editing clips: what ``generate``, the service and the inference benchmark share.

``Editor`` holds the codec, the encoders and one denoiser: the PyTorch model of ``model_dir``
(with ``deploy.attention`` and ``deploy.compile``), or one of student_4's deployed forms from the
engine artifact (``deploy.form``: ``onnx``, ``onnx_fp16``, ``onnx_int8``, ``int8_weight``,
``int8_dynamic``, ``fp8``). ``edit`` runs the three parts of an edit and times each: encode
(source latents, mask, reference and caption tokens), denoise (the sampler's steps, with CFG for a
teacher), decode. A callback sees every step, so a caller can report progress or cancel.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genbuild.media import to_uint8
from genbuild.train.flow import guided_velocity, sample
from pvtt.deploy import forms
from pvtt.models.attention import attention_backend, attention_function, compiled
from pvtt.models.bundle import encoders_for, load_bundle
from pvtt.models.conditions import Conditions
from pvtt.models.dit import read_config
from pvtt.models.encoders import reference_to_tensor

FORMS = ("pytorch", "onnx", "onnx_fp16", "onnx_int8", "onnx_int8_qdq", "int8_weight", "int8_dynamic", "fp8",
         "tensorrt_fp16", "tensorrt_int8")


class Cancelled(Exception):
    """Raised inside ``edit`` when the step callback asks to stop."""


@dataclass
class Edit:
    frames: np.ndarray                 # (F, H, W, 3) uint8
    seconds: dict = field(default_factory=dict)   # encode, denoise, decode, total
    steps: int = 0
    cfg_scale: float = 1.0


class Editor:
    """``model_dir``: a teacher or student artifact (its config names the components); ``form``
    other than ``pytorch`` takes student_4's deployed form from ``engine_dir`` instead of its weights."""

    def __init__(self, model_dir: Path, form: str = "pytorch", engine_dir: Path | None = None,
                 attention: str = "sdpa", compile_model: bool = False, threads: int = 1):
        if form not in FORMS:
            raise ValueError(f"deploy.form: unknown '{form}' (known: {', '.join(FORMS)})")
        self.model_dir, self.form, self.attention = Path(model_dir), form, attention
        self.config = read_config(self.model_dir)  # names the missing file when the model is absent
        attention_function(attention)  # fails now, naming the key, if the kernel is missing here
        if form == "pytorch":
            self.bundle = load_bundle(self.model_dir)
            self.denoiser = compiled(self.bundle.dit.eval(), compile_model)
        else:
            if engine_dir is None:
                raise ValueError(f"deploy.form '{form}' needs the engine artifact (deploy.engine)")
            self.bundle = encoders_for(self.config["components"])
            self.denoiser = forms.load(Path(engine_dir), form, threads)
        self.student = self.config.get("kind") == "student"
        self.shift = float(self.config["shift"])

    def sampling(self, eval_params: dict, steps: int | None = None, cfg_scale: float | None = None) -> tuple[int, float]:
        """(steps, CFG scale): a student's own steps and no CFG (its guidance is distilled in), a
        teacher's ``eval.teacher_steps`` and ``eval.cfg_scale``; either overridden when given."""
        steps = int(steps or (self.config["steps"] if self.student else eval_params["teacher_steps"]))
        cfg = float(cfg_scale if cfg_scale is not None else (1.0 if self.student else eval_params["cfg_scale"]))
        return steps, cfg

    def conditions(self, frames: np.ndarray, mask: np.ndarray, rgba: np.ndarray, caption: str,
                   reference_size: int) -> Conditions:
        src = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        ref = reference_to_tensor(rgba, reference_size)[None]
        b = self.bundle
        return Conditions(b.encode_source(src, m), b.codec.encode_mask(m), b.image_encoder(ref), b.text_encoder([caption]))

    @torch.no_grad()
    def edit(self, frames: np.ndarray, mask: np.ndarray, rgba: np.ndarray, caption: str, reference_size: int,
             steps: int, cfg_scale: float, seed: int = 0, keep_dilate: int | None = None,
             on_step: Callable[[int, int], bool] | None = None) -> Edit:
        """The edited clip. ``on_step(done, steps)`` after every step; returning False cancels."""
        t0 = time.perf_counter()
        cond = self.conditions(frames, mask, rgba, caption, reference_size)
        t1 = time.perf_counter()
        noise = torch.randn(cond.source.shape, generator=torch.Generator().manual_seed(seed))
        keep = cond.keep_background(keep_dilate) if keep_dilate is not None else None
        done = [0]

        def velocity(x, s, ds):
            v = guided_velocity(self.denoiser, x, s, cond, cfg_scale, ds)
            done[0] += 1
            if on_step is not None and on_step(done[0], steps) is False:
                raise Cancelled(f"cancelled after {done[0]} of {steps} steps")
            return v

        with attention_backend(self.attention):
            lat = sample(self.denoiser, cond, noise, steps, self.shift, cfg_scale, velocity_fn=velocity, keep=keep)
        t2 = time.perf_counter()
        edited = to_uint8(self.bundle.codec.decode(lat)[0])
        t3 = time.perf_counter()
        return Edit(edited, {"encode": t1 - t0, "denoise": t2 - t1, "decode": t3 - t2, "total": t3 - t0}, steps, cfg_scale)
