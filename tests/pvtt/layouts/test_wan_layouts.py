"""Wan checkpoint layouts through the project's loaders: the DiT in Wan's and diffusers' layouts (sharded
safetensors + index json), the Wan2.1 and Wan2.2 VAE ``.pth`` files, and the VACE checkpoint.

Fixtures (tests/layouts_helpers.py) are the published key names, nesting and shapes, generated from the
original authors' model definitions (Wan-Video/Wan2.1 ``model.py``/``vae.py``/``vace_model.py``, Wan2.2
``vae2_2.py``, diffusers' ``transformer_wan.py`` and its conversion script) at reduced widths; at the
published widths the generators reproduce the published files' key:shape fingerprints (first test). No
fixture comes from DiffSynth's classes or converters, which are what the loaders under test use.

Loaders: ``pvtt.models.base.load_base_state`` + ``init_from_base`` (teacher start), ``pvtt.data.backends.
wan_vace.load_wan_pipeline`` (VACE backgrounds, route B's I2V) and ``pvtt.models.codec.build_codec``
(``wan_vae``/``wan22_vae``). Strictness: each loader must refuse a fixture with one key renamed.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffsynth")

import layouts_helpers as L  # noqa: E402
from test_backgrounds_vace import ARCH as VACE_TEST_ARCH  # noqa: E402
from test_backgrounds_vace import write_tokenizer  # noqa: E402

from pvtt.data.backends import BackendError  # noqa: E402
from pvtt.models.base import init_from_base, load_base_state  # noqa: E402
from pvtt.models.dit import PRESETS, build_dit  # noqa: E402

pytestmark = pytest.mark.slow

torch.set_num_threads(2)

# The tiny preset's DiT (pvtt.models.dit.PRESETS["tiny"]) over Wan2.1's 16 latent channels.
TINY = dict(dim=PRESETS["tiny"]["dim"], in_dim=16, ffn_dim=PRESETS["tiny"]["ffn_dim"], out_dim=16,
            text_dim=PRESETS["tiny"]["text_dim"], freq_dim=PRESETS["tiny"]["freq_dim"],
            num_layers=PRESETS["tiny"]["num_layers"])
WAN_DTYPE = torch.float32   # Wan2.1's DiT and VAE releases are fp32 (T2V-1.3B: 1.42e9 params, 5.68 GB)
INDEX = "diffusion_pytorch_model.safetensors.index.json"      # Wan2.1-T2V-14B / *-Diffusers transformer/


@pytest.mark.parametrize("name, shapes", [
    ("Wan2.1-T2V-1.3B", lambda: L.wan_dit_shapes(**L.WAN21_1_3B)),
    ("Wan2.1-T2V-14B", lambda: L.wan_dit_shapes(**L.WAN21_14B)),
    ("Wan2.1-FLF2V-14B-720P", lambda: L.wan_dit_shapes(model_type="flf2v", **{**L.WAN21_14B, "in_dim": 36})),
    ("Wan2.2-TI2V-5B", lambda: L.wan_dit_shapes(**L.WAN22_5B)),
    ("Wan2.1-VACE-14B", lambda: L.wan_vace_shapes(vace_layers=range(0, 40, 5), **L.WAN21_14B)),
    ("VACE-Wan2.1-1.3B-Preview", lambda: L.wan_vace_shapes(vace_layers=range(0, 30, 2), **L.WAN21_1_3B)),
    ("Wan2.1_VAE.pth", L.wan21_vae_shapes),
    ("Wan2.2_VAE.pth", L.wan22_vae_shapes),
])
def test_generators_reproduce_the_published_files(name, shapes):
    """At the published widths each key generator lists exactly the published keys with their shapes."""
    assert L.keys_hash(shapes()) == L.PUBLISHED_HASH[name]


def test_diffusers_layout_agrees_with_diffusers_conversion_script():
    """Two independent sources for the diffusers names: the model class and the script that converted Wan's files."""
    for model_type, image_dim in (("t2v", None), ("i2v", 1280)):
        wan = L.wan_dit_shapes(model_type=model_type, **{**TINY, "in_dim": 36 if image_dim else 16})
        assert L.wan_to_diffusers(wan) == L.wan_diffusers_shapes(image_dim=image_dim,
                                                                 **{**TINY, "in_dim": 36 if image_dim else 16})


def _meta(shapes: dict) -> dict:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


@pytest.mark.parametrize("shapes, want", [
    (lambda: L.wan_dit_shapes(**L.WAN21_1_3B), dict(dim=1536, num_heads=12, num_layers=30, ffn_dim=8960, in_dim=16,
                                                    out_dim=16, has_image_input=False)),
    (lambda: L.wan_dit_shapes(model_type="i2v", **{**L.WAN21_14B, "in_dim": 36}),
     dict(dim=5120, num_heads=40, num_layers=40, ffn_dim=13824, in_dim=36, out_dim=16, has_image_input=True,
          image_dim=1280, has_image_pos_emb=False)),
    (lambda: L.wan_dit_shapes(model_type="flf2v", **{**L.WAN21_14B, "in_dim": 36}),
     dict(has_image_input=True, has_image_pos_emb=True)),
], ids=["T2V-1.3B", "I2V-14B", "FLF2V-14B"])
def test_pipeline_reads_the_published_configs_off_the_shapes(shapes, want):
    """``load_wan_pipeline`` builds the DiT from the checkpoint's shapes: at the published sizes it must find
    the published configs (Wan-Video/Wan2.1 wan/configs/*.py; head width 128)."""
    from diffsynth.utils.state_dict_converters.wan_video_dit import WanVideoDiTStateDictConverter

    from pvtt.data.backends.wan_vace import wan_dit_config

    cfg = wan_dit_config(WanVideoDiTStateDictConverter(_meta(shapes())))
    assert {k: cfg[k] for k in want} == want and cfg["patch_size"] == (1, 2, 2)


@pytest.mark.parametrize("base, layers", [(L.WAN21_1_3B, range(0, 30, 2)), (L.WAN21_14B, range(0, 40, 5))],
                         ids=["VACE-1.3B", "VACE-14B"])
def test_pipeline_reads_the_published_vace_layers(base, layers):
    from diffsynth.utils.state_dict_converters.wan_video_dit import WanVideoDiTStateDictConverter
    from diffsynth.utils.state_dict_converters.wan_video_vace import VaceWanModelDictConverter

    from pvtt.data.backends.wan_vace import vace_config, wan_dit_config

    raw = _meta(L.wan_vace_shapes(vace_layers=layers, **base))
    dit = wan_dit_config(WanVideoDiTStateDictConverter(raw))
    assert dit["num_layers"] == base["num_layers"] and not dit["has_image_input"]
    vace = vace_config(VaceWanModelDictConverter(raw), dit)
    assert tuple(vace["vace_layers"]) == tuple(layers) and vace["vace_in_dim"] == 96


# --------------------------------------------------------------------------------- DiT: teacher start
def _write_shards(state, d, n=3):
    return L.save_safetensors_shards(state, d, "diffusion_pytorch_model", n, INDEX)


def _forward(dit, c=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, 2, 4, 4, generator=g)
    with torch.no_grad():
        out = dit(x, torch.tensor([500.0]), torch.randn(1, c, 2, 4, 4, generator=g), torch.ones(1, 1, 2, 4, 4),
                  torch.randn(1, 257, dit.wan.img_emb.proj[1].in_features, generator=g),
                  torch.randn(1, 5, dit.arch["text_dim"], generator=g))
    assert out.shape == x.shape and torch.isfinite(out).all()
    return out


@pytest.mark.parametrize("model_type", ["t2v", "i2v"])
def test_wan_layout_shards_start_the_teacher(model_type, tmp_path):
    """Wan2.1-T2V-14B / I2V-14B-480P style: ``diffusion_pytorch_model-0000N-of-00003.safetensors`` + index."""
    shapes = L.wan_dit_shapes(model_type=model_type, **{**TINY, "in_dim": 36 if model_type == "i2v" else 16})
    state = L.materialize(shapes, WAN_DTYPE, seed=1)
    files = _write_shards(state, tmp_path / "wan")
    assert [f.name for f in files][-1] == "diffusion_pytorch_model-00003-of-00003.safetensors"
    loaded = load_base_state(tmp_path / "wan")
    assert set(loaded) == set(state)
    dit = build_dit("tiny", 16, seed=0, prediction="velocity").eval()
    report = init_from_base(dit, loaded)
    assert report["unused"] == []
    assert report["copied"] == len(state)           # every tensor of the file went somewhere
    own = dit.wan.state_dict()
    for k in ("blocks.1.norm3.weight", "blocks.0.cross_attn.norm_k.weight", "head.modulation", "blocks.1.modulation"):
        assert torch.equal(own[k], state[k].float()), k
    if model_type == "i2v":   # the I2V base's image branch is taken as is (CLIP width 1280)
        assert torch.equal(own["blocks.0.cross_attn.v_img.weight"], state["blocks.0.cross_attn.v_img.weight"])
    _forward(dit)


def test_wan_layout_renamed_key_is_refused(tmp_path):
    state = L.materialize(L.wan_dit_shapes(**TINY), WAN_DTYPE, seed=1)
    _write_shards(L.rename_one(state, "blocks.1.cross_attn.norm_k.weight", "blocks.1.cross_attn.k_norm.weight"),
                  tmp_path / "wan")
    with pytest.raises(ValueError, match=r"blocks\.1\.cross_attn\.norm_k\.weight"):
        init_from_base(build_dit("tiny", 16, seed=0, prediction="velocity"), load_base_state(tmp_path / "wan"))


def test_wan_layout_missing_shard_is_refused(tmp_path):
    """A partial download (the index lists a shard that is not there): the load fails, naming a missing tensor."""
    files = _write_shards(L.materialize(L.wan_dit_shapes(**TINY), WAN_DTYPE, seed=1), tmp_path / "wan")
    files[1].unlink()
    with pytest.raises(ValueError, match=r"has no '"):
        init_from_base(build_dit("tiny", 16, seed=0, prediction="velocity"), load_base_state(tmp_path / "wan"))


@pytest.mark.parametrize("model_type", ["t2v", "i2v"])
def test_diffusers_layout_shards_load_as_the_same_weights(model_type, tmp_path):
    """Wan-AI/Wan2.1-*-Diffusers ``transformer/``: the same tensors under diffusers' names must come back
    under Wan's names with identical values (norm2/norm3 swapped, scale_shift_table -> modulation, ...)."""
    cfg = {**TINY, "in_dim": 36 if model_type == "i2v" else 16}
    wan = L.materialize(L.wan_dit_shapes(model_type=model_type, **cfg), WAN_DTYPE, seed=2)
    diff = L.wan_to_diffusers(wan)
    assert L.shapes_of(diff) == L.wan_diffusers_shapes(image_dim=1280 if model_type == "i2v" else None, **cfg)
    _write_shards(diff, tmp_path / "transformer", n=2)
    loaded = load_base_state(tmp_path / "transformer")
    assert set(loaded) == set(wan)
    bad = [k for k in wan if not torch.equal(loaded[k], wan[k].float())]
    assert bad == []
    dit = build_dit("tiny", 16, seed=0, prediction="velocity").eval()
    assert init_from_base(dit, loaded)["unused"] == []
    _forward(dit)


def test_diffusers_layout_renamed_key_is_refused(tmp_path):
    diff = L.wan_to_diffusers(L.materialize(L.wan_dit_shapes(**TINY), WAN_DTYPE, seed=2))
    _write_shards(L.rename_one(diff, "blocks.0.attn2.norm_k.weight", "blocks.0.attn2.k_norm.weight"), tmp_path / "t")
    with pytest.raises(ValueError, match=r"blocks\.0\.cross_attn\.norm_k\.weight"):
        init_from_base(build_dit("tiny", 16, seed=0, prediction="velocity"), load_base_state(tmp_path / "t"))


# --------------------------------------------------------------------------------- VACE + Wan2.1 VAE
VACE_DIM = 128            # Wan's head width: wan_dit_config reads num_heads as dim // 128
VACE = dict(dim=VACE_DIM, in_dim=16, ffn_dim=256, out_dim=16, text_dim=32, freq_dim=64, num_layers=4)
VACE_LAYERS = (0, 2)      # every 2nd layer, as Wan2.1-VACE-1.3B (0, 2, ..., 28)
VAE_DIM = 8               # Wan2.1_VAE.pth: 96


def _aux_text_encoder(d):
    """Not under test here (umT5 has its own layout test): DiffSynth's class, tiny, and a word tokenizer."""
    from pvtt.data.backends.wan_vace import wan_text_encoder_factory

    torch.save(wan_text_encoder_factory(**VACE_TEST_ARCH["text_encoder"]).state_dict(), d / "models_t5_umt5-xxl-enc-bf16.pth")
    write_tokenizer(d / "google" / "umt5-xxl")


@pytest.fixture(scope="module")
def vace_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("wan-vace")
    dit = L.materialize(L.wan_vace_shapes(vace_layers=VACE_LAYERS, **VACE), WAN_DTYPE, seed=3)
    from safetensors.torch import save_file

    save_file(dit, str(d / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    vae = L.materialize(L.wan21_vae_shapes(dim=VAE_DIM), WAN_DTYPE, seed=4)
    torch.save(vae, d / "Wan2.1_VAE.pth")                      # a plain state dict, as Wan's _video_vae loads it
    _aux_text_encoder(d)
    return d, dit, vae


def _vace_cfg(d, **over):
    from pvtt.data.backends.wan_vace import validate_config

    return validate_config({"dit": str(d / "diffusion_pytorch_model.safetensors"), "vae": str(d / "Wan2.1_VAE.pth"),
                            "text_encoder": str(d / "models_t5_umt5-xxl-enc-bf16.pth"),
                            "tokenizer": str(d / "google" / "umt5-xxl"), "device": "cpu", "dtype": "fp32",
                            "arch": {"vae": {"dim": VAE_DIM}, "text_encoder": VACE_TEST_ARCH["text_encoder"]}, **over})


def test_vace_checkpoint_and_wan21_vae_load_and_run(vace_files):
    from diffsynth.pipelines.wan_video import model_fn_wan_video

    from pvtt.data.backends.wan_vace import load_wan_pipeline

    d, dit, vae = vace_files
    pipe = load_wan_pipeline(_vace_cfg(d), "backgrounds.vace", "layout test", vace=True)
    assert tuple(pipe.vace.vace_layers) == VACE_LAYERS and len(pipe.dit.blocks) == VACE["num_layers"]
    own = {**pipe.dit.state_dict(), **pipe.vace.state_dict()}
    assert set(own) == set(dit)                                 # every tensor of the file, nothing else
    assert all(torch.equal(own[k], dit[k]) for k in dit)
    vae_own = {k.removeprefix("model."): v for k, v in pipe.vae.state_dict().items() if k.startswith("model.")}
    assert set(vae_own) == set(vae) and all(torch.equal(vae_own[k], vae[k]) for k in vae)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = model_fn_wan_video(dit=pipe.dit, vace=pipe.vace, latents=torch.randn(1, 16, 2, 4, 4, generator=g),
                                 timestep=torch.tensor([500.0]), context=torch.randn(1, 6, VACE["text_dim"], generator=g),
                                 vace_context=torch.randn(1, 96, 2, 4, 4, generator=g))
        assert out.shape == (1, 16, 2, 4, 4) and torch.isfinite(out).all()
        video = torch.rand(1, 3, 1, 16, 16, generator=g) * 2 - 1
        z = pipe.vae.encode(video, device="cpu")
        assert z.shape == (1, 16, 1, 2, 2) and torch.isfinite(z).all()
        assert pipe.vae.decode(z, device="cpu").shape == (1, 3, 1, 16, 16)


def test_vace_renamed_key_is_refused(vace_files, tmp_path):
    from safetensors.torch import save_file

    from pvtt.data.backends.wan_vace import load_wan_pipeline

    d, dit, _ = vace_files
    bad = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(L.rename_one(dit, "vace_blocks.1.after_proj.weight", "vace_blocks.1.post_proj.weight"), str(bad))
    with pytest.raises(BackendError, match=r"after_proj"):
        load_wan_pipeline(_vace_cfg(d, dit=str(bad)), "backgrounds.vace", "layout test", vace=True)


def test_wan_pipeline_reads_the_diffusers_layout(vace_files, tmp_path):
    """The same pipeline loader given a Wan-AI/*-Diffusers ``transformer/`` directory (T2V, no VACE)."""
    from pvtt.data.backends.wan_vace import load_wan_pipeline

    d, _, _ = vace_files
    wan = L.materialize(L.wan_dit_shapes(**VACE), WAN_DTYPE, seed=5)
    _write_shards(L.wan_to_diffusers(wan), tmp_path / "transformer", n=2)
    pipe = load_wan_pipeline(_vace_cfg(d, dit=str(tmp_path / "transformer")), "synth.i2v", "layout test", vace=False)
    own = pipe.dit.state_dict()
    assert set(own) == set(wan) and all(torch.equal(own[k], wan[k]) for k in wan)
    assert pipe.dit.blocks[0].self_attn.num_heads == VACE_DIM // 128 and pipe.dit.dim == VACE_DIM


# --------------------------------------------------------------------------------- codecs (Wan2.1 / Wan2.2 VAE)
@pytest.fixture
def narrow_wan22_decoder(monkeypatch):
    """The codec's ``arch`` sizes Wan2.2's encoder width (``dim``) but not its decoder width (``dec_dim``, 256:
    a ~0.5e9-parameter decoder), so DiffSynth's ``VideoVAE38_`` gets ``dec_dim=8`` here. The codec's own load
    path -- DiffSynth's ``load_model`` + ``WanVideoVAEStateDictConverter`` + a strict ``load_state_dict`` --
    is unchanged."""
    import diffsynth.models.wan_video_vae as W

    init = W.VideoVAE38_.__init__
    monkeypatch.setattr(W.VideoVAE38_, "__init__", lambda self, dim=160, z_dim=48, dec_dim=256, **kw:
                        init(self, dim=dim, z_dim=z_dim, dec_dim=8, **kw))


@pytest.mark.parametrize("kind, shapes, arch, z, s", [
    ("wan_vae", lambda: L.wan21_vae_shapes(dim=8), {"dim": 8}, 16, 8),
    ("wan22_vae", lambda: L.wan22_vae_shapes(dim=8, dec_dim=8), {"dim": 8}, 48, 16),
])
def test_wan_vae_pth_through_the_codec(kind, shapes, arch, z, s, narrow_wan22_decoder, tmp_path):
    """``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth``: a plain ``torch.save`` of the VAE's state dict (fp32)."""
    from pvtt.models.codec import build_codec

    state = L.materialize(shapes(), WAN_DTYPE, seed=6)
    path = tmp_path / ("Wan2.1_VAE.pth" if kind == "wan_vae" else "Wan2.2_VAE.pth")
    torch.save(state, path)
    codec = build_codec({"kind": kind, "path": str(path), "arch": arch})
    own = {k.removeprefix("model."): v for k, v in codec.vae.state_dict().items() if k.startswith("model.")}
    assert set(own) == set(state) and all(torch.equal(own[k], state[k]) for k in state)
    assert (codec.channels, codec.spatial, codec.temporal) == (z, s, 4)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(1, 3, 1, s, s, generator=g) * 2 - 1          # one frame -> one latent frame
    lat = codec.encode(frames)
    assert lat.shape == (1, z, 1, 1, 1) and torch.isfinite(lat).all()
    out = codec.decode(lat)
    assert out.shape == frames.shape and torch.isfinite(out).all()
    # one renamed key: the strict load refuses it, naming it
    torch.save(L.rename_one(state, "decoder.head.0.gamma", "decoder.head.0.scale"), path)
    with pytest.raises((RuntimeError, ValueError), match=r"decoder\.head\.0\.gamma"):
        build_codec({"kind": kind, "path": str(path), "arch": arch})
