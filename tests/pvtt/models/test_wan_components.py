"""The real conditioning components from files in Wan2.1's published layouts (tiny, random):
Wan's CLIP ViT-H image encoder, the umT5 text encoder with its tokenizer directory, the Wan VAE
placed by params; and the sample's stand-ins unchanged to the byte."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from wan_layouts import CLIP_TINY, UMT5_TINY, umt5_state, write_umt5, write_umt5_tokenizer, write_wan_clip

from genbuild.weights import MissingWeightsError, WeightsError
from pvtt.models.bundle import components_from_params, encoders_for, new_bundle
from pvtt.models.codec import build_codec
from pvtt.models.components import resolve_placement
from pvtt.models.encoders import build_image_encoder, build_text_encoder, reference_to_tensor

CLIP_ARCH = {k: CLIP_TINY[k] for k in ("embed_dim", "vision_dim", "vision_mlp_ratio", "vision_heads", "vision_layers")}
CAPTIONS = ["a red leather bag", "a blue watch shown on white in the video"]


def _refs(n: int = 2, size: int = 64) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.stack([reference_to_tensor(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8), size) for _ in range(n)])


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wan2.1")
    write_wan_clip(d / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    write_umt5(d / "models_t5_umt5-xxl-enc-bf16.pth")
    write_umt5_tokenizer(d / "google" / "umt5-xxl")
    return d


def _clip_cfg(d):
    return {"kind": "clip_vit_h", "path": str(d / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"), "arch": CLIP_ARCH}


def _umt5_cfg(d, max_len=12):
    return {"kind": "umt5", "path": str(d / "models_t5_umt5-xxl-enc-bf16.pth"), "tokenizer": str(d / "google" / "umt5-xxl"),
            "max_len": max_len, "arch": UMT5_TINY}


def test_wan_clip_loads_the_published_layout_and_encodes_reference_batches(wan_dir):
    """visual.* / textual.* / log_scale go through DiffSynth's converter into a strict load; the
    pipeline's (B, 3, R, R) references give Wan I2V's 257 tokens (of the tiny width here)."""
    enc = build_image_encoder({**_clip_cfg(wan_dir), "size": 64})
    from diffsynth.models.wan_video_image_encoder import WanImageEncoder

    assert isinstance(enc.model, WanImageEncoder) and enc.dim == CLIP_TINY["vision_dim"]
    want = {f"model.{k}": v for k, v in torch.load(_clip_cfg(wan_dir)["path"]).items() if not k.startswith("textual.")}
    got = enc.model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    refs = _refs()
    tokens = enc(refs)
    assert tokens.shape == (2, 257, CLIP_TINY["vision_dim"]) and tokens.dtype == torch.float32
    assert torch.isfinite(tokens).all() and not torch.allclose(tokens[0], tokens[1])
    assert torch.allclose(enc(refs[:1]), tokens[:1], atol=1e-5)
    assert torch.equal(refs, _refs()), "the caller's tensor is not modified"


def test_wan_clip_file_that_does_not_fit_names_path_and_key(tmp_path):
    bad = write_wan_clip(tmp_path / "clip.pth")
    with pytest.raises(WeightsError, match=r"clip.pth.*model.image_encoder.path"):
        build_image_encoder({"kind": "clip_vit_h", "path": str(bad), "arch": {**CLIP_ARCH, "vision_dim": 64}})


def test_umt5_loads_the_published_layout_with_its_tokenizer_directory(wan_dir):
    """The bf16 ``T5Encoder`` file loads strictly into DiffSynth's WanTextEncoder; captions are
    tokenised from the local directory (no download), padded to max_len, zero past each caption."""
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder

    enc = build_text_encoder(_umt5_cfg(wan_dir), text_dim=UMT5_TINY["dim"])
    assert isinstance(enc.model, WanTextEncoder) and enc.dtype == torch.float32
    state = umt5_state()
    got = enc.model.state_dict()
    assert set(got) == set(state) and all(torch.equal(got[k], state[k].float()) for k in state)
    out = enc(CAPTIONS)
    assert out.shape == (2, 12, UMT5_TINY["dim"]) and out.dtype == torch.float32 and out.device.type == "cpu"
    ids, mask = enc.tokenizer(CAPTIONS, return_mask=True, add_special_tokens=True)
    lens = mask.sum(1).tolist()
    assert lens == [5, 10] and ids[0, 4].item() == 1  # 4 words + </s>; </s> is id 1 as in umT5
    for i, n in enumerate(lens):
        assert out[i, n:].abs().max() == 0 and (out[i, :n].abs().sum(-1) > 0).all()
    # The same as DiffSynth's WanTextEncoder on the tokens (Wan's own T5EncoderModel.__call__).
    ref = WanTextEncoder(**UMT5_TINY).eval()
    ref.load_state_dict({k: v.float() for k, v in state.items()})
    with torch.no_grad():
        want = ref(ids, mask)
    assert torch.allclose(out[0, :5], want[0, :5], atol=1e-5) and torch.allclose(out[1, :10], want[1, :10], atol=1e-5)
    assert not torch.allclose(out[0, :4], enc(["a blue box bottle"])[0, :4])


def test_umt5_width_must_fit_the_dit_and_the_tokenizer_must_exist(wan_dir, tmp_path):
    with pytest.raises(ValueError, match=r"model.text_encoder.*width 32.*takes 4096"):
        build_text_encoder(_umt5_cfg(wan_dir), text_dim=4096)
    with pytest.raises(MissingWeightsError, match="umT5 tokenizer"):
        build_text_encoder({**_umt5_cfg(wan_dir), "tokenizer": str(tmp_path / "nope")}, text_dim=32)


def test_real_components_condition_the_dit_through_the_bundle(wan_dir):
    """The conditioning path with the real classes end to end: params -> components -> bundle ->
    tokens -> one DiT forward at the pipeline's shapes (tiny preset, whose text width is 32)."""
    comps = components_from_params({"preset": "tiny", "prediction": "velocity", "image_encoder": _clip_cfg(wan_dir),
                                    "text_encoder": _umt5_cfg(wan_dir)}, {"reference_size": 64})
    bundle = new_bundle(comps, seed=0)
    assert bundle.dit.arch["image_dim"] == CLIP_TINY["vision_dim"]
    img, txt = bundle.image_encoder(_refs()), bundle.text_encoder(CAPTIONS)
    x = torch.randn(2, 48, 2, 8, 12)
    with torch.no_grad():
        v = bundle.dit.eval()(x, torch.tensor([900.0, 100.0]), x, torch.rand(2, 1, 2, 8, 12), img, txt)
    assert v.shape == x.shape and torch.isfinite(v).all()


def test_real_encoders_load_on_first_use_but_missing_files_stop_at_once(wan_dir, tmp_path):
    broken = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save({"token_embedding.weight": torch.zeros(4, 4)}, broken)
    comps = components_from_params({"preset": "tiny", "text_encoder": {**_umt5_cfg(wan_dir), "path": str(broken)}},
                                   {"reference_size": 64})
    bundle = encoders_for(comps)  # a teacher on the latent cache never touches the text encoder
    with pytest.raises(WeightsError, match=r"umT5-XXL.*models_t5_umt5-xxl-enc-bf16.pth.*model.text_encoder.path"):
        bundle.text_encoder(CAPTIONS)
    missing = components_from_params({"preset": "tiny", "text_encoder": {**_umt5_cfg(wan_dir), "path": str(tmp_path / "x")}},
                                     {"reference_size": 64})
    with pytest.raises(MissingWeightsError, match="dvc pull"):
        encoders_for(missing)


def _tiny_vae(path):
    from diffsynth.models.wan_video_vae import VideoVAE_

    torch.manual_seed(0)
    torch.save(VideoVAE_(dim=8, z_dim=16).state_dict(), path)  # Wan2.1_VAE.pth: VideoVAE_ names, no prefix
    return path


def test_wan_vae_takes_device_and_dtype_from_params(tmp_path):
    """The codec is built where params say, in the dtype they say (here bfloat16 on the CPU); it
    takes float32 frames and gives float32 latents back where the frames were."""
    vae = _tiny_vae(tmp_path / "Wan2.1_VAE.pth")
    comps = components_from_params({"preset": "tiny", "dtype": "bfloat16",
                                    "codec": {"kind": "wan_vae", "path": str(vae), "arch": {"dim": 8}}}, {"reference_size": 64})
    codec = encoders_for(comps).codec
    assert {p.dtype for p in codec.vae.parameters()} == {torch.bfloat16}
    frames = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    z = codec.encode(frames)
    assert z.shape == (1, 16, 2, 2, 3) and z.dtype == torch.float32 and torch.isfinite(z).all()
    back = codec.decode(z)
    assert back.shape == frames.shape and back.dtype == torch.float32
    # A per-component override wins over the model's placement (Wan keeps its VAE in float32).
    comps32 = components_from_params({"preset": "tiny", "dtype": "bfloat16", "codec": {"kind": "wan_vae", "path": str(vae),
                                      "arch": {"dim": 8}, "dtype": "float32"}}, {"reference_size": 64})
    assert {p.dtype for p in encoders_for(comps32).codec.vae.parameters()} == {torch.float32}
    assert build_codec({"kind": "wan_vae", "path": str(vae), "arch": {"dim": 8}}).vae.model.conv1.weight.dtype == torch.float32


def test_placement_auto_and_errors_name_the_key():
    assert resolve_placement("auto", "auto") == (torch.device("cpu"), torch.float32)
    assert resolve_placement("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"model.codec.device: 'cuda'.*no CUDA device"):
            resolve_placement("cuda", "auto", "model.codec.device")
    with pytest.raises(ValueError, match="model.dtype: 'fp8'"):
        resolve_placement("cpu", "fp8")
    comps = components_from_params({"preset": "tiny", "text_encoder": {"kind": "hashed", "device": "gpu"}}, {"reference_size": 64})
    with pytest.raises(ValueError, match="model.text_encoder.device: 'gpu'"):
        encoders_for(comps)


def _h(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def test_sample_components_are_unchanged_to_the_byte():
    """Digests taken with the code before placement and the real encoders existed: the sample's
    stand-ins, the DiT's initial weights and the global RNG after building the bundle (LoRA and the
    trainer draw from it next) are the same bytes."""
    comps = components_from_params({"preset": "tiny", "prediction": "source_residual"}, {"reference_size": 64})
    assert (comps["device"], comps["dtype"]) == ("cpu", "float32")
    torch.manual_seed(123)
    b = new_bundle(comps, seed=0)
    assert hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16] == "e6535ca1b9f14156"
    sd = b.dit.state_dict()
    assert hashlib.sha256(b"".join(sd[k].numpy().tobytes() for k in sorted(sd))).hexdigest()[:16] == "71ee26f8d89ef717"
    rng = np.random.default_rng(0)
    ref = torch.stack([reference_to_tensor(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8), 64) for _ in range(2)])
    assert _h(b.image_encoder(ref)) == "cb25b170c5d864a1"
    assert _h(b.text_encoder(["a red leather bag", "a blue watch on white"])) == "248d3715f423f5dc"
    x = torch.rand(1, 3, 4, 16, 24, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert type(b.codec).__name__ == "SpaceToDepthCodec" and torch.equal(b.codec.decode(b.codec.encode(x)), x)


def test_latent_cache_encodes_with_the_real_components_where_params_place_them(wan_dir, tmp_path):
    """The latent cache stage builds its components from params: Wan VAE, CLIP and umT5 from files
    in the published layouts, in bfloat16; the cache holds float32 tensors and names the components."""
    import json

    from test_checkpoint import make_tiny_dataset

    from pvtt.train.latents import encode_dataset, load_latents

    model = {"preset": "tiny", "prediction": "velocity", "device": "cpu", "dtype": "bfloat16",
             "codec": {"kind": "wan_vae", "path": str(_tiny_vae(tmp_path / "Wan2.1_VAE.pth")), "arch": {"dim": 8}},
             "image_encoder": _clip_cfg(wan_dir), "text_encoder": _umt5_cfg(wan_dir)}
    td = {"width": 32, "height": 32, "frames": 5, "frame_stride": 1, "reference_size": 32}
    ds = make_tiny_dataset(tmp_path / "dataset", n_train=2, n_val=1, frames=5)
    encode_dataset(ds, tmp_path / "latents", {"model": model, "train_data": td})
    stored = json.loads((tmp_path / "latents" / "components.json").read_text())
    assert (stored["dtype"], stored["codec"]["kind"], stored["text_encoder"]["kind"]) == ("bfloat16", "wan_vae", "umt5")
    train, val = load_latents(tmp_path / "latents", components_from_params(model, td), td)
    assert train.target.shape == (2, 16, 2, 4, 4) and train.cond.mask.shape == (2, 1, 2, 4, 4)
    assert train.cond.image_tokens.shape == (2, 257, CLIP_TINY["vision_dim"]) and train.cond.text_tokens.shape == (2, 12, 32)
    assert all(t.dtype == torch.float32 for t in (train.target, train.cond.source, train.cond.image_tokens, train.cond.text_tokens))
    assert len(val) == 1


def test_a_checkpoint_carries_its_placement_and_a_host_can_override_it(tmp_path):
    """components (and so every checkpoint's config.json) name the placement; a CUDA-trained model
    loads on a CPU host with load_bundle(device=...), and the components it reports stay the trained ones."""
    from pvtt.models.bundle import load_bundle

    comps = components_from_params({"preset": "tiny", "device": "cuda", "dtype": "bfloat16",
                                    "text_encoder": {"kind": "hashed", "max_len": 16, "device": "cuda:1"}}, {"reference_size": 64})
    b = new_bundle({**comps, "device": "cpu", "text_encoder": {"kind": "hashed", "max_len": 16}}, seed=0)
    b.dit.save(tmp_path, extra={"components": comps, "shift": 3.0})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="model.device: 'cuda', but this machine has no CUDA device"):
            load_bundle(tmp_path)
    cpu = load_bundle(tmp_path, device="cpu", dtype="float32")
    assert cpu.components == comps and cpu.text_encoder.table.weight.dtype == torch.float32
    assert cpu.text_encoder(CAPTIONS).shape == (2, 16, 32)
