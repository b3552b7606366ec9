"""Condition encoders: the caption and the reference product image -> token sequences.

The DiT's image branch (Wan I2V's ``img_emb`` + separate image k/v) takes 257 tokens of width
1280, the shape CLIP ViT-H gives (``clip_vit_h``, as Wan I2V). DINOv2 (``dinov2``) is the other
choice: at 224 px with patch 14 it also gives 257 tokens (CLS + 16x16 patches), of its own
width; the DiT then gets an ``img_emb`` of that input width (``image_dim``), new weights either
way, gated to zero at step 0 like the rest of the image branch (``pvtt.models.base``). The caption
goes through Wan's umT5-XXL encoder (``umt5``: DiffSynth's ``WanTextEncoder`` and its tokenizer
class, 512 tokens of width 4096, zero past the caption's length as Wan pads its context).

The stand-ins the sample uses (``tiny``, ``hashed``) produce the same shapes from fixed, seeded
random projections (frozen, like the real encoders), so the conditioning path is the real one
and only the feature extractor differs. Every encoder computes on its device in its dtype
(``pvtt.models.components``) and returns float32 on the device its input came from.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genbuild.metrics.learned import IMAGENET_MEAN, IMAGENET_STD
from genbuild.weights import require_weights, weights_error

IMAGE_TOKENS = 257
IMAGE_DIM = 1280
UMT5_TEXT_LEN = 512  # Wan's text_len: every caption is 512 tokens, zero past its length
CPU, FP32 = torch.device("cpu"), torch.float32


def reference_to_tensor(rgba: np.ndarray, size: int) -> torch.Tensor:
    """RGBA uint8 product cut-out -> (3, size, size) in [-1, 1], composited on mid grey, letterboxed."""
    rgba = np.asarray(rgba, dtype=np.float32) / 255.0
    if rgba.shape[-1] == 4:
        a = rgba[..., 3:4]
        rgb = rgba[..., :3] * a + 0.5 * (1 - a)
    else:
        rgb = rgba[..., :3]
    h, w = rgb.shape[:2]
    side = max(h, w)
    canvas = np.full((side, side, 3), 0.5, dtype=np.float32)
    canvas[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = rgb
    t = torch.from_numpy(canvas).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return t * 2 - 1


class _Placed(nn.Module):
    """A frozen encoder that computes on ``device`` in ``dtype`` and hands back float32 where its input was."""

    device: torch.device = CPU
    dtype: torch.dtype = FP32

    def place(self, device=CPU, dtype=FP32) -> _Placed:
        self.device, self.dtype = torch.device(device), dtype
        return self.to(device=self.device, dtype=dtype).eval().requires_grad_(False)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self.device, dtype=self.dtype)


class TinyImageEncoder(_Placed):
    """Frozen random patch features: 16x16 patches of the reference + a mean token -> (257, 1280)."""

    dim = IMAGE_DIM

    def __init__(self, size: int = 64, seed: int = 0, device=CPU, dtype=FP32):
        super().__init__()
        if size % 16:
            raise ValueError(f"train_data.reference_size must be a multiple of 16, got {size}")
        self.size, self.patch = size, size // 16
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(3 * self.patch * self.patch, IMAGE_DIM)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=g) / (3 * self.patch ** 2) ** 0.5)
            self.proj.bias.zero_()
        self.place(device, dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # frozen; differentiable in its input (distill identity)
        patches = F.unfold(self._in(images), self.patch, stride=self.patch).transpose(1, 2)  # (B, 256, 3*p*p)
        tokens = self.proj(patches)
        return torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1).to(images.device, FP32)


def _load_diffsynth(factory, path, arch: dict | None, device, dtype, what: str, key: str, converter=None) -> nn.Module:
    """``factory(**arch)`` with the weights at ``path`` via DiffSynth's ``load_model`` (built on the meta
    device, state-dict converter applied, loaded strictly): a file that does not fit stops here."""
    from diffsynth.core.loader.model import load_model

    weights = require_weights(path, what)
    try:
        model = load_model(factory, str(weights), config=dict(arch or {}), torch_dtype=dtype, device=str(device),
                           state_dict_converter=converter)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise weights_error(what, weights, key, f"does not fit {getattr(factory, '__name__', factory)}"
                            f"{f' with arch {arch}' if arch else ''}", e) from e
    return model.eval().requires_grad_(False)


def wan_image_encoder(**arch) -> nn.Module:
    """DiffSynth's ``WanImageEncoder`` (open-clip XLM-RoBERTa ViT-H/14); ``arch`` overrides its CLIP config
    (tests build tiny ones; the published file needs none)."""
    from diffsynth.models.wan_video_image_encoder import WanImageEncoder, clip_xlm_roberta_vit_h_14

    if not arch:
        return WanImageEncoder()
    enc = WanImageEncoder.__new__(WanImageEncoder)
    nn.Module.__init__(enc)
    enc.model, enc.transforms = clip_xlm_roberta_vit_h_14(pretrained=False, return_transforms=True, return_tokenizer=False,
                                                          dtype=torch.float32, device="cpu", **arch)
    return enc


class WanClipImageEncoder(_Placed):
    """CLIP ViT-H/14 as Wan I2V uses it (DiffSynth's WanImageEncoder), from the published
    ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (keys ``visual.*``, ``textual.*``,
    ``log_scale``), read through DiffSynth's ``WanImageEncoderStateDictConverter`` (drops the text
    tower, prefixes ``model.``). Output: the penultimate block's 257 tokens of width 1280."""

    dim = IMAGE_DIM

    def __init__(self, path: str, arch: dict | None = None, device=CPU, dtype=FP32, key: str = "model.image_encoder.path"):
        super().__init__()
        from diffsynth.utils.state_dict_converters.wan_video_image_encoder import WanImageEncoderStateDictConverter

        self.model = _load_diffsynth(wan_image_encoder, path, arch, device, dtype, "CLIP ViT-H image encoder", key,
                                     converter=WanImageEncoderStateDictConverter)
        self.dim = int(self.model.model.vision_dim)
        self.place(device, dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # frozen; differentiable in its input (distill identity)
        """(B, 3, H, W) in [-1, 1] -> (B, 257, 1280). DiffSynth's ``encode_image`` takes a list of
        4-D image batches (it resizes each in 2-D to 224 px), as its Wan pipeline calls it."""
        return self.model.encode_image([self._in(images)]).to(images.device, FP32)


class Dinov2ImageEncoder(_Placed):
    """DINOv2 (transformers' Dinov2Model) from a local directory: its last hidden states,
    CLS + patch tokens at 224 px (257 tokens for patch 14), as the reference-image tokens."""

    SIZE = 224
    MEAN, STD = IMAGENET_MEAN, IMAGENET_STD  # as DINOv2 was trained

    def __init__(self, path: str | None = None, model: nn.Module | None = None, device=CPU, dtype=FP32):
        super().__init__()
        if model is None:
            from transformers import Dinov2Model

            from genbuild.hf_loading import check_loading_info

            where = str(require_weights(path, "DINOv2 image encoder"))
            model, info = Dinov2Model.from_pretrained(where, local_files_only=True, output_loading_info=True)
            check_loading_info(info, where, "model.image_encoder.path")   # the published layout reports nothing
        self.model = model
        self.dim = int(model.config.hidden_size)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.place(device, dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # frozen; differentiable in its input (distill identity)
        x = F.interpolate(self._in(images), size=(self.SIZE, self.SIZE), mode="bicubic", align_corners=False)
        x = ((x + 1) / 2 - self.mean) / self.std
        return self.model(pixel_values=x).last_hidden_state.to(images.device, FP32)


class HashedTextEncoder(_Placed):
    """Caption -> (max_len, text_dim): words hashed into a frozen random embedding table.

    Stands in for umT5 on the sample; deterministic and shape-compatible with the DiT's
    text branch.
    """

    def __init__(self, text_dim: int, max_len: int = 16, vocab: int = 4096, seed: int = 0, device=CPU, dtype=FP32):
        super().__init__()
        self.max_len, self.vocab = max_len, vocab
        g = torch.Generator().manual_seed(seed + 1)
        self.table = nn.Embedding(vocab + 1, text_dim, padding_idx=vocab)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(self.table.weight.shape, generator=g))
            self.table.weight[vocab].zero_()
        self.place(device, dtype)

    def token_ids(self, caption: str) -> list[int]:
        words = re.findall(r"[a-z0-9]+", caption.lower())[: self.max_len]
        ids = [int(hashlib.sha256(w.encode()).hexdigest()[:8], 16) % self.vocab for w in words]
        return ids + [self.vocab] * (self.max_len - len(ids))

    @torch.no_grad()
    def forward(self, captions: list[str]) -> torch.Tensor:
        ids = torch.tensor([self.token_ids(c) for c in captions], dtype=torch.long, device=self.device)
        return self.table(ids).to(CPU, FP32)


def wan_text_encoder(**arch) -> nn.Module:
    """DiffSynth's ``WanTextEncoder`` (Wan's umT5-XXL encoder); ``arch`` overrides its config (tests)."""
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder

    return WanTextEncoder(**arch)


class UMT5TextEncoder(_Placed):
    """Wan's umT5-XXL text encoder: DiffSynth's ``WanTextEncoder`` with the published
    ``models_t5_umt5-xxl-enc-bf16.pth`` (Wan's ``T5Encoder`` names: ``token_embedding.weight``,
    ``blocks.N.attn.q.weight``, ``blocks.N.pos_embedding.embedding.weight``, ..., ``norm.weight``; no
    converter needed) and DiffSynth's ``HuggingfaceTokenizer`` over the local tokenizer directory
    (Wan's ``google/umt5-xxl``), cleaned and padded as Wan does. Caption -> (max_len, 4096), zero
    past each caption's tokens, as Wan pads its context to ``text_len`` 512.
    """

    def __init__(self, path: str, tokenizer: str, text_dim: int, max_len: int = UMT5_TEXT_LEN, arch: dict | None = None,
                 device=CPU, dtype=FP32, key: str = "model.text_encoder"):
        super().__init__()
        from diffsynth.models.wan_video_text_encoder import HuggingfaceTokenizer

        tok_dir = require_weights(tokenizer, "umT5 tokenizer directory")
        self.model = _load_diffsynth(wan_text_encoder, path, arch, device, dtype, "umT5-XXL text encoder", f"{key}.path")
        if int(self.model.dim) != int(text_dim):
            raise ValueError(f"{key}: the umT5 encoder gives width {self.model.dim}, the DiT's text branch (model.preset) "
                             f"takes {text_dim}")
        try:
            self.tokenizer = HuggingfaceTokenizer(name=str(tok_dir), seq_len=int(max_len), clean="whitespace",
                                                  local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise weights_error("umT5 tokenizer directory", tok_dir, f"{key}.tokenizer", "does not load with AutoTokenizer", e) from e
        self.max_len = int(max_len)
        self.place(device, dtype)

    @torch.no_grad()
    def forward(self, captions: list[str]) -> torch.Tensor:
        ids, mask = self.tokenizer(list(captions), return_mask=True, add_special_tokens=True)
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.model(ids, mask)
        keep = torch.arange(out.shape[1], device=out.device)[None] < mask.gt(0).sum(1, keepdim=True)
        return out.masked_fill(~keep[..., None], 0).to(CPU, FP32)


IMAGE_KINDS = ("tiny", "clip_vit_h", "dinov2")
TEXT_KINDS = ("hashed", "umt5")


def image_token_dim(cfg: dict) -> int:
    """Width of the encoder's tokens, read without loading its weights (the DiT is built first)."""
    kind = cfg.get("kind", "tiny")
    if kind == "clip_vit_h":
        return int((cfg.get("arch") or {}).get("vision_dim", IMAGE_DIM))
    if kind != "dinov2":
        return IMAGE_DIM
    from transformers import Dinov2Config

    return int(Dinov2Config.from_pretrained(str(require_weights(cfg.get("path"), "DINOv2 image encoder")),
                                            local_files_only=True).hidden_size)


def build_image_encoder(cfg: dict, device=CPU, dtype=FP32) -> nn.Module:
    kind = cfg.get("kind", "tiny")
    if kind == "tiny":
        return TinyImageEncoder(int(cfg.get("size", 64)), int(cfg.get("seed", 0)), device, dtype)
    if kind == "clip_vit_h":
        return WanClipImageEncoder(cfg.get("path"), cfg.get("arch"), device, dtype)
    if kind == "dinov2":
        return Dinov2ImageEncoder(cfg.get("path"), device=device, dtype=dtype)
    raise ValueError(f"model image_encoder.kind: unknown encoder '{kind}' (known: {', '.join(IMAGE_KINDS)})")


def build_text_encoder(cfg: dict, text_dim: int, device=CPU, dtype=FP32) -> nn.Module:
    kind = cfg.get("kind", "hashed")
    if kind == "hashed":
        return HashedTextEncoder(text_dim, int(cfg.get("max_len", 16)), seed=int(cfg.get("seed", 0)), device=device, dtype=dtype)
    if kind == "umt5":
        return UMT5TextEncoder(cfg.get("path"), cfg.get("tokenizer"), text_dim, int(cfg.get("max_len", UMT5_TEXT_LEN)),
                               cfg.get("arch"), device, dtype)
    raise ValueError(f"model text_encoder.kind: unknown encoder '{kind}' (known: {', '.join(TEXT_KINDS)})")


def check_files(name: str, cfg: dict) -> None:
    """Stop now, naming the path, when a real encoder's files are missing (their loading may wait)."""
    kind = cfg.get("kind")
    if kind == "clip_vit_h":
        require_weights(cfg.get("path"), "CLIP ViT-H image encoder")
    elif kind == "dinov2":
        require_weights(cfg.get("path"), "DINOv2 image encoder")
    elif kind == "umt5":
        require_weights(cfg.get("path"), "umT5-XXL text encoder")
        require_weights(cfg.get("tokenizer"), "umT5 tokenizer directory")
