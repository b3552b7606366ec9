"""Learned metrics (genbuild.metrics.learned) on tiny, randomly initialised instances of the real architectures.

Random weights cannot make a metric *meaningful*, but they do exercise the real classes, the
preprocessing and the loading paths, and they fix the properties that hold for any weights:
perfect score on identical inputs, monotone response to a degradation that the embedding sees,
determinism, and "unavailable, naming the path" when weights are missing.
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from genbuild.metrics import learned as Q  # noqa: E402
from genbuild.metrics.i3d import InceptionI3d  # noqa: E402

torch.set_num_threads(2)

TINY_CLIP = dict(embed_dim=32,
                 vision_cfg=dict(layers=2, width=64, head_width=32, patch_size=8, image_size=64),
                 text_cfg=dict(context_length=8, vocab_size=100, width=32, heads=2, layers=1))
TINY_DINO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 image_size=56, patch_size=14)
# Small scales too: MUSIQ's fixed ResNet stem runs on every 32 px patch of every scale, and the
# default 224/384 px scales upsample a 64 px test frame into ~200 patches (~1 s per 4 frames).
TINY_MUSIQ = dict(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64, longer_side_lengths=[32, 48])
ALL = {"clip_i", "dino_i", "lpips", "fvd", "musiq"}


# ------------------------------------------------------------------------------------------ data
def _image(seed: int, size: int = 64) -> np.ndarray:
    """A smooth coloured blob on white: product-like, with structure at several scales."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.ones((size, size, 3))
    for _ in range(3):
        cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.1, 0.3)]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        img[inside] = rng.uniform(0, 1, 3) * (0.6 + 0.4 * np.sin(8 * xx[inside, None] + seed))
    return (img * 255).round().astype(np.uint8)


def _video(seed: int, frames: int = 4) -> np.ndarray:
    """The image drifting one pixel per frame."""
    return np.stack([np.roll(_image(seed), i, axis=1) for i in range(frames)])


def _noisy(x: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, x.shape)
    return np.clip(x.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


REF = _image(0)
STILL = np.stack([REF] * 4)  # the reference shown as a video
MASK = np.ones(STILL.shape[:3], bool)


# ------------------------------------------------------------------------------------------ nets
@pytest.fixture(scope="module")
def clip_model():
    import open_clip

    torch.manual_seed(0)
    return open_clip.CLIP(**TINY_CLIP).eval()


@pytest.fixture(scope="module")
def dino_model():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    return Dinov2Model(Dinov2Config(**TINY_DINO)).eval()


@pytest.fixture(scope="module")
def lpips_net():
    import lpips

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)


@pytest.fixture(scope="module")
def i3d():
    torch.manual_seed(0)
    return InceptionI3d().eval()


@pytest.fixture(scope="module")
def musiq_net():
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(0)
    return MUSIQ(pretrained=False, **TINY_MUSIQ).eval()


# ------------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("kind", ["clip", "dino"])
def test_embedding_similarity_perfect_then_lower(kind, clip_model, dino_model):
    metric = Q.ClipI(clip_model, 64) if kind == "clip" else Q.DinoI(dino_model, resize=56, crop=56)
    assert metric.higher_is_better
    same = metric.score(STILL, STILL, REF, MASK)
    assert same == pytest.approx(1.0, abs=1e-5)
    # Random-init embeddings are all close (cos ~0.99), so margins are small but far above float error.
    assert metric.score(_noisy(STILL, 80), STILL, REF, MASK) < same - 1e-4
    assert metric.score(_video(7), STILL, REF, MASK) < same - 1e-3


def test_lpips_zero_then_monotone_in_noise(lpips_net):
    metric, x = Q.Lpips(lpips_net), _video(3)
    assert not metric.higher_is_better
    assert metric.score(x, x, REF, MASK) == pytest.approx(0.0, abs=1e-7)
    slight = metric.score(_noisy(x, 4), x, REF, MASK)
    heavy = metric.score(_noisy(x, 40), x, REF, MASK)
    assert heavy > slight > 0


def test_musiq_runs_and_is_deterministic(musiq_net):
    # Random weights give no direction (noise could score higher than clean); only a trained
    # checkpoint (e.g. KonIQ) makes MUSIQ rank quality. Here: real class, finite, deterministic,
    # no-reference (truth is ignored).
    metric, x = Q.Musiq(musiq_net), _video(4)
    a = metric.score(x, x, REF, MASK)
    assert np.isfinite(a)
    assert metric.score(x.copy(), _video(5), REF, MASK) == a


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a, shift = rng.normal(size=(20, 6)), rng.normal(size=6)
    assert Q.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert Q.frechet_distance(a, a + shift) == pytest.approx(float((shift ** 2).sum()), rel=1e-6)
    with pytest.raises(ValueError):
        Q.frechet_distance(a[:1], a)


def test_fvd_zero_for_same_set_larger_for_noise(i3d):
    # 112 px keeps this test ~4x cheaper on CPU; the default 224 px runs in the loading test below.
    metric = Q.Fvd(i3d, size=112)
    videos = [_video(s, frames=8) for s in range(4)]  # 8 frames of 64x64, upsampled inside
    same = metric.score_set(videos, videos)
    noisy = metric.score_set([_noisy(v, 60) for v in videos], videos)
    assert same == pytest.approx(0.0, abs=1e-6 * max(noisy, 1.0))
    assert noisy > 100 * max(same, 1e-12)


def test_i3d_checkpoint_layout(i3d):
    sd = i3d.state_dict()
    shapes = {"Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7), "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
              "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1), "Mixed_4e.b1b.conv3d.weight": (288, 144, 3, 3, 3),
              "Mixed_5c.b2a.conv3d.weight": (48, 832, 1, 1, 1), "Mixed_5c.b3b.bn.running_var": (128,),
              "logits.conv3d.weight": (400, 1024, 1, 1, 1), "logits.conv3d.bias": (400,)}
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.endswith("conv3d.bias") for k in sd if not k.startswith("logits"))
    bn = i3d.Mixed_4b.b1b.bn
    assert (bn.eps, bn.momentum) == (0.001, 0.01)
    # Checkpoints saved by old PyTorch have no num_batches_tracked; strict loading must accept that.
    legacy = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    InceptionI3d().load_state_dict(legacy, strict=True)


# ------------------------------------------------------------------------------------------ loading
def test_nothing_configured_means_all_unavailable():
    for cfg in (None, {}, {name: None for name in ALL}):
        metrics, why = Q.load_metrics(cfg)
        assert metrics == {} and set(why) == ALL
        assert all("not configured" in r for r in why.values())


def test_missing_weights_are_named(tmp_path):
    cfg = {"clip_i": {"weights": "m/clip.bin", "model": "ViT-H-14"}, "dino_i": {"weights": "m/dinov2"},
           "lpips": {"weights": "m/alex.pth", "net": "alex"}, "fvd": {"weights": "m/i3d.pt"},
           "musiq": {"weights": "m/musiq.pth"}}
    metrics, why = Q.load_metrics(cfg, tmp_path)
    assert metrics == {} and set(why) == ALL
    for name, entry in cfg.items():
        assert str(tmp_path / entry["weights"]) in why[name]
    with pytest.raises(ValueError, match="unknown"):
        Q.load_metrics({"clip-i": {"weights": "x"}}, tmp_path)


def test_real_loading_paths_score_like_in_memory(tmp_path, clip_model, dino_model, lpips_net, i3d, musiq_net):
    torch.save(clip_model.state_dict(), tmp_path / "clip.bin")
    dino_model.save_pretrained(tmp_path / "dinov2")
    # LPIPS backbone in torchvision's AlexNet layout (features.* plus an unused classifier).
    backbone = {f"features.{k.split('.', 1)[1]}": v for k, v in lpips_net.net.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 4)
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(i3d.state_dict(), tmp_path / "rgb_imagenet.pt")
    torch.save(musiq_net.state_dict(), tmp_path / "musiq.pth")  # as pyiqa publishes it (scripts/convert_musiq_to_pth.py)
    cfg = {"clip_i": {"weights": "clip.bin", "model_config": TINY_CLIP},
           "dino_i": {"weights": "dinov2", "resize": 56, "crop": 56},
           "lpips": {"weights": "alexnet.pth", "net": "alex"},
           "fvd": {"weights": "rgb_imagenet.pt"},
           "musiq": {"weights": "musiq.pth", "arch": TINY_MUSIQ}}
    metrics, why = Q.load_metrics(cfg, tmp_path)
    assert why == {} and set(metrics) == ALL
    for m in metrics.values():
        assert m.implementation and isinstance(m.higher_is_better, bool)

    pred, truth = _noisy(_video(1), 30), _video(1)
    memory = {"clip_i": Q.ClipI(clip_model, 64), "dino_i": Q.DinoI(dino_model, resize=56, crop=56),
              "lpips": Q.Lpips(lpips_net), "musiq": Q.Musiq(musiq_net)}
    for name, ref_metric in memory.items():
        assert metrics[name].score(pred, truth, REF, MASK) == pytest.approx(
            ref_metric.score(pred, truth, REF, MASK), rel=1e-5, abs=1e-6), name
    videos = [_video(s, frames=8) for s in range(2)]  # 8 frames of 64x64 -> 224 px, as in the pipeline
    loaded = metrics["fvd"].features(videos)
    assert loaded.shape == (2, 400) and np.isfinite(loaded).all()  # the Kinetics-400 logits, as the reference FVD
    assert "400-d logits averaged over time" in metrics["fvd"].implementation
    np.testing.assert_allclose(loaded, Q.Fvd(i3d).features(videos), rtol=1e-5, atol=1e-7)
