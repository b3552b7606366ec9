"""Synth route B ``flux_wan_i2v``: FLUX first-frame edit, then Wan image-to-video (DiffSynth, local weights).

1. Route A's compositing (:class:`pvtt.data.synth.CompositeRoute`, same settings and rejects) places
   the new product along the old product's smoothed trajectory; its alpha track (> 0.5) is the
   pair's mask, exactly as route A writes it.
2. FLUX (``synth.flux``): the composited first frame is re-noised to ``strength`` and denoised
   with FLUX.1 over the product region only -- the composited product's alpha dilated by
   ``flux.dilate`` px, on the 8x latent grid (a cell is edited if the region touches it). The
   rest of the latents follow the input image's own noising trajectory (DiffSynth's
   ``BasePipeline.step`` with ``inpaint_mask``/``input_latents``), and the output keeps the
   input's pixels outside the region. This harmonises the pasted product (edges, light,
   shadow) while keeping it recognisable; ``strength`` trades the two.
3. Wan I2V (``synth.i2v``): DiffSynth's ``WanVideoPipeline`` generates the clip's frame count
   from that frame (CLIP image features + the VAE-encoded first frame, Wan2.1 I2V layout).
   Clips longer than ``i2v.max_frames`` continue segment by segment, each starting from the
   previous segment's last frame.

The result has the clip's size, frame rate and frame count (frames are scaled down to at most
``max_pixels``, padded to multiples of 16 and 1 + 4k frames, then cropped/scaled back). Note:
the I2V video is generated from the first frame and a text prompt only, so its camera and
product motion are the model's; the mask is the intended trajectory (route A's), not a
segmentation of the generated video.

Models are DiffSynth's classes loaded with its loader and state-dict converters from local
files (official layouts: BFL ``flux1-dev.safetensors``/``ae.safetensors``, the HF CLIP-L and
T5-XXL text encoders and tokenizers of FLUX.1-dev; Wan2.1-I2V DiT shards, ``Wan2.1_VAE.pth``,
the open-clip ViT-H/14 ``.pth``, umT5-XXL ``.pth`` and ``google/umt5-xxl`` tokenizer). The FLUX
prompt is fixed per run, so it is encoded once and the FLUX text encoders are freed. Configs
are read off the checkpoints' tensor shapes; ``arch`` overrides them. FLUX's DiT, VAE and T5
classes have hard-coded widths, so a non-default ``arch`` builds them through
:func:`flux_dit_factory` & co., which assemble the same DiffSynth blocks with smaller widths
into an instance of the real class (at the default widths the result is layer-for-layer the
original; the tests check the state-dict shapes). Missing files stop the stage naming the path,
the params key and ``dvc pull models/<dir>``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from genbuild import stage as cli
from pvtt.data.backends import BackendError
from pvtt.data.backends.wan_vace import (
    DTYPES,
    build_model,
    fit_size,
    from_work,
    import_torch_diffsynth,
    load_state,
    load_wan_pipeline,
    pad_frames,
    quiet,
    require_files,
    resolve_device,
    to_work,
    torch_dtype,
    validate_section,
    video_to_uint8,
    window_length,
)
from pvtt.data.synth import CompositeRoute, Route, SynthResult, register_route

log = logging.getLogger("pvtt.data.synth.flux_wan_i2v")

LABEL = "synth.route 'flux_wan_i2v'"
T5_LEN = 512          # FLUX.1's T5 sequence length (DiffSynth's default)

FLUX_DEFAULTS: dict[str, Any] = {
    "dit": "models/flux1-dev/flux1-dev.safetensors",
    "vae": "models/flux1-dev/ae.safetensors",
    "text_encoder": "models/flux1-dev/text_encoder/model.safetensors",
    "text_encoder_2": "models/flux1-dev/text_encoder_2",
    "tokenizer": "models/flux1-dev/tokenizer",
    "tokenizer_2": "models/flux1-dev/tokenizer_2",
    "prompt": "a product in the scene, natural lighting and shadows, realistic photo",
    "steps": 28,
    "strength": 0.35,
    "guidance": 3.5,
    "dilate": 8,
    "max_pixels": 1024 * 1024,
    "seed": 0,
    "device": "auto",
    "dtype": "bf16",
    "arch": None,
}
FLUX_SPEC: dict[str, tuple] = {
    "dit": ("path",), "vae": ("path",), "text_encoder": ("path",), "text_encoder_2": ("path",),
    "tokenizer": ("path",), "tokenizer_2": ("path",), "prompt": ("str",),
    "steps": ("int", 1, 1000), "strength": ("float", 0.0, 1.0), "guidance": ("float", 0.0, 30.0),
    "dilate": ("int", 0, 256), "max_pixels": ("int", 256, 10**8), "seed": ("int", 0, 2**32 - 1),
    "device": ("device",), "dtype": ("choice", DTYPES),
    "arch": ("arch", ("dit", "vae", "text_encoder", "text_encoder_2")),
}
I2V_DEFAULTS: dict[str, Any] = {
    "dit": "models/wan-i2v-14b-480p",       # diffusion_pytorch_model-0000N-of-00007.safetensors shards
    "vae": "models/wan-i2v-14b-480p/Wan2.1_VAE.pth",
    "image_encoder": "models/wan-i2v-14b-480p/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
    "text_encoder": "models/wan-i2v-14b-480p/models_t5_umt5-xxl-enc-bf16.pth",
    "tokenizer": "models/wan-i2v-14b-480p/google/umt5-xxl",
    "prompt": "",
    "negative_prompt": "",
    "steps": 30,
    "cfg": 5.0,
    "shift": 5.0,
    "seed": 0,
    "max_pixels": 480 * 832,
    "max_frames": 81,
    "tiled": True,
    "device": "auto",
    "dtype": "bf16",
    "arch": None,
}
I2V_SPEC: dict[str, tuple] = {
    "dit": ("path",), "vae": ("path",), "image_encoder": ("opt_path",), "text_encoder": ("path",),
    "tokenizer": ("path",), "prompt": ("str",), "negative_prompt": ("str",),
    "steps": ("int", 1, 1000), "cfg": ("float", 0.0, 30.0), "shift": ("float", 0.01, 100.0),
    "seed": ("int", 0, 2**32 - 1), "max_pixels": ("int", 256, 10**8),
    "max_frames": ("int", 5, 100000),       # >= 5: a continuation segment must add frames
    "tiled": ("bool",), "device": ("device",), "dtype": ("choice", DTYPES),
    "arch": ("arch", ("dit", "vae", "text_encoder", "image_encoder")),
}


def validate_sections(params: dict) -> tuple[dict, dict]:
    """(``synth.flux``, ``synth.i2v``) merged over the defaults; bad values raise ValueError naming the key."""
    return (validate_section(cli.get(params, "synth.flux", None), FLUX_DEFAULTS, FLUX_SPEC, "synth.flux"),
            validate_section(cli.get(params, "synth.i2v", None), I2V_DEFAULTS, I2V_SPEC, "synth.i2v"))


# ----------------------------------------------------------------------------- FLUX modules

FLUX1 = {"dim": 3072, "num_heads": 24, "num_single_blocks": 38, "axes_dim": (16, 56, 56), "text_dim": 4096,
         "pooled_dim": 768}


def sized_flux_dit(dim=3072, num_heads=24, num_blocks=19, num_single_blocks=38, input_dim=64, axes_dim=(16, 56, 56),
                   text_dim=4096, pooled_dim=768, disable_guidance_embedder=False):
    """A ``FluxDiT`` whose widths are parameters (``FluxDiT.__init__`` hard-codes FLUX.1's): the same
    DiffSynth blocks, in the same attributes, so the state-dict names are FLUX.1's."""
    import torch
    from diffsynth.models.flux_dit import (
        AdaLayerNormContinuous,
        FluxDiT,
        FluxJointTransformerBlock,
        FluxSingleTransformerBlock,
        RoPEEmbedding,
    )
    from diffsynth.models.general_modules import TimestepEmbeddings

    nn = torch.nn
    dit = FluxDiT.__new__(FluxDiT)
    nn.Module.__init__(dit)
    dit.pos_embedder = RoPEEmbedding(dim, 10000, list(axes_dim))
    dit.time_embedder = TimestepEmbeddings(256, dim)
    dit.guidance_embedder = None if disable_guidance_embedder else TimestepEmbeddings(256, dim)
    dit.pooled_text_embedder = nn.Sequential(nn.Linear(pooled_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
    dit.context_embedder = nn.Linear(text_dim, dim)
    dit.x_embedder = nn.Linear(input_dim, dim)
    dit.blocks = nn.ModuleList([FluxJointTransformerBlock(dim, num_heads) for _ in range(num_blocks)])
    dit.single_blocks = nn.ModuleList([FluxSingleTransformerBlock(dim, num_heads) for _ in range(num_single_blocks)])
    dit.final_norm_out = AdaLayerNormContinuous(dim)
    dit.final_proj_out = nn.Linear(dim, 64)        # 16 latent channels x 2x2 patch
    dit.input_dim = input_dim
    return dit


def flux_dit_factory(num_blocks=19, input_dim=64, disable_guidance_embedder=False, **widths):
    """DiffSynth's ``FluxDiT`` itself at FLUX.1 widths, else :func:`sized_flux_dit`."""
    from diffsynth.models.flux_dit import FluxDiT

    widths = {**FLUX1, **widths}
    widths["axes_dim"] = tuple(widths["axes_dim"])
    if widths == FLUX1:
        return FluxDiT(disable_guidance_embedder=disable_guidance_embedder, input_dim=input_dim, num_blocks=num_blocks)
    return sized_flux_dit(num_blocks=num_blocks, input_dim=input_dim,
                          disable_guidance_embedder=disable_guidance_embedder, **widths)


def flux_dit_config(state: dict) -> dict:
    """``flux_dit_factory`` kwargs read off a (DiffSynth-named) FLUX DiT state dict."""
    try:
        x = state["x_embedder.weight"]
        dim = int(x.shape[0])
        cfg = {"dim": dim, "input_dim": int(x.shape[1]), "num_heads": max(1, dim // 128),
               "num_blocks": 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1),
               "num_single_blocks": 1 + max((int(k.split(".")[1]) for k in state if k.startswith("single_blocks.")),
                                            default=-1),
               "text_dim": int(state["context_embedder.weight"].shape[1]),
               "pooled_dim": int(state["pooled_text_embedder.0.weight"].shape[1]),
               "disable_guidance_embedder": not any(k.startswith("guidance_embedder.") for k in state)}
    except (KeyError, ValueError) as e:
        raise KeyError(f"not a FLUX.1 DiT checkpoint (missing/odd tensor {e})") from None
    return cfg


def sized_flux_vae(kind: str, ch: int = 128, use_conv_attention: bool = True):
    """``FluxVAEEncoder``/``FluxVAEDecoder`` with base width ``ch`` (FLUX.1: 128 -> 128/256/512 channels);
    the same DiffSynth blocks in the same order, so the state-dict names are the originals'."""
    import torch
    from diffsynth.models.flux_vae import (
        DownSampler,
        FluxVAEDecoder,
        FluxVAEEncoder,
        ResnetBlock,
        UpSampler,
        VAEAttentionBlock,
    )

    nn, c1, c2, c4 = torch.nn, ch, 2 * ch, 4 * ch
    cls = FluxVAEEncoder if kind == "encoder" else FluxVAEDecoder
    vae = cls.__new__(cls)
    nn.Module.__init__(vae)
    vae.scaling_factor, vae.shift_factor = 0.3611, 0.1159
    attn = VAEAttentionBlock(1, c4, c4, 1, eps=1e-6, use_conv_attention=use_conv_attention)
    if kind == "encoder":
        vae.conv_in = nn.Conv2d(3, c1, kernel_size=3, padding=1)
        vae.blocks = nn.ModuleList([
            ResnetBlock(c1, c1, eps=1e-6), ResnetBlock(c1, c1, eps=1e-6), DownSampler(c1, padding=0, extra_padding=True),
            ResnetBlock(c1, c2, eps=1e-6), ResnetBlock(c2, c2, eps=1e-6), DownSampler(c2, padding=0, extra_padding=True),
            ResnetBlock(c2, c4, eps=1e-6), ResnetBlock(c4, c4, eps=1e-6), DownSampler(c4, padding=0, extra_padding=True),
            ResnetBlock(c4, c4, eps=1e-6), ResnetBlock(c4, c4, eps=1e-6),
            ResnetBlock(c4, c4, eps=1e-6), attn, ResnetBlock(c4, c4, eps=1e-6)])
        vae.conv_norm_out = nn.GroupNorm(num_channels=c4, num_groups=32, eps=1e-6)
        vae.conv_act = nn.SiLU()
        vae.conv_out = nn.Conv2d(c4, 32, kernel_size=3, padding=1)
    else:
        vae.conv_in = nn.Conv2d(16, c4, kernel_size=3, padding=1)
        vae.blocks = nn.ModuleList([
            ResnetBlock(c4, c4, eps=1e-6), attn, ResnetBlock(c4, c4, eps=1e-6),
            ResnetBlock(c4, c4, eps=1e-6), ResnetBlock(c4, c4, eps=1e-6), ResnetBlock(c4, c4, eps=1e-6), UpSampler(c4),
            ResnetBlock(c4, c4, eps=1e-6), ResnetBlock(c4, c4, eps=1e-6), ResnetBlock(c4, c4, eps=1e-6), UpSampler(c4),
            ResnetBlock(c4, c2, eps=1e-6), ResnetBlock(c2, c2, eps=1e-6), ResnetBlock(c2, c2, eps=1e-6), UpSampler(c2),
            ResnetBlock(c2, c1, eps=1e-6), ResnetBlock(c1, c1, eps=1e-6), ResnetBlock(c1, c1, eps=1e-6)])
        vae.conv_norm_out = nn.GroupNorm(num_channels=c1, num_groups=32, eps=1e-6)
        vae.conv_act = nn.SiLU()
        vae.conv_out = nn.Conv2d(c1, 3, kernel_size=3, padding=1)
    return vae


def flux_vae_factory(kind: str, ch: int = 128):
    from diffsynth.models.flux_vae import FluxVAEDecoder, FluxVAEEncoder

    if ch == 128:
        return FluxVAEEncoder() if kind == "encoder" else FluxVAEDecoder()
    return sized_flux_vae(kind, ch)


def flux_clip_factory(**arch):
    from diffsynth.models.flux_text_encoder_clip import FluxTextEncoderClip

    return FluxTextEncoderClip(**arch)


def flux_t5_factory(**arch):
    """DiffSynth's ``FluxTextEncoderT5`` (T5-XXL encoder); ``arch`` (a T5Config subset) sizes it otherwise."""
    from diffsynth.models.flux_text_encoder_t5 import FluxTextEncoderT5

    if not arch:
        return FluxTextEncoderT5()
    from transformers import T5Config, T5EncoderModel

    enc = FluxTextEncoderT5.__new__(FluxTextEncoderT5)
    T5EncoderModel.__init__(enc, T5Config(**{"feed_forward_proj": "gated-gelu", "is_encoder_decoder": False,
                                             "use_cache": False, "tie_word_embeddings": False, **arch}))
    return enc


# ----------------------------------------------------------------------------- FLUX edit

class FluxEditor:
    """FLUX.1 masked image-to-image over a region of one frame."""

    def __init__(self, cfg: dict, key: str = "synth.flux", label: str = LABEL):
        torch = import_torch_diffsynth(label)
        from diffsynth.pipelines.flux_image import FluxImagePipeline, FluxImageUnit_PromptEmbedder
        from diffsynth.utils.state_dict_converters.flux_dit import (
            FluxDiTStateDictConverter,
            FluxDiTStateDictConverterFromDiffusers,
        )
        from diffsynth.utils.state_dict_converters.flux_text_encoder_clip import FluxTextEncoderClipStateDictConverter
        from diffsynth.utils.state_dict_converters.flux_text_encoder_t5 import FluxTextEncoderT5StateDictConverter
        from diffsynth.utils.state_dict_converters.flux_vae import (
            FluxVAEDecoderStateDictConverter,
            FluxVAEEncoderStateDictConverter,
        )
        from transformers import AutoTokenizer

        self.cfg, self._torch = cfg, torch
        self.device = resolve_device(cfg["device"], label, f"{key}.device")
        self.dtype = dtype = torch_dtype(cfg["dtype"])
        arch = cfg.get("arch") or {}
        t0 = time.perf_counter()

        raw = load_state(cfg["dit"], dtype, label, f"{key}.dit")
        try:    # DiffSynth's converters index fixed key names: a renamed key raises KeyError(suffix) there
            if any(k.startswith(("double_blocks.", "single_blocks.", "img_in.", "model.diffusion_model.")) for k in raw):
                raw = FluxDiTStateDictConverter(raw)              # BFL original (flux1-dev.safetensors)
            elif any(k.startswith("transformer_blocks.") for k in raw):
                raw = FluxDiTStateDictConverterFromDiffusers(raw)  # diffusers layout
        except (KeyError, ValueError, IndexError, TypeError) as e:
            raise BackendError(f"{label}: {cfg['dit']} (params {key}.dit) is not a FLUX.1 DiT checkpoint in the BFL "
                               f"or diffusers layout: its state-dict converter failed on {e.__class__.__name__}: "
                               f"{e}") from e
        try:
            dcfg = {**flux_dit_config(raw), **arch.get("dit", {})}
        except KeyError as e:
            raise BackendError(f"{label}: {cfg['dit']} (params {key}.dit): {e.args[0]}") from None
        if dcfg["input_dim"] != 64:
            raise BackendError(f"{label}: {cfg['dit']} (params {key}.dit) takes {dcfg['input_dim']} input channels; "
                               "this route runs FLUX.1 [dev]-style DiTs (64: 16 latent channels x 2x2), not Fill/Flex")
        dit = build_model(flux_dit_factory, dcfg, raw, cfg["dit"], dtype, self.device, label, f"{key}.dit",
                          f"{key}.arch.dit")
        del raw
        vae_state = load_state(cfg["vae"], dtype, label, f"{key}.vae")
        vae_arch = dict(arch.get("vae", {}))                  # BFL ae.safetensors: encoder.* + decoder.*
        enc = build_model(flux_vae_factory, {"kind": "encoder", **vae_arch}, vae_state, cfg["vae"], dtype, self.device,
                          label, f"{key}.vae", f"{key}.arch.vae", FluxVAEEncoderStateDictConverter)
        dec = build_model(flux_vae_factory, {"kind": "decoder", **vae_arch}, vae_state, cfg["vae"], dtype, self.device,
                          label, f"{key}.vae", f"{key}.arch.vae", FluxVAEDecoderStateDictConverter)
        del vae_state
        clip_state = load_state(cfg["text_encoder"], dtype, label, f"{key}.text_encoder")
        clip = build_model(flux_clip_factory, dict(arch.get("text_encoder", {})), clip_state, cfg["text_encoder"], dtype,
                           self.device, label, f"{key}.text_encoder", f"{key}.arch.text_encoder",
                           FluxTextEncoderClipStateDictConverter
                           if any(k.startswith("text_model.") for k in clip_state) else None)
        t5 = build_model(flux_t5_factory, dict(arch.get("text_encoder_2", {})),
                         load_state(cfg["text_encoder_2"], dtype, label, f"{key}.text_encoder_2"), cfg["text_encoder_2"],
                         dtype, self.device, label, f"{key}.text_encoder_2", f"{key}.arch.text_encoder_2",
                         FluxTextEncoderT5StateDictConverter)
        toks = []
        for k in ("tokenizer", "tokenizer_2"):
            try:
                toks.append(AutoTokenizer.from_pretrained(str(cfg[k]), local_files_only=True))
            except Exception as e:  # noqa: BLE001
                raise BackendError(f"{label}: cannot load the tokenizer {cfg[k]} (params {key}.{k}): "
                                   f"{e.__class__.__name__}: {e}") from e
        pipe = FluxImagePipeline(device=self.device, torch_dtype=dtype)
        pipe.dit, pipe.vae_encoder, pipe.vae_decoder = dit, enc, dec
        self.pipe = pipe
        with torch.no_grad():   # the prompt is fixed: encode it once, then free the text encoders
            self.prompt_emb, self.pooled_emb, self.text_ids = FluxImageUnit_PromptEmbedder().encode_prompt(
                toks[0], toks[1], clip, t5, cfg["prompt"], device=self.device, t5_sequence_length=T5_LEN)
        del clip, t5
        log.info("%s: FLUX loaded from %s in %.1f s (dim %d, %d+%d blocks, %s on %s)", label, cfg["dit"],
                 time.perf_counter() - t0, dcfg["dim"], dcfg["num_blocks"], dcfg["num_single_blocks"], cfg["dtype"],
                 self.device)

    def region(self, mask: np.ndarray) -> np.ndarray:
        d = self.cfg["dilate"]
        if d <= 0:
            return mask.astype(bool)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1))
        return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)

    def edit(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, dict]:
        """(H, W, 3) uint8 + product mask (H, W) -> the frame edited inside the dilated mask, and facts."""
        from diffsynth.pipelines.flux_image import model_fn_flux_image

        torch, c, pipe = self._torch, self.cfg, self.pipe
        h, w = mask.shape
        region = self.region(mask)
        size, padded = fit_size(h, w, c["max_pixels"])
        info = {"steps": c["steps"], "strength": c["strength"], "guidance": c["guidance"],
                "region_frac": round(float(region.mean()), 6), "work_size": [int(padded[1]), int(padded[0])]}
        if not region.any() or c["strength"] == 0.0:
            return image.copy(), {**info, "skipped": True}
        hp, wp = padded
        x = to_work(image, size, padded)
        r = to_work(region.astype(np.float32), size, padded) > 0
        lmask = cv2.resize(r.astype(np.float32), (wp // 8, hp // 8), interpolation=cv2.INTER_AREA) > 0
        dev, dt = self.device, self.dtype
        sched = pipe.scheduler
        sched.set_timesteps(c["steps"], denoising_strength=c["strength"])
        with torch.no_grad():
            input_latents = pipe.vae_encoder(pipe.preprocess_image(x))
            noise = pipe.generate_noise((1, 16, hp // 8, wp // 8), seed=c["seed"], rand_device="cpu")
            latents = sched.add_noise(input_latents, noise, timestep=sched.timesteps[0])
            image_ids = pipe.dit.prepare_image_ids(latents)
            guidance = torch.tensor([c["guidance"]], dtype=dt, device=dev)
            inpaint_mask = torch.from_numpy(lmask)[None, None].to(dtype=dt, device=dev)
            for i, t in enumerate(sched.timesteps):
                pred = model_fn_flux_image(dit=pipe.dit, latents=latents, timestep=t.unsqueeze(0).to(dtype=dt, device=dev),
                                           prompt_emb=self.prompt_emb, pooled_prompt_emb=self.pooled_emb,
                                           guidance=guidance, text_ids=self.text_ids, image_ids=image_ids)
                latents = pipe.step(sched, latents=latents, progress_id=i, noise_pred=pred,
                                    input_latents=input_latents, inpaint_mask=inpaint_mask)
            out = pipe.vae_decoder(latents)
        out = np.clip((out[0].float().permute(1, 2, 0).cpu().numpy() + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        back = from_work(out, size, (h, w))
        res = image.copy()
        res[region] = back[region]            # outside the region: the composite, bit for bit
        return res, info


# ----------------------------------------------------------------------------- Wan I2V

class WanI2V:
    """Wan2.1 image-to-video through DiffSynth's ``WanVideoPipeline`` (CLIP features + VAE first-frame latents)."""

    def __init__(self, cfg: dict, key: str = "synth.i2v", label: str = LABEL):
        self.cfg = cfg
        self.pipe = load_wan_pipeline(cfg, key, label, vace=False, image_encoder=cfg["image_encoder"])
        dit = self.pipe.dit
        z = self.pipe.vae.z_dim
        if dit.in_dim != 2 * z + 4:
            raise BackendError(f"{label}: {cfg['dit']} (params {key}.dit) takes {dit.in_dim} input channels; an "
                               f"image-to-video Wan DiT takes {2 * z + 4} (latents + first-frame mask + first-frame latents)")
        if dit.has_image_input and self.pipe.image_encoder is None:
            raise BackendError(f"{label}: {cfg['dit']} has an image branch and needs the CLIP image encoder "
                               f"(params {key}.image_encoder is null)")

    def generate(self, first: np.ndarray, n: int) -> tuple[np.ndarray, dict]:
        """(H, W, 3) uint8 first frame -> (n, H, W, 3) uint8 video, and facts."""
        from PIL import Image

        c = self.cfg
        h, w = first.shape[:2]
        size, (hp, wp) = fit_size(h, w, c["max_pixels"])
        win = window_length(c["max_frames"])
        cur = to_work(first, size, (hp, wp))
        out: list[np.ndarray] = []
        segments = 0
        while len(out) < n:
            want = min(win, n - len(out) + (1 if out else 0))   # a continuation repeats its start frame
            tp = pad_frames(want)
            video = self.pipe(prompt=c["prompt"], negative_prompt=c["negative_prompt"], input_image=Image.fromarray(cur),
                              seed=c["seed"] + segments, height=hp, width=wp, num_frames=tp, cfg_scale=c["cfg"],
                              num_inference_steps=c["steps"], sigma_shift=c["shift"], tiled=c["tiled"],
                              output_type="floatpoint", progress_bar_cmd=quiet)
            frames = list(video_to_uint8(video)[:want])
            out += frames[1:] if out else frames
            cur = out[-1]
            segments += 1
        frames = np.stack([from_work(f, size, (h, w)) for f in out[:n]])
        return frames, {"steps": c["steps"], "cfg": c["cfg"], "segments": segments, "work_size": [int(wp), int(hp)]}


# ----------------------------------------------------------------------------- route

@register_route("flux_wan_i2v")
class FluxWanI2VRoute(Route):
    """Route B: route A's composite -> FLUX edit of its first frame -> Wan I2V for the clip's length."""

    def __init__(self, settings: dict):
        super().__init__(settings)
        flux, i2v = settings.get("flux"), settings.get("i2v")
        if flux is None or i2v is None:
            flux, i2v = validate_sections({"synth": {"flux": flux, "i2v": i2v}})
        require_files(LABEL, [(f"synth.flux.{k}", flux[k], what) for k, what in (
            ("dit", "FLUX DiT checkpoint"), ("vae", "FLUX VAE"), ("text_encoder", "FLUX CLIP text encoder"),
            ("text_encoder_2", "FLUX T5 text encoder"), ("tokenizer", "FLUX CLIP tokenizer directory"),
            ("tokenizer_2", "FLUX T5 tokenizer directory"))]
            + [(f"synth.i2v.{k}", i2v[k], what) for k, what in (
                ("dit", "Wan I2V DiT checkpoint"), ("vae", "Wan2.1 VAE"), ("image_encoder", "Wan CLIP image encoder"),
                ("text_encoder", "umT5 text encoder"), ("tokenizer", "umT5 tokenizer directory"))])
        self.composite = CompositeRoute(settings)
        self.flux = FluxEditor(flux)
        self.i2v = WanI2V(i2v)

    def synthesize(self, pair: dict, work: Path) -> SynthResult:
        base = self.composite.synthesize(pair, work)      # route A: trajectory, composite, mask, rejects
        t0 = time.perf_counter()
        first, flux_info = self.flux.edit(base.frames[0], base.mask[0])
        t1 = time.perf_counter()
        frames, i2v_info = self.i2v.generate(first, len(base.frames))
        log.info("flux_wan_i2v: %s: FLUX %.1f s, Wan I2V %d frames (%d segment(s)) %.1f s", pair.get("id"), t1 - t0,
                 len(frames), i2v_info["segments"], time.perf_counter() - t1)
        return SynthResult(frames=frames, mask=base.mask, fps=base.fps,
                           meta={**base.meta, "flux": flux_info, "i2v": i2v_info})
