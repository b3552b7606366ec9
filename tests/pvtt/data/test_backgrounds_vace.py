"""Backgrounds backend ``wan_vace``: DiffSynth's real Wan VACE classes, tiny and randomly initialised.

No pretrained weights exist on CI machines, so the checkpoints here are random tiny models
built from the same DiffSynth classes the backend uses (``WanModel`` + ``VaceWanModel`` in one
safetensors file as Wan2.1-VACE ships them, the Wan2.1 VAE's ``VideoVAE_`` state dict as in
``Wan2.1_VAE.pth``, a ``WanTextEncoder`` .pth and a word-level tokenizer directory) and saved
in the official layouts, so the load path (DiffSynth's loader + converters, config read off
the tensors, ``backgrounds.vace.arch`` overrides) and the sampling path (``WanVideoPipeline``
-> ``model_fn_wan_video`` with ``vace_context``) run for real. The output is noise-like; what
is checked is the plumbing: shapes, the untouched outside of the mask, determinism, errors.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffsynth")

from test_maskqc import write_masks_dir  # noqa: E402
from test_masks import CLIP_SPECS, write_clips_dir  # noqa: E402

from genbuild.io.jsonio import read_json, write_json  # noqa: E402
from genbuild.io.video import probe, read_frames  # noqa: E402
from pvtt.data import backgrounds as B  # noqa: E402
from pvtt.data.backends import BackendError  # noqa: E402
from pvtt.data.backends import wan_vace as V  # noqa: E402

# Tiny shapes: DiT head width 48 (Wan's 3-D RoPE needs an even split), one VACE block at layer 0,
# the VAE's base width 8 (Wan2.1: 96; z_dim stays 16, as WanVideoVAE's latent statistics are 16-wide).
ARCH = {"dit": {"num_heads": 2},
        "vae": {"dim": 8},
        "text_encoder": {"vocab": 32, "dim": 32, "dim_attn": 32, "dim_ffn": 64, "num_heads": 2, "num_layers": 1,
                         "num_buckets": 8}}
DIT = {"dim": 96, "in_dim": 16, "ffn_dim": 128, "out_dim": 16, "text_dim": 32, "freq_dim": 32, "eps": 1e-6,
       "patch_size": (1, 2, 2), "num_heads": 2, "num_layers": 2, "has_image_input": False}
VACE = {"vace_layers": (0,), "vace_in_dim": 96, "patch_size": (1, 2, 2), "has_image_input": False, "dim": 96,
        "num_heads": 2, "ffn_dim": 128}
WORDS = "a an the of on in product background scene clean empty photo video table room wall light".split()


def write_tokenizer(path) -> None:
    """A word-level tokenizer directory that AutoTokenizer (and so DiffSynth's HuggingfaceTokenizer) loads."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: 3 + i for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(path))


def write_tiny_wan(d, *, vace: bool = True, dit: dict | None = None, image_encoder: dict | None = None) -> dict:
    """Random tiny Wan checkpoints in the official file layouts; returns their paths."""
    from diffsynth.models.wan_video_vace import VaceWanModel
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = V.wan_dit_factory(**(dit or DIT)).state_dict()
    if vace:
        state.update(VaceWanModel(**VACE).state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "diffusion_pytorch_model.safetensors"))
    torch.save(V.wan_vae_factory(ARCH["vae"]).model.state_dict(), d / "Wan2.1_VAE.pth")   # original naming
    torch.save(V.wan_text_encoder_factory(**ARCH["text_encoder"]).state_dict(), d / "models_t5_umt5-xxl-enc-bf16.pth")
    write_tokenizer(d / "google" / "umt5-xxl")
    paths = {"dit": str(d / "diffusion_pytorch_model.safetensors"), "vae": str(d / "Wan2.1_VAE.pth"),
             "text_encoder": str(d / "models_t5_umt5-xxl-enc-bf16.pth"), "tokenizer": str(d / "google" / "umt5-xxl")}
    if image_encoder is not None:
        sd = V.wan_image_encoder_factory(**image_encoder).state_dict()
        torch.save({k[len("model."):]: v for k, v in sd.items()},           # open-clip naming, as Wan ships it
                   d / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
        paths["image_encoder"] = str(d / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("vace")
    paths = write_tiny_wan(root / "models" / "wan-vace-tiny")
    vace = {**paths, "steps": 2, "device": "cpu", "dtype": "fp32", "arch": ARCH, "prompt": "a clean empty background"}
    return root, vace


@pytest.fixture(scope="module")
def backend(tiny):
    _, vace = tiny
    cfg, _ = B.validate_params({"backgrounds": {"backend": "wan_vace", "vace": vace}})
    return B.get_backend("wan_vace", cfg)


def test_loads_the_real_classes_from_the_files(backend):
    from diffsynth.models.wan_video_dit import WanModel
    from diffsynth.models.wan_video_vace import VaceWanModel
    from diffsynth.models.wan_video_vae import WanVideoVAE
    from diffsynth.pipelines.wan_video import WanVideoPipeline

    pipe = backend.pipe
    assert isinstance(pipe, WanVideoPipeline) and isinstance(pipe.dit, WanModel)
    assert isinstance(pipe.vace, VaceWanModel) and isinstance(pipe.vae, WanVideoVAE)
    assert pipe.vace.vace_layers == (0,) and len(pipe.dit.blocks) == 2 and pipe.dit.dim == 96
    # the weights are the file's: the DiT's patch embedding equals the saved tensor
    from safetensors.torch import load_file
    saved = load_file(backend.vcfg["dit"])
    assert torch.equal(pipe.dit.patch_embedding.weight, saved["patch_embedding.weight"])
    assert torch.equal(pipe.vace.vace_patch_embedding.weight, saved["vace_patch_embedding.weight"])


def test_remove_keeps_shape_and_outside_of_the_mask(backend):
    rng = np.random.default_rng(0)
    n, h, w = 6, 36, 40                                   # neither a multiple of 16 nor 1 + 4k frames
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    masks = np.zeros((n, h, w), bool)
    masks[:, 10:22, 12:26] = True
    t0 = time.perf_counter()
    out, info = backend.remove(frames, masks)
    print(f"wan_vace tiny: {n} frames {w}x{h} in {time.perf_counter() - t0:.1f} s")
    assert out.shape == frames.shape and out.dtype == np.uint8
    hole = backend.holes(masks)
    assert np.array_equal(out[~hole], frames[~hole])      # outside the dilated mask: bit-identical
    assert not np.array_equal(out[hole], frames[hole])    # inside: generated
    assert info["steps"] == 2 and info["windows"] == 1 and info["work_size"] == [48, 48]
    assert info["filled_from_time_frac"] == 0.0 and info["seconds"] > 0
    again, _ = backend.remove(frames, masks)
    assert np.array_equal(again, out)                     # seeded: deterministic


def test_long_clips_run_in_windows_and_large_frames_are_scaled(tiny):
    _, vace = tiny
    cfg, _ = B.validate_params({"backgrounds": {"backend": "wan_vace", "dilate": 0,
                                                "vace": {**vace, "max_frames": 5, "max_pixels": 32 * 32, "steps": 1}}})
    be = B.get_backend("wan_vace", cfg)
    frames = np.full((7, 40, 56, 3), 90, np.uint8)
    masks = np.zeros((7, 40, 56), bool)
    masks[:, 5:15, 20:30] = True
    out, info = be.remove(frames, masks)
    assert out.shape == frames.shape and info["windows"] == 2
    assert info["work_size"] == [48, 32]                  # 56x40 -> 38x27 (<= 1024 px) -> padded to 48x32
    assert np.array_equal(out[~masks], frames[~masks])
    masks[5:] = False                                     # the second window has no hole: not generated
    out, info = be.remove(frames, masks)
    assert info["windows"] == 1 and np.array_equal(out[5:], frames[5:])


def test_stage_end_to_end(tiny):
    root, vace = tiny
    spec = {**CLIP_SPECS["c000"], "width": 48, "height": 36}
    clips_dir, truth = write_clips_dir(root, specs={"c000": spec}, n_frames=5)
    masks_dir = write_masks_dir(root, "v000", {"c000": truth["c000"][1]})
    qc_dir = root / "maskqc" / "v000"
    qc_dir.mkdir(parents=True)
    write_json(qc_dir / "qc.json", {"video": "v000", "clips": {"c000": {"kept": True}}})
    out = root / "backgrounds" / "v000"
    params = {"backgrounds": {"backend": "wan_vace", "dilate": 2, "vace": vace},
              "video": {"crf": 17, "preset": "medium", "threads": 1}}
    B.main(["--params", json.dumps(params), "--clips", str(clips_dir), "--masks", str(masks_dir),
            "--maskqc", str(qc_dir), "--out", str(out)])
    info = read_json(out / "backgrounds.json")
    assert info["clips"]["c000"]["backend"] == "wan_vace" and info["clips"]["c000"]["n_frames"] == 5
    vi = probe(out / "c000.mp4")
    assert (vi.width, vi.height, vi.n_frames) == (48, 36, 5) and vi.fps == pytest.approx(24.0)
    assert read_frames(out / "c000.mp4").shape == (5, 36, 48, 3)


def test_missing_weights_name_path_key_and_dvc(tmp_path):
    vace = {"dit": "models/wan-vace-1.3b/diffusion_pytorch_model.safetensors", "vae": str(tmp_path / "vae.pth")}
    cfg, _ = B.validate_params({"backgrounds": {"backend": "wan_vace", "vace": vace}})
    with pytest.raises(BackendError) as e:
        B.get_backend("wan_vace", cfg)
    msg = str(e.value)
    assert "models/wan-vace-1.3b/diffusion_pytorch_model.safetensors" in msg and "backgrounds.vace.dit" in msg
    assert "dvc pull models/wan-vace-1.3b" in msg
    assert str(tmp_path / "vae.pth") in msg and "backgrounds.vace.vae" in msg


def test_a_dit_without_vace_blocks_is_refused(tiny, tmp_path):
    _, vace = tiny
    paths = write_tiny_wan(tmp_path / "plain", vace=False)
    cfg, _ = B.validate_params({"backgrounds": {"backend": "wan_vace", "vace": {**vace, "dit": paths["dit"]}}})
    with pytest.raises(BackendError, match=r"not a Wan VACE checkpoint.*backgrounds\.vace\.dit|backgrounds\.vace\.dit.*not a Wan VACE"):
        B.get_backend("wan_vace", cfg)


def test_wrong_arch_names_the_arch_key(tiny):
    _, vace = tiny
    cfg, _ = B.validate_params({"backgrounds": {"backend": "wan_vace",
                                                "vace": {**vace, "arch": {**ARCH, "vae": {"dim": 16}}}}})
    with pytest.raises(BackendError, match=r"backgrounds\.vace\.arch\.vae"):
        B.get_backend("wan_vace", cfg)


@pytest.mark.parametrize("vace, key", [
    ({"stepz": 3}, "backgrounds.vace.stepz"),
    ({"steps": 0}, "backgrounds.vace.steps"),
    ({"cfg": -1}, "backgrounds.vace.cfg"),
    ({"dtype": "int8"}, "backgrounds.vace.dtype"),
    ({"device": "tpu"}, "backgrounds.vace.device"),
    ({"dit": ""}, "backgrounds.vace.dit"),
    ({"tiled": "yes"}, "backgrounds.vace.tiled"),
    ({"arch": {"unet": {}}}, "backgrounds.vace.arch.unet"),
    ({"arch": {"dit": 3}}, "backgrounds.vace.arch.dit"),
    ("fast", "backgrounds.vace"),
])
def test_invalid_vace_params_name_the_key(vace, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        B.validate_params({"backgrounds": {"backend": "wan_vace", "vace": vace}})


def test_defaults_and_shape_helpers():
    cfg, _ = B.validate_params({"backgrounds": {"backend": "wan_vace"}})
    assert cfg["vace"]["dit"] == "models/wan-vace-1.3b/diffusion_pytorch_model.safetensors"
    assert V.dvc_target("models/wan-vace-1.3b/Wan2.1_VAE.pth") == "models/wan-vace-1.3b"
    assert V.fit_size(90, 160, 480 * 832) == ((90, 160), (96, 160))
    assert V.fit_size(720, 1280, 480 * 832) == ((474, 843), (480, 848))
    assert [V.pad_frames(n) for n in (1, 2, 5, 6, 81)] == [1, 5, 5, 9, 81]
    assert [V.window_length(m) for m in (1, 4, 5, 81, 100)] == [1, 1, 5, 81, 97]
