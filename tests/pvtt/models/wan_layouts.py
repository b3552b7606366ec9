"""Tiny checkpoints in the layouts Wan2.1 publishes, for its CLIP image encoder and umT5 text encoder.

The key names and shapes are written out here from the original authors' code (Wan-Video/Wan2.1,
``wan/modules/clip.py`` with ``xlm_roberta.py``, and ``wan/modules/t5.py``), not taken from
DiffSynth's classes or from our loader, so a loader that needs a converter (or the wrong one)
fails on them as it would on the published files:

- ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``: ``XLMRobertaCLIP().state_dict()``,
  loaded by Wan's ``CLIPModel`` with ``load_state_dict(torch.load(path))``: ``visual.*`` (a
  ViT with ``pool_type='token'``, pre-norm, GELU MLPs), ``textual.*`` (XLM-RoBERTa with a
  two-layer head) and ``log_scale``.
- ``models_t5_umt5-xxl-enc-bf16.pth``: ``T5Encoder`` (``umt5_xxl(encoder_only=True)``, so
  ``shared_pos=False``: a relative position embedding in every block) in bfloat16, loaded by
  Wan's ``T5EncoderModel`` the same way.
- the tokenizer directory (Wan's ``google/umt5-xxl``): a T5 tokenizer (``<pad>`` 0, ``</s>`` 1,
  ``<unk>`` 2), here a tiny Unigram vocabulary saved with ``save_pretrained``, no download.

Values are random; what the tests check is that the real files' layout goes through the
project's loader with strict key checking and that the forward runs with the pipeline's shapes.
"""
from __future__ import annotations

from pathlib import Path

import torch

# Tiny widths; the published files are ViT-H/14 (vision_dim 1280, 32 layers, 16 heads, embed 1024,
# XLM-RoBERTa-large text tower) and umT5-XXL (dim 4096, 24 layers, 64 heads, vocab 256384).
CLIP_TINY = {"embed_dim": 16, "image_size": 224, "patch_size": 14, "vision_dim": 48, "vision_mlp_ratio": 2,
             "vision_heads": 2, "vision_layers": 2}
CLIP_TEXT_TINY = {"vocab_size": 40, "max_text_len": 12, "type_size": 1, "text_dim": 16, "text_layers": 1}
UMT5_TINY = {"vocab": 64, "dim": 32, "dim_attn": 32, "dim_ffn": 48, "num_heads": 2, "num_layers": 2, "num_buckets": 8}
WORDS = "a an the red blue green leather bag watch bottle box product on white shown in video of".split()


def wan_clip_state(vision: dict = CLIP_TINY, text: dict = CLIP_TEXT_TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """``XLMRobertaCLIP(...).state_dict()`` names and shapes, per Wan2.1's clip.py / xlm_roberta.py."""
    g = torch.Generator().manual_seed(seed)
    d, p, s = vision["vision_dim"], vision["patch_size"], vision["image_size"]
    mlp, e = int(d * vision["vision_mlp_ratio"]), vision["embed_dim"]
    t, v = text["text_dim"], text["vocab_size"]
    shapes: dict[str, tuple] = {
        # VisionTransformer: Conv2d patch embedding without bias (pre_norm), token pooling
        "visual.patch_embedding.weight": (d, 3, p, p),
        "visual.cls_embedding": (1, 1, d),
        "visual.pos_embedding": (1, (s // p) ** 2 + 1, d),
        "visual.pre_norm.weight": (d,), "visual.pre_norm.bias": (d,),
    }
    for i in range(vision["vision_layers"]):
        b = f"visual.transformer.{i}"
        shapes |= {f"{b}.norm1.weight": (d,), f"{b}.norm1.bias": (d,),
                   f"{b}.attn.to_qkv.weight": (3 * d, d), f"{b}.attn.to_qkv.bias": (3 * d,),
                   f"{b}.attn.proj.weight": (d, d), f"{b}.attn.proj.bias": (d,),
                   f"{b}.norm2.weight": (d,), f"{b}.norm2.bias": (d,),
                   f"{b}.mlp.0.weight": (mlp, d), f"{b}.mlp.0.bias": (mlp,),
                   f"{b}.mlp.2.weight": (d, mlp), f"{b}.mlp.2.bias": (d,)}
    shapes |= {"visual.post_norm.weight": (d,), "visual.post_norm.bias": (d,), "visual.head": (d, e)}
    # XLMRobertaWithHead: embeddings, post-norm blocks, a bias-free two-layer head
    shapes |= {"textual.token_embedding.weight": (v, t), "textual.type_embedding.weight": (text["type_size"], t),
               "textual.pos_embedding.weight": (text["max_text_len"], t),
               "textual.norm.weight": (t,), "textual.norm.bias": (t,)}
    for i in range(text["text_layers"]):
        b = f"textual.blocks.{i}"
        for n in "qkvo":
            shapes |= {f"{b}.attn.{n}.weight": (t, t), f"{b}.attn.{n}.bias": (t,)}
        shapes |= {f"{b}.norm1.weight": (t,), f"{b}.norm1.bias": (t,),
                   f"{b}.ffn.0.weight": (4 * t, t), f"{b}.ffn.0.bias": (4 * t,),
                   f"{b}.ffn.2.weight": (t, 4 * t), f"{b}.ffn.2.bias": (t,),
                   f"{b}.norm2.weight": (t,), f"{b}.norm2.bias": (t,)}
    mid = (t + e) // 2
    shapes |= {"textual.head.0.weight": (mid, t), "textual.head.2.weight": (e, mid), "log_scale": ()}
    state = {k: torch.randn(shape, generator=g) * 0.05 for k, shape in shapes.items()}
    for k in state:  # LayerNorm weights near 1, as trained ones are
        if k.endswith("norm.weight") or ".norm1.weight" in k or ".norm2.weight" in k:
            state[k] = 1 + state[k]
    return state


def write_wan_clip(path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wan_clip_state(**kw), path)  # Wan saves the plain state dict
    return path


def umt5_state(arch: dict = UMT5_TINY, seed: int = 0, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """``T5Encoder(..., shared_pos=False).state_dict()`` names and shapes, per Wan2.1's t5.py, in bf16."""
    g = torch.Generator().manual_seed(seed)
    d, a, f, h = arch["dim"], arch["dim_attn"], arch["dim_ffn"], arch["num_heads"]
    shapes: dict[str, tuple] = {"token_embedding.weight": (arch["vocab"], d)}
    for i in range(arch["num_layers"]):
        b = f"blocks.{i}"
        shapes |= {f"{b}.norm1.weight": (d,),
                   f"{b}.attn.q.weight": (a, d), f"{b}.attn.k.weight": (a, d), f"{b}.attn.v.weight": (a, d),
                   f"{b}.attn.o.weight": (d, a),
                   f"{b}.norm2.weight": (d,),
                   f"{b}.ffn.gate.0.weight": (f, d), f"{b}.ffn.fc1.weight": (f, d), f"{b}.ffn.fc2.weight": (d, f),
                   f"{b}.pos_embedding.embedding.weight": (arch["num_buckets"], h)}
    shapes["norm.weight"] = (d,)
    state = {k: torch.randn(shape, generator=g) * (0.3 if "embedding" in k else 0.1) for k, shape in shapes.items()}
    for k in state:
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight":
            state[k] = 1 + 0.1 * state[k]
    return {k: v.to(dtype) for k, v in state.items()}


def write_umt5(path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(umt5_state(**kw), path)
    return path


def write_umt5_tokenizer(directory: Path, words=WORDS) -> Path:
    """A tiny T5 (Unigram) tokenizer directory in the umT5 ids' convention, loadable by AutoTokenizer offline."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{w}", -float(i + 1)) for i, w in enumerate(words)]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(str(directory))
    return directory
