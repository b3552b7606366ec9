"""Checkpoint layout fixtures: the published files' key names, nesting, shapes, dtypes and containers.

Every key list here comes from a source independent of the code under test (the project's loaders,
DiffSynth's classes and converters): the original authors' model definitions, transcribed as key
*generators* (name -> shape, as a function of the widths), or the authors' own module classes where
those classes wrote the published files (transformers, open_clip, torchvision, sam2). A generator is
tied to the real published file by a fingerprint: DiffSynth-Studio identifies published checkpoints by
the md5 of their sorted ``key:shape`` list (``diffsynth/configs/model_configs.py``, ``model_hash``,
computed from the downloaded files), and :func:`keys_hash` recomputes it; at the published widths a
generator must reproduce that md5, so it lists exactly the published keys with their shapes. The tiny
fixtures are the same generators at reduced widths and depths (same names, nesting and ranks). When
written, each generator was also compared key for key and shape for shape with the authors' modules
themselves (imported from the commits in :data:`SOURCES`, at tiny and at published widths).

Nothing here runs a project converter backwards. Each fixture builder names its source in
:data:`SOURCES`.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

# --------------------------------------------------------------------------------------- sources
SOURCES = {
    "wan_dit": "Wan-Video/Wan2.1 wan/modules/model.py (WanModel, WanAttentionBlock, Head, MLPProj) @ 9737cba9c1c3",
    "wan_vace": "Wan-Video/Wan2.1 wan/modules/vace_model.py (VaceWanModel, VaceWanAttentionBlock) @ 9737cba9c1c3",
    "wan21_vae": "Wan-Video/Wan2.1 wan/modules/vae.py (WanVAE_, Encoder3d, Decoder3d, _video_vae) @ 9737cba9c1c3",
    "wan22_vae": "Wan-Video/Wan2.2 wan/modules/vae2_2.py (WanVAE_, Down/Up_ResidualBlock, Wan2_2_VAE) @ 42bf4cfaa384",
    "wan_diffusers": "huggingface/diffusers src/diffusers/models/transformers/transformer_wan.py "
                     "(WanTransformer3DModel, as Wan-AI/*-Diffusers were saved) @ b6bd8f1fb709",
    "flux_dit": "black-forest-labs/flux src/flux/model.py + modules/layers.py (Flux, configs 'flux-dev') @ 802fb4713906",
    "flux_ae": "black-forest-labs/flux src/flux/modules/autoencoder.py (AutoEncoder, 'flux-dev' ae_params) @ 802fb4713906",
    "hf_clip_l": "transformers CLIPTextModel (openai/clip-vit-large-patch14 text config), as FLUX.1-dev/text_encoder",
    "hf_t5": "transformers T5EncoderModel (google/t5-v1_1-xxl config), as FLUX.1-dev/text_encoder_2 (2 shards + index)",
    "hf_dinov2": "transformers 4.x models/dinov2/modeling_dinov2.py names (facebook/dinov2-* model.safetensors)",
    "hf_qwen2vl": "transformers 4.45 models/qwen2_vl/modeling_qwen2_vl.py names (Qwen/Qwen2-VL-*-Instruct shards + index)",
    "hf_grounding_dino": "transformers convert_grounding_dino_to_hf.py target names (IDEA-Research/grounding-dino-tiny); "
                         "see tests/pvtt/layouts/test_hf_dir_layouts.py",
    "sam2": "facebookresearch/sam2 (sam2 1.1.0) SAM2Base from configs/sam2.1/sam2.1_hiera_t.yaml; file {'model': sd}",
    "open_clip": "mlfoundations/open_clip (open_clip_torch 3.3.0) open_clip.CLIP, ViT-H-14 structure",
    "lpips_backbone": "pytorch/vision (torchvision 0.29.2) alexnet / vgg16 / squeezenet1_1 state dicts",
    "rembg_onnx": "danielgatis/rembg 2.0.86 sessions/*.py: input read by name, static 320/1024 px, outputs[0][:, 0]",
    "fingerprints": "DiffSynth-Studio diffsynth/configs/model_configs.py model_hash (diffsynth 2.1.12): md5 of the "
                    "published file's sorted key:shape list, see keys_hash",
}

# Published-file fingerprints (DiffSynth's model_hash of the real downloads; see module docstring).
PUBLISHED_HASH = {
    "Wan2.1-T2V-1.3B": "9269f8db9040a9d860eaca435be61814",
    "Wan2.1-T2V-14B": "aafcfd9672c3a2456dc46e1cb6e52c70",
    "Wan2.1-FLF2V-14B-720P": "3ef3b1f8e1dab83d5b71fd7b617f859f",
    "Wan2.2-TI2V-5B": "1f5ab7703c6fc803fdded85ff040c316",
    "Wan2.1-VACE-14B": "7a513e1f257a861512b1afd387a8ecd9",
    "VACE-Wan2.1-1.3B-Preview": "a61453409b67cd3246cf0c3bebad47ba",
    "Wan2.1_VAE.pth": "ccc42284ea13e1ad04693284c7a09be6",
    "Wan2.2_VAE.pth": "e1de6c02cdac79f8b739f4d3698cd216",
    "flux1-dev.safetensors": "a29710fea6dddb0314663ee823598e50",
    "ae.safetensors": "21ea55f476dfc4fd135587abb59dfe5d",
    "FLUX.1-dev/text_encoder": "94eefa3dac9cec93cb1ebaf1747d7b78",
    "FLUX.1-dev/text_encoder_2": "22540b49eaedbc2f2784b2091a234c7c",
}

# Published configurations (the authors' config files / model cards).
WAN21_1_3B = dict(dim=1536, in_dim=16, ffn_dim=8960, out_dim=16, text_dim=4096, freq_dim=256, num_layers=30)
WAN21_14B = dict(dim=5120, in_dim=16, ffn_dim=13824, out_dim=16, text_dim=4096, freq_dim=256, num_layers=40)
WAN22_5B = dict(dim=3072, in_dim=48, ffn_dim=14336, out_dim=48, text_dim=4096, freq_dim=256, num_layers=30)


def keys_hash(shapes: dict[str, tuple]) -> str:
    """DiffSynth's ``hash_model_file`` fingerprint of a key -> shape map: md5 of the sorted entries
    ``key:d0_d1_...`` and ``key``, joined by commas (re-implemented here, so no project code runs)."""
    items = []
    for k, s in shapes.items():
        items += [f"{k}:{'_'.join(str(int(d)) for d in s)}", k]
    return hashlib.md5(",".join(sorted(items)).encode()).hexdigest()


def shapes_of(state: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


# ------------------------------------------------------------------------------ key generators
def _lin(out: dict, name: str, o: int, i: int, bias: bool = True) -> None:
    out[f"{name}.weight"] = (o, i)
    if bias:
        out[f"{name}.bias"] = (o,)


def _conv(out: dict, name: str, o: int, i: int, k: tuple, bias: bool = True) -> None:
    out[f"{name}.weight"] = (o, i, *k)
    if bias:
        out[f"{name}.bias"] = (o,)


def wan_block_shapes(p: str, dim: int, ffn_dim: int, image: bool = False) -> dict:
    """One ``WanAttentionBlock`` (cross_attn_norm=True, qk_norm=True, as every Wan2.1/2.2 config)."""
    s: dict = {}
    for a in ("q", "k", "v", "o"):
        _lin(s, f"{p}.self_attn.{a}", dim, dim)
    s[f"{p}.self_attn.norm_q.weight"] = (dim,)
    s[f"{p}.self_attn.norm_k.weight"] = (dim,)
    s[f"{p}.norm3.weight"] = (dim,)
    s[f"{p}.norm3.bias"] = (dim,)
    for a in ("q", "k", "v", "o"):
        _lin(s, f"{p}.cross_attn.{a}", dim, dim)
    s[f"{p}.cross_attn.norm_q.weight"] = (dim,)
    s[f"{p}.cross_attn.norm_k.weight"] = (dim,)
    if image:  # WanI2VCrossAttention
        _lin(s, f"{p}.cross_attn.k_img", dim, dim)
        _lin(s, f"{p}.cross_attn.v_img", dim, dim)
        s[f"{p}.cross_attn.norm_k_img.weight"] = (dim,)
    _lin(s, f"{p}.ffn.0", ffn_dim, dim)
    _lin(s, f"{p}.ffn.2", dim, ffn_dim)
    s[f"{p}.modulation"] = (1, 6, dim)
    return s


def wan_dit_shapes(*, dim: int, in_dim: int, ffn_dim: int, out_dim: int, text_dim: int, freq_dim: int,
                   num_layers: int, patch=(1, 2, 2), model_type: str = "t2v", image_dim: int = 1280) -> dict:
    """Original Wan layout (``blocks.N.self_attn.q.weight`` ...), as ``WanModel(model_type=...).state_dict()``.

    model_type: t2v (also Wan2.2 ti2v), i2v (image branch) or flf2v (i2v + ``img_emb.emb_pos``)."""
    image = model_type in ("i2v", "flf2v")
    s: dict = {}
    _conv(s, "patch_embedding", dim, in_dim, tuple(patch))
    _lin(s, "text_embedding.0", dim, text_dim)
    _lin(s, "text_embedding.2", dim, dim)
    _lin(s, "time_embedding.0", dim, freq_dim)
    _lin(s, "time_embedding.2", dim, dim)
    _lin(s, "time_projection.1", 6 * dim, dim)
    for i in range(num_layers):
        s.update(wan_block_shapes(f"blocks.{i}", dim, ffn_dim, image))
    _lin(s, "head.head", out_dim * math.prod(patch), dim)
    s["head.modulation"] = (1, 2, dim)
    if image:  # MLPProj(1280, dim): LayerNorm, Linear, GELU, Linear, LayerNorm
        s["img_emb.proj.0.weight"] = s["img_emb.proj.0.bias"] = (image_dim,)
        _lin(s, "img_emb.proj.1", image_dim, image_dim)
        _lin(s, "img_emb.proj.3", dim, image_dim)
        s["img_emb.proj.4.weight"] = s["img_emb.proj.4.bias"] = (dim,)
        if model_type == "flf2v":
            s["img_emb.emb_pos"] = (1, 2 * 257, image_dim)
    return s


def wan_vace_shapes(*, dim: int, ffn_dim: int, vace_layers, vace_in_dim: int = 96, patch=(1, 2, 2), **dit) -> dict:
    """``VaceWanModel``: the T2V DiT plus ``vace_blocks.N`` (``before_proj`` on the first) and
    ``vace_patch_embedding``, all in the same file (Wan2.1-VACE-1.3B/14B)."""
    s = wan_dit_shapes(dim=dim, ffn_dim=ffn_dim, patch=patch, model_type="t2v", **dit)
    for n, _ in enumerate(vace_layers):
        s.update(wan_block_shapes(f"vace_blocks.{n}", dim, ffn_dim))
        if n == 0:
            _lin(s, f"vace_blocks.{n}.before_proj", dim, dim)
        _lin(s, f"vace_blocks.{n}.after_proj", dim, dim)
    _conv(s, "vace_patch_embedding", dim, vace_in_dim, tuple(patch))
    return s


def wan_diffusers_shapes(*, dim: int, in_dim: int, ffn_dim: int, out_dim: int, text_dim: int, freq_dim: int,
                         num_layers: int, patch=(1, 2, 2), image_dim: int | None = None) -> dict:
    """diffusers' ``WanTransformer3DModel`` layout (Wan-AI/Wan2.1-*-Diffusers ``transformer/``):
    ``blocks.N.attn1.to_q.weight``, ``condition_embedder.*``, top-level ``scale_shift_table``;
    ``image_dim`` set = I2V (``attn2.add_k_proj``, ``condition_embedder.image_embedder``)."""
    s: dict = {}
    _conv(s, "patch_embedding", dim, in_dim, tuple(patch))
    _lin(s, "condition_embedder.time_embedder.linear_1", dim, freq_dim)
    _lin(s, "condition_embedder.time_embedder.linear_2", dim, dim)
    _lin(s, "condition_embedder.time_proj", 6 * dim, dim)
    _lin(s, "condition_embedder.text_embedder.linear_1", dim, text_dim)
    _lin(s, "condition_embedder.text_embedder.linear_2", dim, dim)
    if image_dim is not None:  # WanImageEmbedding: FP32LayerNorm, FeedForward(mult=1, gelu), FP32LayerNorm
        e = "condition_embedder.image_embedder"
        s[f"{e}.norm1.weight"] = s[f"{e}.norm1.bias"] = (image_dim,)
        _lin(s, f"{e}.ff.net.0.proj", image_dim, image_dim)
        _lin(s, f"{e}.ff.net.2", dim, image_dim)
        s[f"{e}.norm2.weight"] = s[f"{e}.norm2.bias"] = (dim,)
    for i in range(num_layers):
        p = f"blocks.{i}"
        for a in ("attn1", "attn2"):
            for x in ("to_q", "to_k", "to_v", "to_out.0"):
                _lin(s, f"{p}.{a}.{x}", dim, dim)
            s[f"{p}.{a}.norm_q.weight"] = s[f"{p}.{a}.norm_k.weight"] = (dim,)
        if image_dim is not None:
            _lin(s, f"{p}.attn2.add_k_proj", dim, dim)
            _lin(s, f"{p}.attn2.add_v_proj", dim, dim)
            s[f"{p}.attn2.norm_added_k.weight"] = (dim,)
        s[f"{p}.norm2.weight"] = s[f"{p}.norm2.bias"] = (dim,)   # the cross-attention norm (affine)
        _lin(s, f"{p}.ffn.net.0.proj", ffn_dim, dim)
        _lin(s, f"{p}.ffn.net.2", dim, ffn_dim)
        s[f"{p}.scale_shift_table"] = (1, 6, dim)
    _lin(s, "proj_out", out_dim * math.prod(patch), dim)
    s["scale_shift_table"] = (1, 2, dim)
    return s


def _vae_res(s: dict, p: str, i: int, o: int) -> None:
    """Wan ``ResidualBlock``: RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout, CausalConv3d (+1x1 shortcut)."""
    s[f"{p}.residual.0.gamma"] = (i, 1, 1, 1)
    _conv(s, f"{p}.residual.2", o, i, (3, 3, 3))
    s[f"{p}.residual.3.gamma"] = (o, 1, 1, 1)
    _conv(s, f"{p}.residual.6", o, o, (3, 3, 3))
    if i != o:
        _conv(s, f"{p}.shortcut", o, i, (1, 1, 1))


def _vae_attn(s: dict, p: str, d: int) -> None:
    s[f"{p}.norm.gamma"] = (d, 1, 1)
    _conv(s, f"{p}.to_qkv", 3 * d, d, (1, 1))
    _conv(s, f"{p}.proj", d, d, (1, 1))


def _vae_resample(s: dict, p: str, d: int, mode: str, wan22: bool) -> None:
    if mode.startswith("down"):
        _conv(s, f"{p}.resample.1", d, d, (3, 3))
        if mode == "downsample3d":
            _conv(s, f"{p}.time_conv", d, d, (3, 1, 1))
    else:  # Wan2.1 halves the channels in the upsampling conv, Wan2.2 keeps them
        _conv(s, f"{p}.resample.1", d if wan22 else d // 2, d, (3, 3))
        if mode == "upsample3d":
            _conv(s, f"{p}.time_conv", 2 * d, d, (3, 1, 1))


def _vae_middle(s: dict, p: str, d: int) -> None:
    _vae_res(s, f"{p}.middle.0", d, d)
    _vae_attn(s, f"{p}.middle.1", d)
    _vae_res(s, f"{p}.middle.2", d, d)


def _vae_head(s: dict, p: str, d: int, out: int) -> None:
    s[f"{p}.head.0.gamma"] = (d, 1, 1, 1)
    _conv(s, f"{p}.head.2", out, d, (3, 3, 3))


def wan21_vae_shapes(dim: int = 96, z_dim: int = 16, dim_mult=(1, 2, 4, 4), num_res_blocks: int = 2,
                     temporal_down=(False, True, True)) -> dict:
    """``Wan2.1_VAE.pth``: the plain state dict of ``WanVAE_`` (``_video_vae``: dim 96, z_dim 16)."""
    s: dict = {}
    dims = [dim * u for u in (1, *dim_mult)]
    _conv(s, "encoder.conv1", dims[0], 3, (3, 3, 3))
    k = 0
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(num_res_blocks):
            _vae_res(s, f"encoder.downsamples.{k}", a, b)
            a, k = b, k + 1
        if i != len(dim_mult) - 1:
            _vae_resample(s, f"encoder.downsamples.{k}", b, "downsample3d" if temporal_down[i] else "downsample2d", False)
            k += 1
    _vae_middle(s, "encoder", dims[-1])
    _vae_head(s, "encoder", dims[-1], 2 * z_dim)
    _conv(s, "conv1", 2 * z_dim, 2 * z_dim, (1, 1, 1))
    _conv(s, "conv2", z_dim, z_dim, (1, 1, 1))
    dims = [dim * u for u in (dim_mult[-1], *dim_mult[::-1])]
    up = tuple(temporal_down[::-1])
    _conv(s, "decoder.conv1", dims[0], z_dim, (3, 3, 3))
    _vae_middle(s, "decoder", dims[0])
    k = 0
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i in (1, 2, 3):
            a //= 2
        for _ in range(num_res_blocks + 1):
            _vae_res(s, f"decoder.upsamples.{k}", a, b)
            a, k = b, k + 1
        if i != len(dim_mult) - 1:
            _vae_resample(s, f"decoder.upsamples.{k}", b, "upsample3d" if up[i] else "upsample2d", False)
            k += 1
    _vae_head(s, "decoder", dims[-1], 3)
    return s


def wan22_vae_shapes(dim: int = 160, dec_dim: int = 256, z_dim: int = 48, dim_mult=(1, 2, 4, 4),
                     num_res_blocks: int = 2, temporal_down=(False, True, True)) -> dict:
    """``Wan2.2_VAE.pth``: the plain state dict of Wan2.2's ``WanVAE_`` (``Wan2_2_VAE``: c_dim 160, z_dim 48;
    12-channel patchified input/output, ``Down_/Up_ResidualBlock`` groups, parameter-free shortcuts)."""
    s: dict = {}
    dims = [dim * u for u in (1, *dim_mult)]
    _conv(s, "encoder.conv1", dims[0], 12, (3, 3, 3))
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        p = f"encoder.downsamples.{i}.downsamples"
        for j in range(num_res_blocks):
            _vae_res(s, f"{p}.{j}", a, b)
            a = b
        if i != len(dim_mult) - 1:
            t = temporal_down[i] if i < len(temporal_down) else False
            _vae_resample(s, f"{p}.{num_res_blocks}", b, "downsample3d" if t else "downsample2d", True)
    _vae_middle(s, "encoder", dims[-1])
    _vae_head(s, "encoder", dims[-1], 2 * z_dim)
    _conv(s, "conv1", 2 * z_dim, 2 * z_dim, (1, 1, 1))
    _conv(s, "conv2", z_dim, z_dim, (1, 1, 1))
    dims = [dec_dim * u for u in (dim_mult[-1], *dim_mult[::-1])]
    up = tuple(temporal_down[::-1])
    _conv(s, "decoder.conv1", dims[0], z_dim, (3, 3, 3))
    _vae_middle(s, "decoder", dims[0])
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        p = f"decoder.upsamples.{i}.upsamples"
        for j in range(num_res_blocks + 1):
            _vae_res(s, f"{p}.{j}", a, b)
            a = b
        if i != len(dim_mult) - 1:
            t = up[i] if i < len(up) else False
            _vae_resample(s, f"{p}.{num_res_blocks + 1}", b, "upsample3d" if t else "upsample2d", True)
    _vae_head(s, "decoder", dims[-1], 12)
    return s


def flux_dit_shapes(*, hidden: int = 3072, heads: int = 24, depth: int = 19, depth_single: int = 38,
                    in_channels: int = 64, out_channels: int = 64, vec_in_dim: int = 768, context_in_dim: int = 4096,
                    mlp_ratio: float = 4.0, guidance: bool = True) -> dict:
    """BFL's original ``flux1-dev.safetensors`` layout (``double_blocks.N.img_attn.qkv.weight`` ...)."""
    s: dict = {}
    h, hd, mlp = hidden, hidden // heads, int(hidden * mlp_ratio)
    _lin(s, "img_in", h, in_channels)
    for e, i in (("time_in", 256), ("vector_in", vec_in_dim)) + ((("guidance_in", 256),) if guidance else ()):
        _lin(s, f"{e}.in_layer", h, i)
        _lin(s, f"{e}.out_layer", h, h)
    _lin(s, "txt_in", h, context_in_dim)
    for n in range(depth):
        for x in ("img", "txt"):
            p = f"double_blocks.{n}.{x}"
            _lin(s, f"{p}_mod.lin", 6 * h, h)
            _lin(s, f"{p}_attn.qkv", 3 * h, h)
            s[f"{p}_attn.norm.query_norm.scale"] = s[f"{p}_attn.norm.key_norm.scale"] = (hd,)
            _lin(s, f"{p}_attn.proj", h, h)
            _lin(s, f"{p}_mlp.0", mlp, h)
            _lin(s, f"{p}_mlp.2", h, mlp)
    for n in range(depth_single):
        p = f"single_blocks.{n}"
        _lin(s, f"{p}.linear1", 3 * h + mlp, h)
        _lin(s, f"{p}.linear2", h, h + mlp)
        s[f"{p}.norm.query_norm.scale"] = s[f"{p}.norm.key_norm.scale"] = (hd,)
        _lin(s, f"{p}.modulation.lin", 3 * h, h)
    _lin(s, "final_layer.linear", out_channels, h)            # LastLayer(hidden, patch 1, out_channels)
    _lin(s, "final_layer.adaLN_modulation.1", 2 * h, h)
    return s


def _ae_res(s: dict, p: str, i: int, o: int) -> None:
    s[f"{p}.norm1.weight"] = s[f"{p}.norm1.bias"] = (i,)
    _conv(s, f"{p}.conv1", o, i, (3, 3))
    s[f"{p}.norm2.weight"] = s[f"{p}.norm2.bias"] = (o,)
    _conv(s, f"{p}.conv2", o, o, (3, 3))
    if i != o:
        _conv(s, f"{p}.nin_shortcut", o, i, (1, 1))


def _ae_mid(s: dict, p: str, c: int) -> None:
    _ae_res(s, f"{p}.mid.block_1", c, c)
    s[f"{p}.mid.attn_1.norm.weight"] = s[f"{p}.mid.attn_1.norm.bias"] = (c,)
    for x in ("q", "k", "v", "proj_out"):
        _conv(s, f"{p}.mid.attn_1.{x}", c, c, (1, 1))
    _ae_res(s, f"{p}.mid.block_2", c, c)


def flux_ae_shapes(ch: int = 128, ch_mult=(1, 2, 4, 4), num_res_blocks: int = 2, z_channels: int = 16) -> dict:
    """BFL's ``ae.safetensors``: ``encoder.*`` + ``decoder.*`` of ``AutoEncoder`` (no attention in the levels)."""
    s: dict = {}
    _conv(s, "encoder.conv_in", ch, 3, (3, 3))
    in_mult = (1, *ch_mult)
    for lvl in range(len(ch_mult)):
        a, b = ch * in_mult[lvl], ch * ch_mult[lvl]
        for j in range(num_res_blocks):
            _ae_res(s, f"encoder.down.{lvl}.block.{j}", a, b)
            a = b
        if lvl != len(ch_mult) - 1:
            _conv(s, f"encoder.down.{lvl}.downsample.conv", b, b, (3, 3))
    c = ch * ch_mult[-1]
    _ae_mid(s, "encoder", c)
    s["encoder.norm_out.weight"] = s["encoder.norm_out.bias"] = (c,)
    _conv(s, "encoder.conv_out", 2 * z_channels, c, (3, 3))
    _conv(s, "decoder.conv_in", c, z_channels, (3, 3))
    _ae_mid(s, "decoder", c)
    a = c
    for lvl in reversed(range(len(ch_mult))):
        b = ch * ch_mult[lvl]
        for j in range(num_res_blocks + 1):
            _ae_res(s, f"decoder.up.{lvl}.block.{j}", a, b)
            a = b
        if lvl != 0:
            _conv(s, f"decoder.up.{lvl}.upsample.conv", b, b, (3, 3))
    s["decoder.norm_out.weight"] = s["decoder.norm_out.bias"] = (a,)
    _conv(s, "decoder.conv_out", 3, a, (3, 3))
    return s


def hf_clip_text_shapes(vocab: int = 49408, hidden: int = 768, layers: int = 12, intermediate: int = 3072,
                        positions: int = 77) -> dict:
    """FLUX.1-dev ``text_encoder/model.safetensors``: transformers ``CLIPTextModel`` as saved for the
    openai/clip-vit-large-patch14 text tower (``text_model.*``; no ``position_ids`` buffer in the file)."""
    s: dict = {"text_model.embeddings.token_embedding.weight": (vocab, hidden),
               "text_model.embeddings.position_embedding.weight": (positions, hidden)}
    for i in range(layers):
        p = f"text_model.encoder.layers.{i}"
        for a in ("q", "k", "v", "out"):
            _lin(s, f"{p}.self_attn.{a}_proj", hidden, hidden)
        s[f"{p}.layer_norm1.weight"] = s[f"{p}.layer_norm1.bias"] = (hidden,)
        _lin(s, f"{p}.mlp.fc1", intermediate, hidden)
        _lin(s, f"{p}.mlp.fc2", hidden, intermediate)
        s[f"{p}.layer_norm2.weight"] = s[f"{p}.layer_norm2.bias"] = (hidden,)
    s["text_model.final_layer_norm.weight"] = s["text_model.final_layer_norm.bias"] = (hidden,)
    return s


def hf_t5_encoder_shapes(vocab: int = 32128, d_model: int = 4096, d_kv: int = 64, d_ff: int = 10240, layers: int = 24,
                         heads: int = 64, buckets: int = 32) -> dict:
    """FLUX.1-dev ``text_encoder_2/``: transformers ``T5EncoderModel`` (t5-v1_1-xxl, gated-gelu) as written by
    ``save_pretrained`` -- ``shared.weight`` only (the tied ``encoder.embed_tokens.weight`` is not in the file)."""
    s: dict = {"shared.weight": (vocab, d_model)}
    inner = heads * d_kv
    for i in range(layers):
        p = f"encoder.block.{i}.layer"
        for a in ("q", "k", "v"):
            s[f"{p}.0.SelfAttention.{a}.weight"] = (inner, d_model)
        s[f"{p}.0.SelfAttention.o.weight"] = (d_model, inner)
        if i == 0:
            s[f"{p}.0.SelfAttention.relative_attention_bias.weight"] = (buckets, heads)
        s[f"{p}.0.layer_norm.weight"] = (d_model,)
        s[f"{p}.1.DenseReluDense.wi_0.weight"] = (d_ff, d_model)
        s[f"{p}.1.DenseReluDense.wi_1.weight"] = (d_ff, d_model)
        s[f"{p}.1.DenseReluDense.wo.weight"] = (d_model, d_ff)
        s[f"{p}.1.layer_norm.weight"] = (d_model,)
    s["encoder.final_layer_norm.weight"] = (d_model,)
    return s


# diffusers' own Wan -> diffusers renaming (scripts/convert_wan_to_diffusers.py @ 7d5682739a1e,
# TRANSFORMER_KEYS_RENAME_DICT, applied as sequential str.replace): the tool that wrote Wan-AI/*-Diffusers.
DIFFUSERS_WAN_RENAMES = (
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.modulation", "scale_shift_table"), ("head.head", "proj_out"), ("modulation", "scale_shift_table"),
    ("ffn.0", "ffn.net.0.proj"), ("ffn.2", "ffn.net.2"),
    ("norm2", "norm__placeholder"), ("norm3", "norm2"), ("norm__placeholder", "norm3"),
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    ("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
    ("img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"),
    ("self_attn.q", "attn1.to_q"), ("self_attn.k", "attn1.to_k"), ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"), ("self_attn.norm_q", "attn1.norm_q"), ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"), ("cross_attn.k", "attn2.to_k"), ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"), ("cross_attn.norm_q", "attn2.norm_q"), ("cross_attn.norm_k", "attn2.norm_k"),
    ("attn2.to_k_img", "attn2.add_k_proj"), ("attn2.to_v_img", "attn2.add_v_proj"),
    ("attn2.norm_k_img", "attn2.norm_added_k"),
)


def wan_to_diffusers(state: dict) -> dict:
    """An original-layout Wan DiT state dict under the names diffusers' conversion script gives it."""
    out = {}
    for k, v in state.items():
        n = k
        for a, b in DIFFUSERS_WAN_RENAMES:
            n = n.replace(a, b)
        out[n] = v
    return out


def hf_dinov2_shapes(hidden: int = 768, layers: int = 12, intermediate: int = 3072, image_size: int = 518,
                     patch: int = 14) -> dict:
    """facebook/dinov2-* ``model.safetensors``: ``Dinov2Model`` as the HF conversion wrote it (transformers 4.x
    ``modeling_dinov2.py``: ``attention.attention.query``, ``attention.output.dense``, ``layer_scale1.lambda1`` ...)."""
    n = (image_size // patch) ** 2
    s: dict = {"embeddings.cls_token": (1, 1, hidden), "embeddings.mask_token": (1, hidden),
               "embeddings.position_embeddings": (1, n + 1, hidden)}
    _conv(s, "embeddings.patch_embeddings.projection", hidden, 3, (patch, patch))
    for i in range(layers):
        p = f"encoder.layer.{i}"
        s[f"{p}.norm1.weight"] = s[f"{p}.norm1.bias"] = (hidden,)
        for a in ("query", "key", "value"):
            _lin(s, f"{p}.attention.attention.{a}", hidden, hidden)
        _lin(s, f"{p}.attention.output.dense", hidden, hidden)
        s[f"{p}.layer_scale1.lambda1"] = (hidden,)
        s[f"{p}.norm2.weight"] = s[f"{p}.norm2.bias"] = (hidden,)
        _lin(s, f"{p}.mlp.fc1", intermediate, hidden)
        _lin(s, f"{p}.mlp.fc2", hidden, intermediate)
        s[f"{p}.layer_scale2.lambda1"] = (hidden,)
    s["layernorm.weight"] = s["layernorm.bias"] = (hidden,)
    return s


def write_hf_dinov2(d: Path, hidden: int, layers: int, intermediate: int, image_size: int, patch: int,
                    state: dict | None = None) -> dict:
    """A facebook/dinov2-style directory: ``config.json`` (the published fields) + ``model.safetensors`` (fp32)."""
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    if state is None:
        state = materialize(hf_dinov2_shapes(hidden, layers, intermediate, image_size, patch), torch.float32, seed=11)
    cfg = {"architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_size": hidden, "num_hidden_layers": layers,
           "num_attention_heads": max(1, hidden // 16), "mlp_ratio": intermediate // hidden, "image_size": image_size,
           "patch_size": patch, "num_channels": 3, "layer_norm_eps": 1e-6, "layerscale_value": 1.0,
           "hidden_act": "gelu", "qkv_bias": True, "use_swiglu_ffn": False, "drop_path_rate": 0.0,
           "initializer_range": 0.02, "torch_dtype": "float32"}
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    return state


def qwen2vl_shapes(vocab: int = 151936, hidden: int = 1536, intermediate: int = 8960, layers: int = 28, heads: int = 12,
                   kv_heads: int = 2, v_embed: int = 1280, v_depth: int = 32, v_mlp_ratio: float = 4.0, patch: int = 14,
                   temporal_patch: int = 2, merge: int = 2, lm_head: bool = False) -> dict:
    """Qwen/Qwen2-VL-*-Instruct ``model-0000N-of-0000M.safetensors``: ``Qwen2VLForConditionalGeneration`` as Qwen
    published it with transformers 4.45 (``model.layers.N.self_attn.q_proj``, ``visual.blocks.N.attn.qkv``,
    ``visual.merger.mlp.0`` ...; ``lm_head.weight`` only when the embeddings are not tied -- 2B ties them, 7B not)."""
    hd = hidden // heads
    s: dict = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}"
        _lin(s, f"{p}.self_attn.q_proj", hidden, hidden)
        _lin(s, f"{p}.self_attn.k_proj", kv_heads * hd, hidden)
        _lin(s, f"{p}.self_attn.v_proj", kv_heads * hd, hidden)
        _lin(s, f"{p}.self_attn.o_proj", hidden, hidden, bias=False)
        _lin(s, f"{p}.mlp.gate_proj", intermediate, hidden, bias=False)
        _lin(s, f"{p}.mlp.up_proj", intermediate, hidden, bias=False)
        _lin(s, f"{p}.mlp.down_proj", hidden, intermediate, bias=False)
        s[f"{p}.input_layernorm.weight"] = s[f"{p}.post_attention_layernorm.weight"] = (hidden,)
    s["model.norm.weight"] = (hidden,)
    if lm_head:
        s["lm_head.weight"] = (vocab, hidden)
    s["visual.patch_embed.proj.weight"] = (v_embed, 3, temporal_patch, patch, patch)
    mlp = int(v_embed * v_mlp_ratio)
    for i in range(v_depth):
        p = f"visual.blocks.{i}"
        s[f"{p}.norm1.weight"] = s[f"{p}.norm1.bias"] = s[f"{p}.norm2.weight"] = s[f"{p}.norm2.bias"] = (v_embed,)
        _lin(s, f"{p}.attn.qkv", 3 * v_embed, v_embed)
        _lin(s, f"{p}.attn.proj", v_embed, v_embed)
        _lin(s, f"{p}.mlp.fc1", mlp, v_embed)
        _lin(s, f"{p}.mlp.fc2", v_embed, mlp)
    m = v_embed * merge * merge
    s["visual.merger.ln_q.weight"] = s["visual.merger.ln_q.bias"] = (v_embed,)
    _lin(s, "visual.merger.mlp.0", m, m)
    _lin(s, "visual.merger.mlp.2", hidden, m)
    return s


# --------------------------------------------------------------------------------- tensors, files
_UNIT_SUFFIXES = ("gamma", ".scale", "norm.weight")


def materialize(shapes: dict[str, tuple], dtype=torch.float32, seed: int = 0, std: float = 0.5) -> dict:
    """Random tensors of the given shapes: weights ~ N(0, std^2 / fan_in), biases small, norm scales ~1
    (so a forward stays finite at any depth); ``dtype`` is the published file's."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(shapes):
        shp = tuple(shapes[k])
        norm_like = k.endswith(_UNIT_SUFFIXES) or ".norm" in k or "layernorm" in k.lower() or "layer_norm" in k
        if k.endswith("gamma") or (len(shp) == 1 and norm_like and not k.endswith("bias")):
            t = 1.0 + 0.05 * torch.randn(shp, generator=g)
        elif len(shp) >= 2 and shp[0] != 1:
            fan_in = max(1, math.prod(shp[1:]))
            t = torch.randn(shp, generator=g) * (std / math.sqrt(fan_in))
        else:
            t = 0.02 * torch.randn(shp, generator=g)
        out[k] = t.to(dtype).contiguous()
    return out


def save_safetensors_shards(state: dict, directory: Path, stem: str, n_shards: int, index_name: str,
                            shard_name: str = "{stem}-{i:05d}-of-{n:05d}.safetensors",
                            metadata: dict | None = None) -> list[Path]:
    """Split ``state`` over ``n_shards`` files named like the published shards (keys kept in sorted order,
    as the HF/diffusers writers do) and write the index json (``metadata.total_size`` + ``weight_map``)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    per = -(-len(keys) // n_shards)
    files, weight_map, total = [], {}, 0
    for i in range(n_shards):
        part = keys[i * per:(i + 1) * per]
        name = shard_name.format(stem=stem, i=i + 1, n=n_shards)
        save_file({k: state[k].contiguous() for k in part}, str(directory / name), metadata=metadata or {"format": "pt"})
        for k in part:
            weight_map[k] = name
            total += state[k].numel() * state[k].element_size()
        files.append(directory / name)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / index_name).write_text(json.dumps(index, indent=2) + "\n")
    return files


def rename_one(state: dict, old: str, new: str) -> dict:
    """The fixture with one key renamed (the 'renamed key' a strict loader must refuse)."""
    assert old in state, old
    return {(new if k == old else k): v for k, v in state.items()}
