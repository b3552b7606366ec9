"""Synth route B ``flux_wan_i2v``: DiffSynth's real FLUX.1 and Wan I2V classes, tiny and random.

The checkpoints are random tiny models of the DiffSynth classes the route uses, written in the
official file layouts (BFL ``flux1-dev.safetensors`` and ``ae.safetensors`` names, HF CLIP-L and
T5 text encoders, Wan2.1-I2V DiT/VAE/CLIP/umT5 files) so that the route's loaders run through
DiffSynth's state-dict converters. The official names are recovered from the converters
themselves (:func:`official_names`). Outputs are noise-like; the checks are the plumbing: the
stage's outputs, shapes, fps, the mask (route A's, exactly), the FLUX edit staying inside its
region, segmenting of long clips, and the errors.
"""
from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffsynth")

from test_backgrounds_vace import ARCH as WAN_ARCH  # noqa: E402
from test_backgrounds_vace import write_tiny_wan, write_tokenizer  # noqa: E402

from genbuild.io.jsonio import read_json, write_json  # noqa: E402
from genbuild.io.masks import load_masks, save_masks  # noqa: E402
from genbuild.io.video import probe, read_frames, write_png, write_video  # noqa: E402
from pvtt.data import synth as S  # noqa: E402
from pvtt.data.backends import BackendError  # noqa: E402
from pvtt.data.backends import flux_wan_i2v as R  # noqa: E402

N, H, W, FPS = 5, 40, 48, 12.0
VIDEO = {"crf": 17, "preset": "medium", "threads": 1}
FLUX_ARCH = {"dit": {"num_heads": 2, "axes_dim": [8, 12, 12]},            # head width 32 = 8 + 12 + 12
             "vae": {"ch": 32},                                          # FLUX.1: 128 (-> 128/256/512 channels)
             "text_encoder": {"embed_dim": 32, "vocab_size": 32, "num_encoder_layers": 2,
                              "encoder_intermediate_size": 64},
             "text_encoder_2": {"vocab_size": 32, "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1,
                                "num_heads": 2, "relative_attention_num_buckets": 8}}
FLUX_DIT = {"dim": 64, "num_heads": 2, "num_blocks": 1, "num_single_blocks": 1, "axes_dim": (8, 12, 12),
            "text_dim": 32, "pooled_dim": 32}
I2V_DIT = {"dim": 96, "in_dim": 36, "ffn_dim": 128, "out_dim": 16, "text_dim": 32, "freq_dim": 32, "eps": 1e-6,
           "patch_size": (1, 2, 2), "num_heads": 2, "num_layers": 2, "has_image_input": True, "image_dim": 32}
CLIP_ARCH = {"embed_dim": 16, "image_size": 32, "patch_size": 2, "vision_dim": 32, "vision_heads": 2,
             "vision_layers": 2, "vocab_size": 64, "max_text_len": 16, "text_dim": 16, "text_heads": 2,
             "text_layers": 1}      # 32 px / patch 2 -> 256 + 1 tokens, the 257 Wan's image attention expects


def official_names(converter, templates=()) -> dict:
    """{DiffSynth name: official name} for a renaming converter, found by feeding it the names
    it knows (string constants of its code, optionally placed into ``templates``)."""
    consts: set[str] = set()

    def walk(code):
        for c in code.co_consts:
            if isinstance(c, str):
                consts.add(c)
            elif isinstance(c, tuple):
                consts.update(x for x in c if isinstance(x, str))
            elif hasattr(c, "co_consts"):
                walk(c)

    walk(converter.__code__)
    cands = consts | {t.format(i=i, s=s) for t in templates for i in range(4) for s in consts}
    inv = {}
    for c in sorted(cands):
        try:
            out = converter({c: torch.zeros(2, 2)})
        except Exception:  # noqa: BLE001 - not a name this converter knows
            continue
        for k in out:
            inv.setdefault(k, c)
    return inv


def to_official(state: dict, inv: dict, prefix: str = "") -> dict:
    missing = sorted(set(state) - set(inv))
    assert not missing, missing[:5]
    return {prefix + inv[k]: v.detach().clone().contiguous() for k, v in state.items()}


def write_tiny_flux(d) -> dict:
    from diffsynth.utils.state_dict_converters.flux_dit import FluxDiTStateDictConverter
    from diffsynth.utils.state_dict_converters.flux_text_encoder_clip import FluxTextEncoderClipStateDictConverter
    from diffsynth.utils.state_dict_converters.flux_vae import (
        FluxVAEDecoderStateDictConverter,
        FluxVAEEncoderStateDictConverter,
    )
    from safetensors.torch import save_file

    torch.manual_seed(1)
    (d / "text_encoder").mkdir(parents=True)
    (d / "text_encoder_2").mkdir()
    dit = R.sized_flux_dit(**FLUX_DIT).state_dict()
    save_file(to_official(dit, official_names(FluxDiTStateDictConverter, ("double_blocks.{i}.{s}", "single_blocks.{i}.{s}"))),
              str(d / "flux1-dev.safetensors"))
    enc = to_official(R.flux_vae_factory("encoder", 32).state_dict(), official_names(FluxVAEEncoderStateDictConverter))
    dec = to_official(R.flux_vae_factory("decoder", 32).state_dict(), official_names(FluxVAEDecoderStateDictConverter))
    save_file({**enc, **dec}, str(d / "ae.safetensors"))
    clip = R.flux_clip_factory(**FLUX_ARCH["text_encoder"]).state_dict()
    clip["position_embeds"] = clip["position_embeds"][0]                 # HF stores it (77, dim)
    save_file(to_official(clip, official_names(FluxTextEncoderClipStateDictConverter,
                                               ("text_model.encoder.layers.{i}.{s}.weight",
                                                "text_model.encoder.layers.{i}.{s}.bias"))),
              str(d / "text_encoder" / "model.safetensors"))
    t5 = R.flux_t5_factory(**FLUX_ARCH["text_encoder_2"]).state_dict()   # HF T5EncoderModel names already
    save_file({k: v.detach().clone().contiguous() for k, v in t5.items() if k != "encoder.embed_tokens.weight"},
              str(d / "text_encoder_2" / "model.safetensors"))
    write_tokenizer(d / "tokenizer")
    write_tokenizer(d / "tokenizer_2")
    return {"dit": str(d / "flux1-dev.safetensors"), "vae": str(d / "ae.safetensors"),
            "text_encoder": str(d / "text_encoder" / "model.safetensors"), "text_encoder_2": str(d / "text_encoder_2"),
            "tokenizer": str(d / "tokenizer"), "tokenizer_2": str(d / "tokenizer_2")}


def scene_frames() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    bg = np.empty((N, H, W, 3), np.uint8)
    masks = np.zeros((N, H, W), bool)
    for t in range(N):
        bg[t, ..., 0] = 100 + 60 * np.sin((x + 2 * t) / 7.0)
        bg[t, ..., 1] = 120 + 50 * np.cos((x - y) / 9.0)
        bg[t, ..., 2] = 110 + 40 * np.sin(y / 5.0)
        masks[t, 10:30, 12 + 2 * t:26 + 2 * t] = True
    ref = np.zeros((30, 20, 4), np.uint8)
    ref[..., :3] = (220, 40, 40)
    alpha = np.zeros((30, 20), np.uint8)
    cv2.ellipse(alpha, (10, 15), (8, 13), 0, 0, 360, 255, -1)
    ref[..., 3] = alpha
    return bg, masks, ref


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("routeb")
    flux = {**write_tiny_flux(root / "models" / "flux-tiny"), "steps": 2, "device": "cpu", "dtype": "fp32",
            "arch": FLUX_ARCH, "dilate": 2}
    wan = write_tiny_wan(root / "models" / "wan-i2v-tiny", vace=False, dit=I2V_DIT, image_encoder=CLIP_ARCH)
    i2v = {**wan, "steps": 2, "cfg": 1.0, "device": "cpu", "dtype": "fp32",
           "arch": {**WAN_ARCH, "image_encoder": CLIP_ARCH}}
    work = root / "work"
    bg, masks, ref = scene_frames()
    write_video(work / "backgrounds/v0/c0.mp4", bg, FPS)
    save_masks(work / "masks/v0/c0.npy.gz", masks)
    write_png(work / "products/p1/view0.png", ref)
    pair = {"id": "c0__p1_view0", "clip": "c0", "video": "v0", "product": "p1", "view": "view0",
            "background_path": "backgrounds/v0/c0.mp4", "mask_path": "masks/v0/c0.npy.gz",
            "reference_path": "products/p1/view0.png"}
    write_json(work / "pairs/shard-0000.json", {"shard": 0, "pairs": [pair]})
    params = {"synth": {"route": "flux_wan_i2v", "scale_margin": 0.95, "flux": flux, "i2v": i2v}, "video": VIDEO}
    return {"root": root, "work": work, "pair": pair, "params": params, "flux": flux, "i2v": i2v}


@pytest.fixture(scope="module")
def route(setup):
    return S.ROUTES["flux_wan_i2v"](S.validate_params(setup["params"]))


def test_stage_end_to_end(setup):
    work, pair = setup["work"], setup["pair"]
    out = work / "synth/shard-0000"
    t0 = time.perf_counter()
    S.main(["--params", json.dumps(setup["params"]), "--work", str(work), "--pairs", str(work / "pairs/shard-0000.json"),
            "--out", str(out)])
    print(f"route B tiny: stage run in {time.perf_counter() - t0:.1f} s")
    s = read_json(out / "synth.json")
    assert s["route"] == "flux_wan_i2v" and s["pairs"] == {pair["id"]: {"status": "ok", "n_frames": N}}
    info = probe(out / pair["id"] / "edited.mp4")
    assert (info.width, info.height, info.n_frames) == (W, H, N) and info.fps == pytest.approx(FPS)
    assert read_frames(out / pair["id"] / "edited.mp4").shape == (N, H, W, 3)
    meta = read_json(out / pair["id"] / "meta.json")
    assert meta["route"] == "flux_wan_i2v" and (meta["n_frames"], meta["width"], meta["height"]) == (N, W, H)
    assert meta["flux"]["steps"] == 2 and meta["flux"]["region_frac"] > 0 and meta["i2v"]["segments"] == 1
    assert meta["i2v"]["work_size"] == [48, 48] and len(meta["placed_bbox"]) == N
    # the mask is route A's composited alpha track, exactly
    a = S.CompositeRoute(S.validate_params(setup["params"])).synthesize(pair, work)
    assert np.array_equal(load_masks(out / pair["id"] / "mask.npy.gz"), a.mask)


def test_loads_real_classes_from_official_layouts(route):
    from diffsynth.models.flux_dit import FluxDiT
    from diffsynth.models.flux_vae import FluxVAEDecoder, FluxVAEEncoder
    from diffsynth.models.wan_video_dit import WanModel
    from diffsynth.models.wan_video_image_encoder import WanImageEncoder
    from safetensors.torch import load_file

    fp = route.flux.pipe
    assert isinstance(fp.dit, FluxDiT) and isinstance(fp.vae_encoder, FluxVAEEncoder)
    assert isinstance(fp.vae_decoder, FluxVAEDecoder)
    assert len(fp.dit.blocks) == 1 and len(fp.dit.single_blocks) == 1
    bfl = load_file(route.flux.cfg["dit"])
    assert torch.equal(fp.dit.x_embedder.weight, bfl["img_in.weight"])
    assert route.flux.prompt_emb.shape == (1, 512, 32) and route.flux.pooled_emb.shape == (1, 32)
    wp = route.i2v.pipe
    assert isinstance(wp.dit, WanModel) and wp.dit.has_image_input and wp.dit.in_dim == 36
    assert isinstance(wp.image_encoder, WanImageEncoder) and wp.vace is None


def test_flux_edit_stays_inside_the_region(route):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), bool)
    mask[12:24, 16:30] = True
    out, info = route.flux.edit(img, mask)
    region = route.flux.region(mask)
    assert out.shape == img.shape and np.array_equal(out[~region], img[~region])
    assert not np.array_equal(out[region], img[region])
    assert info["work_size"] == [48, 48] and not info.get("skipped")
    same, info0 = route.flux.edit(img, np.zeros((H, W), bool))
    assert info0["skipped"] and np.array_equal(same, img)


def test_long_clips_continue_in_segments(setup):
    cfg = {**setup["i2v"], "max_frames": 5, "steps": 1}
    _, i2v = R.validate_sections({"synth": {"i2v": cfg}})
    gen = R.WanI2V(i2v)
    first = np.full((H, W, 3), 120, np.uint8)
    frames, info = gen.generate(first, 7)
    assert frames.shape == (7, H, W, 3) and info["segments"] == 2      # 5 frames, then 1 + 3 more


def test_text_to_video_dit_is_refused_for_i2v(setup, tmp_path):
    t2v = write_tiny_wan(tmp_path / "t2v", vace=False)
    _, i2v = R.validate_sections({"synth": {"i2v": {**setup["i2v"], "dit": t2v["dit"]}}})
    with pytest.raises(BackendError, match=r"synth\.i2v\.dit.*36"):
        R.WanI2V(i2v)


def test_missing_weights_name_path_key_and_dvc(tmp_path):
    params = {"synth": {"route": "flux_wan_i2v", "scale_margin": 0.9}, "video": VIDEO}
    with pytest.raises(BackendError) as e:
        S.run(tmp_path, tmp_path / "none.json", tmp_path / "out", params)
    msg = str(e.value)
    assert "models/flux1-dev/flux1-dev.safetensors" in msg and "synth.flux.dit" in msg
    assert "dvc pull models/flux1-dev" in msg
    assert "synth.i2v.image_encoder" in msg and "dvc pull models/wan-i2v-14b-480p" in msg
    assert not (tmp_path / "out").exists()


def test_sized_classes_match_the_originals_at_default_widths():
    """The re-sizable FLUX builders reproduce DiffSynth's own classes layer for layer (checked on meta tensors)."""
    from diffsynth.core.vram.initialization import skip_model_initialization
    from diffsynth.models.flux_dit import FluxDiT
    from diffsynth.models.flux_vae import FluxVAEDecoder, FluxVAEEncoder

    def shapes(m):
        return {k: tuple(v.shape) for k, v in m.state_dict().items()}

    with skip_model_initialization():
        assert shapes(R.sized_flux_dit()) == shapes(FluxDiT())
        assert shapes(R.sized_flux_vae("encoder")) == shapes(FluxVAEEncoder())
        assert shapes(R.sized_flux_vae("decoder")) == shapes(FluxVAEDecoder())
        assert type(R.flux_dit_factory()) is FluxDiT


@pytest.mark.parametrize("synth, key", [
    ({"flux": {"strength": 1.5}}, "synth.flux.strength"),
    ({"flux": {"steps": 0}}, "synth.flux.steps"),
    ({"flux": {"prompts": "x"}}, "synth.flux.prompts"),
    ({"flux": {"arch": {"unet": {}}}}, "synth.flux.arch.unet"),
    ({"i2v": {"image_encoder": 3}}, "synth.i2v.image_encoder"),
    ({"i2v": {"max_frames": 0}}, "synth.i2v.max_frames"),
    ({"i2v": {"dtype": "fp8"}}, "synth.i2v.dtype"),
    ({"i2v": []}, "synth.i2v"),
])
def test_invalid_params_name_the_key(synth, key):
    params = {"synth": {"route": "flux_wan_i2v", "scale_margin": 0.9, **synth}, "video": VIDEO}
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        S.validate_params(params)


def test_route_b_is_registered_and_defaults_point_at_models():
    assert "flux_wan_i2v" in S.ROUTES
    s = S.validate_params({"synth": {"route": "flux_wan_i2v", "scale_margin": 0.9}, "video": VIDEO})
    assert s["flux"]["dit"].startswith("models/flux1-dev/") and s["i2v"]["vae"].startswith("models/wan-i2v-14b-480p/")
    assert s["flux"]["strength"] == 0.35 and s["i2v"]["steps"] == 30
