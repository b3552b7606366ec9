"""FLUX.1-dev checkpoint layouts through synth route B's loader (``pvtt.data.backends.flux_wan_i2v.FluxEditor``).

Files, as black-forest-labs/FLUX.1-dev ships them:
- ``flux1-dev.safetensors`` (bf16): BFL's own names (``double_blocks.N.img_attn.qkv.weight`` ...), key
  generator from black-forest-labs/flux ``model.py``/``layers.py`` (``flux-dev`` params);
- ``ae.safetensors`` (fp32): ``encoder.*``/``decoder.*`` of BFL's ``AutoEncoder`` (``autoencoder.py``);
- ``text_encoder/model.safetensors`` (bf16): transformers ``CLIPTextModel`` names (``text_model.*``);
- ``text_encoder_2/model-0000N-of-00002.safetensors`` + ``model.safetensors.index.json`` (bf16):
  transformers ``T5EncoderModel`` (t5-v1_1-xxl) as ``save_pretrained`` writes it (``shared.weight``, no tied copy).
At the published widths the four generators reproduce the published files' key:shape fingerprints.

Reduced widths: DiT 64 wide (2 heads of 32), 1 double + 1 single block; AE base width 32 (its GroupNorm needs 32);
T5 32 wide, 1 block. The CLIP text tower keeps its published width (768): DiffSynth's ``FluxTextEncoderClip``
hard-codes 12 heads of 64, so only its depth, vocabulary and MLP width can shrink (``arch.text_encoder``).
The tokenizers are not layouts under test (a word-level tokenizer from the VACE tests stands in).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffsynth")

import layouts_helpers as L  # noqa: E402
from test_backgrounds_vace import write_tokenizer  # noqa: E402

from pvtt.data.backends import BackendError  # noqa: E402

pytestmark = pytest.mark.slow

torch.set_num_threads(2)

DIT = dict(hidden=64, heads=2, depth=1, depth_single=1, vec_in_dim=768, context_in_dim=32)
AE_CH = 32
CLIP = dict(vocab=64, hidden=768, layers=2, intermediate=128, positions=77)
T5 = dict(vocab=64, d_model=32, d_kv=16, d_ff=64, layers=1, heads=2, buckets=32)
ARCH = {"dit": {"num_heads": 2, "axes_dim": [8, 12, 12]},          # head width 32 = 8 + 12 + 12 (flux-dev: 16+56+56)
        "vae": {"ch": AE_CH},
        "text_encoder": {"vocab_size": CLIP["vocab"], "num_encoder_layers": CLIP["layers"],
                         "encoder_intermediate_size": CLIP["intermediate"]},
        "text_encoder_2": {"vocab_size": T5["vocab"], "d_model": T5["d_model"], "d_kv": T5["d_kv"], "d_ff": T5["d_ff"],
                           "num_layers": T5["layers"], "num_heads": T5["heads"],
                           "relative_attention_num_buckets": T5["buckets"]}}


@pytest.mark.parametrize("name, shapes", [
    ("flux1-dev.safetensors", L.flux_dit_shapes),
    ("ae.safetensors", L.flux_ae_shapes),
    ("FLUX.1-dev/text_encoder", L.hf_clip_text_shapes),
    ("FLUX.1-dev/text_encoder_2", L.hf_t5_encoder_shapes),
])
def test_generators_reproduce_the_published_files(name, shapes):
    assert L.keys_hash(shapes()) == L.PUBLISHED_HASH[name]


def test_editor_reads_flux_devs_config_off_the_shapes():
    """FluxEditor sizes its DiT from the checkpoint: at flux1-dev's shapes it must find flux-dev's params
    (black-forest-labs/flux util.py ``configs["flux-dev"]``: 3072 wide, 24 heads, 19 + 38 blocks, guidance)."""
    from diffsynth.utils.state_dict_converters.flux_dit import FluxDiTStateDictConverter

    from pvtt.data.backends.flux_wan_i2v import flux_dit_config

    raw = {k: torch.empty(v, device="meta") for k, v in L.flux_dit_shapes().items()}
    cfg = flux_dit_config(FluxDiTStateDictConverter(raw))
    assert cfg == {"dim": 3072, "input_dim": 64, "num_heads": 24, "num_blocks": 19, "num_single_blocks": 38,
                   "text_dim": 4096, "pooled_dim": 768, "disable_guidance_embedder": False}


def write_flux(d, dit: dict | None = None) -> dict:
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    dit = dit if dit is not None else L.materialize(L.flux_dit_shapes(**DIT), torch.bfloat16, seed=1)
    save_file(dit, str(d / "flux1-dev.safetensors"), metadata={"format": "pt"})
    save_file(L.materialize(L.flux_ae_shapes(ch=AE_CH), torch.float32, seed=2), str(d / "ae.safetensors"))
    (d / "text_encoder").mkdir(exist_ok=True)
    save_file(L.materialize(L.hf_clip_text_shapes(**CLIP), torch.bfloat16, seed=3),
              str(d / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})
    L.save_safetensors_shards(L.materialize(L.hf_t5_encoder_shapes(**T5), torch.bfloat16, seed=4), d / "text_encoder_2",
                              "model", 2, "model.safetensors.index.json")
    (d / "text_encoder_2" / "config.json").write_text(json.dumps({"architectures": ["T5EncoderModel"], "model_type": "t5",
                                                                  **ARCH["text_encoder_2"]}))
    for t in ("tokenizer", "tokenizer_2"):
        if not (d / t).exists():
            write_tokenizer(d / t)
    return {"dit": str(d / "flux1-dev.safetensors"), "vae": str(d / "ae.safetensors"),
            "text_encoder": str(d / "text_encoder" / "model.safetensors"), "text_encoder_2": str(d / "text_encoder_2"),
            "tokenizer": str(d / "tokenizer"), "tokenizer_2": str(d / "tokenizer_2")}


def _editor(paths: dict):
    from pvtt.data.backends.flux_wan_i2v import FLUX_DEFAULTS, FLUX_SPEC, FluxEditor
    from pvtt.data.backends.wan_vace import validate_section

    cfg = validate_section({**paths, "steps": 1, "strength": 0.5, "dilate": 0, "device": "cpu", "dtype": "fp32",
                            "arch": ARCH, "prompt": "a product on a table"}, FLUX_DEFAULTS, FLUX_SPEC, "synth.flux")
    return FluxEditor(cfg)


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    d = tmp_path_factory.mktemp("flux1-dev")
    return d, write_flux(d)


def test_flux_files_load_and_edit_a_frame(flux):
    from safetensors.torch import load_file

    d, paths = flux
    ed = _editor(paths)
    pipe = ed.pipe
    assert len(pipe.dit.blocks) == 1 and len(pipe.dit.single_blocks) == 1
    # spot values: BFL's names went to the right places (exact bf16 -> fp32)
    raw = load_file(paths["dit"])
    assert torch.equal(pipe.dit.blocks[0].attn.a_to_qkv.weight, raw["double_blocks.0.img_attn.qkv.weight"].float())
    assert torch.equal(pipe.dit.final_norm_out.linear.weight, raw["final_layer.adaLN_modulation.1.weight"].float())
    ae = load_file(paths["vae"])
    assert torch.equal(pipe.vae_decoder.conv_out.weight, ae["decoder.conv_out.weight"])
    assert ed.pooled_emb.shape == (1, 768) and ed.prompt_emb.shape == (1, 512, T5["d_model"])
    assert torch.isfinite(ed.pooled_emb).all() and torch.isfinite(ed.prompt_emb).all()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    out, info = ed.edit(img, mask)
    assert out.shape == img.shape and out.dtype == np.uint8 and not info.get("skipped")
    assert np.array_equal(out[~mask], img[~mask])


# DiffSynth's FluxDiTStateDictConverter indexes a dict with every double-block suffix: an unknown one raises a
# bare KeyError('txt_attn.norm.k_norm.scale'), which FluxEditor wraps into a BackendError naming the file and params
# key synth.flux.dit. A renamed key in a single block or elsewhere is dropped by the converter and the strict load
# reports it missing.

@pytest.mark.parametrize("file, old, new", [
    pytest.param("dit", "double_blocks.0.txt_attn.norm.key_norm.scale", "double_blocks.0.txt_attn.norm.k_norm.scale",
                 id="dit-double-block"),
    ("dit", "single_blocks.0.linear2.weight", "single_blocks.0.linear_2.weight"),
    ("dit", "final_layer.adaLN_modulation.1.weight", "final_layer.adaLN.1.weight"),
    ("vae", "decoder.up.1.block.0.nin_shortcut.weight", "decoder.up.1.block.0.shortcut.weight"),
    ("text_encoder", "text_model.encoder.layers.1.mlp.fc2.weight", "text_model.encoder.layers.1.mlp.fc3.weight"),
])
def test_renamed_key_is_refused(file, old, new, flux, tmp_path):
    from safetensors.torch import load_file, save_file

    _, paths = flux
    path = tmp_path / paths[file].split("/")[-1]
    save_file(L.rename_one(load_file(paths[file]), old, new), str(path))
    with pytest.raises(BackendError, match=rf"synth\.flux\.{file}"):
        _editor({**paths, file: str(path)})


def test_t5_shard_with_a_renamed_key_is_refused(flux, tmp_path):
    from safetensors.torch import load_file, save_file

    _, paths = flux
    d = tmp_path / "text_encoder_2"
    d.mkdir()
    from pathlib import Path

    for f in sorted(Path(paths["text_encoder_2"]).glob("*.safetensors")):
        sd = load_file(str(f))
        if "encoder.final_layer_norm.weight" in sd:
            sd = L.rename_one(sd, "encoder.final_layer_norm.weight", "encoder.final_norm.weight")
        save_file(sd, str(d / f.name))
    with pytest.raises(BackendError, match=r"synth\.flux\.text_encoder_2"):
        _editor({**paths, "text_encoder_2": str(d)})
