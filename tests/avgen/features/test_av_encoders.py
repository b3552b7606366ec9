"""The features stage's CLIP/CLAP encoders (avgen.features.encoders).

The real backends load from files written here in the published layouts at tiny width: an
open_clip checkpoint of a tiny registered architecture (loaded by *path*, as a ViT-B-32 file would
be), and a transformers ClapModel + ClapProcessor directory (config, safetensors, processor config,
a byte-level BPE tokenizer built offline from the 256 byte symbols). Random weights make no
embedding meaningful; the tests fix what holds for any weights: shapes, unit norms, determinism,
that the loaded model computes what the in-memory one does, and that missing files stop with the path.
"""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from avgen.features import encoders as E  # noqa: E402
from genbuild.weights import MissingWeightsError, WeightsError  # noqa: E402

torch.set_num_threads(2)

TINY_ARCH = "avgen-test-tiny-clip"
# vocab_size must be open_clip's BPE vocabulary (49408): the built-in tokenizer is used as for ViT-B-32.
TINY_CLIP = dict(embed_dim=32, vision_cfg=dict(layers=1, width=32, head_width=16, patch_size=16, image_size=64),
                 text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))
TINY_CLAP = dict(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  max_position_embeddings=96),
                 audio_config=dict(depths=[1, 1], num_attention_heads=[1, 2], patch_embeds_hidden_size=16, hidden_size=32,
                                   num_hidden_layers=2),
                 projection_dim=24)


def _frames(seed: int, n: int = 3, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size + 16, 3), dtype=np.uint8)


def _tone(freq: float, seconds: float = 1.0, sr: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """A tiny registered open_clip architecture and its checkpoint file; returns (path, in-memory model)."""
    import open_clip

    d = tmp_path_factory.mktemp("clip")
    (d / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(d / f"{TINY_ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH).eval()
    torch.save(model.state_dict(), d / "tiny_clip.bin")
    return d / "tiny_clip.bin", model


def _byte_bpe_vocab() -> dict[str, int]:
    """RoBERTa's special tokens + the 256 byte-level symbols: a valid byte-level BPE with no merges."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for sym in bytes_to_unicode().values():
        vocab[sym] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return vocab


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    """A laion/clap-htsat-unfused-shaped directory at tiny width; returns (dir, in-memory model)."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    d = tmp_path_factory.mktemp("clap")
    vocab = _byte_bpe_vocab()
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[])
    extractor = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad", frequency_min=50, frequency_max=14000)
    cfg = dict(TINY_CLAP, text_config=dict(TINY_CLAP["text_config"], vocab_size=len(vocab)))
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(**cfg)).eval()
    model.save_pretrained(d)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(d)
    return d, model


# ------------------------------------------------------------------------------------------ stand-ins
def test_stand_ins_are_deterministic_unit_rows_of_width_512():
    a, b = E.StandInClipEncoder(seed=3), E.StandInClipEncoder(seed=3)
    img = a.image(_frames(0))
    assert img.shape == (3, 512) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(img, b.image(_frames(0)))
    txt = a.text(["a red ball bounces", ""])
    assert txt.shape == (2, 512) and np.isfinite(txt).all()
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    assert not np.allclose(img, E.StandInClipEncoder(seed=4).image(_frames(0)))

    c = E.StandInClapEncoder(seed=3)
    aud = c.audio([_tone(440), _tone(880, 0.5), np.zeros(10, np.float32)], sr=16_000)
    assert aud.shape == (3, 512) and np.isfinite(aud).all()
    np.testing.assert_allclose(np.linalg.norm(aud, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(aud, E.StandInClapEncoder(seed=3).audio([_tone(440), _tone(880, 0.5), np.zeros(10)], 16_000))
    assert c.text(["x"]).shape == (1, 512)
    assert a.stand_in and c.stand_in and "stand-in" in a.implementation


def test_build_encoders_refuses_a_stand_in_unless_allowed(tmp_path):
    clip, clap = E.build_encoders({"clip": {"backend": "stand_in"}, "clap": {"backend": "stand_in"}}, tmp_path,
                                  allow_stand_in=True)
    assert clip.stand_in and clap.stand_in
    for which in ("clip", "clap"):
        cfg = {"clip": {"backend": "open_clip", "path": "x"}, "clap": {"backend": "clap", "path": "y"}}
        cfg[which] = {"backend": "stand_in"}
        with pytest.raises(ValueError, match=f"params key 'features.{which}.backend'"):
            E.build_encoders(cfg, tmp_path, allow_stand_in=False)
    named = {"clip": {"backend": "stand_in"}, "clap": {"backend": "stand_in"}, "allow_stand_ins": ["clip", "clap"]}
    assert all(e.stand_in for e in E.build_encoders(named, tmp_path, allow_stand_in=False))
    with pytest.raises(ValueError, match="features.clap.backend"):
        E.build_encoders(dict(named, allow_stand_ins=["clip"]), tmp_path, allow_stand_in=False)
    with pytest.raises(ValueError, match="unknown backend"):
        E.build_encoders({"clip": {"backend": "laion"}}, tmp_path, allow_stand_in=True)


def test_missing_weights_name_the_path_and_dvc_pull(tmp_path):
    cfg = {"clip": {"backend": "open_clip", "arch": "ViT-B-32", "path": "models/clip/open_clip_vit_b32.bin"},
           "clap": {"backend": "stand_in"}}
    with pytest.raises(MissingWeightsError, match=r"models/clip/open_clip_vit_b32\.bin.*dvc pull"):
        E.build_encoders(cfg, tmp_path, allow_stand_in=True)
    cfg = {"clip": {"backend": "stand_in"}, "clap": {"backend": "clap", "path": "models/clap-htsat-unfused"}}
    with pytest.raises(MissingWeightsError, match=r"models/clap-htsat-unfused.*dvc pull"):
        E.build_encoders(cfg, tmp_path, allow_stand_in=True)


# ------------------------------------------------------------------------------------------ open_clip
def test_open_clip_loads_a_checkpoint_file_by_path_and_matches_the_model(clip_file, tmp_path):
    path, model = clip_file
    root = path.parent
    clip, _ = E.build_encoders({"clip": {"backend": "open_clip", "arch": TINY_ARCH, "path": path.name},
                                "clap": {"backend": "stand_in"}}, root, allow_stand_in=True)
    assert isinstance(clip, E.OpenClipEncoder) and not clip.stand_in and clip.dim == 32
    frames = _frames(1)
    img = clip.image(frames)
    assert img.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    import open_clip

    reference = E.OpenClipEncoder(model, open_clip.get_tokenizer(TINY_ARCH))
    np.testing.assert_allclose(img, reference.image(frames), atol=1e-5)
    caps = ["a dog barks at a ball", "rain on a tin roof"]
    txt = clip.text(caps)
    with torch.inference_mode():
        direct = torch.nn.functional.normalize(model.encode_text(open_clip.get_tokenizer(TINY_ARCH)(caps)), dim=-1)
    np.testing.assert_allclose(txt, direct.numpy(), atol=1e-5)
    assert TINY_ARCH in clip.implementation and path.name in clip.implementation


def test_open_clip_wrong_file_and_unknown_arch_name_the_params_key(clip_file, tmp_path):
    torch.save({"visual.nonsense": torch.zeros(2)}, tmp_path / "bad.bin")
    with pytest.raises(WeightsError, match=r"bad\.bin.*features\.clip\.path"):
        E.load_open_clip(tmp_path / "bad.bin", TINY_ARCH)
    with pytest.raises(ValueError, match="features.clip.arch"):
        E.load_open_clip(tmp_path / "bad.bin", "hf-hub:laion/whatever")


# ------------------------------------------------------------------------------------------ CLAP
def test_clap_directory_loads_strictly_and_embeds_audio_and_text(clap_dir):
    d, model = clap_dir
    _, clap = E.build_encoders({"clip": {"backend": "stand_in"}, "clap": {"backend": "clap", "path": d.name}},
                               d.parent, allow_stand_in=True)
    assert isinstance(clap, E.TransformersClapEncoder) and clap.dim == 24 and clap.rate == 48_000
    wavs = [_tone(440, 1.0), _tone(1200, 0.6)]
    a16 = clap.audio(wavs, sr=16_000)
    assert a16.shape == (2, 24) and np.isfinite(a16).all()
    np.testing.assert_allclose(np.linalg.norm(a16, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(a16, clap.audio(wavs, sr=16_000))  # deterministic
    a48 = clap.audio([E.resample(w, 16_000, 48_000) for w in wavs], sr=48_000)
    np.testing.assert_allclose(a16, a48, atol=1e-5)  # resampled inside, to the processor's rate
    # the model path with features fed directly: same numbers as the encoder computes
    fe = clap.processor.feature_extractor
    feats = fe([E.resample(wavs[0], 16_000, 48_000)], sampling_rate=48_000, return_tensors="pt", truncation="rand_trunc")
    with torch.inference_mode():
        direct = model.get_audio_features(input_features=feats["input_features"]).pooler_output
    np.testing.assert_allclose(a16[:1], direct.numpy(), atol=1e-5)
    txt = clap.text(["a dog barks", "a bell rings twice " * 30])  # the long one is truncated at 77 tokens
    assert txt.shape == (2, 24)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)


def test_clap_directory_with_a_foreign_checkpoint_names_the_params_key(clap_dir, tmp_path):
    import shutil

    from genbuild.hf_loading import WeightsLayoutError

    d, _ = clap_dir
    bad = tmp_path / "clap"
    shutil.copytree(d, bad)
    from safetensors.torch import load_file, save_file

    sd = load_file(bad / "model.safetensors")
    sd.pop(next(k for k in sd if k.startswith("audio_projection")))
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsLayoutError, match=r"features\.clap\.path.*missing"):
        E.load_clap(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no config.json"):
        E.load_clap(tmp_path / "empty")
