"""FVD on the features the reference FVD uses, and MUSIQ read as pyiqa reads its published files.

- FVD (Unterthiner et al., 2018, google-research/frechet_video_distance) takes the Kinetics-400
  I3D's 400-d logits averaged over time (the TF-Hub ``i3d-kinetics-400`` module's output:
  Mixed_5c, 2x7x7 VALID average pool, 1x1x1 logits, mean over time), not the 1024-d Mixed_5c
  pool; published FVDs are only comparable on those.
- MUSIQ: pyiqa loads ``musiq_*_ckpt-*.pth`` with ``torch.load(weights_only=False)``, strips
  ``module.`` and loads strictly (``archs.arch_util.load_pretrained_network``); the published files
  are a bare ``MUSIQ().state_dict()`` (``scripts/convert_musiq_to_pth.py``). Tiny random nets.
"""
from __future__ import annotations

from collections import OrderedDict, defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genbuild.metrics import learned as Q
from genbuild.metrics.i3d import InceptionI3d

TINY_MUSIQ = dict(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64, longer_side_lengths=[32, 48])


@pytest.fixture(scope="module")
def i3d():
    torch.manual_seed(0)
    return InceptionI3d().eval()


def _videos(n: int, frames: int = 16, size: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_fvd_features_are_the_400d_kinetics_logits(i3d):
    videos = _videos(2)
    feats = Q.Fvd(i3d).features(videos)
    assert feats.shape == (2, 400) and np.isfinite(feats).all()
    # At the reference setting (16 frames, 224 px) Mixed_5c is 2x7x7: the 2x7x7 VALID pool has one
    # position, so the logits are the logits layer applied to the mean of Mixed_5c.
    x = F.interpolate(torch.from_numpy(videos[0]).permute(0, 3, 1, 2).float() / 255, size=(224, 224), mode="bilinear",
                      antialias=True, align_corners=False)
    clip = (x * 2 - 1).permute(1, 0, 2, 3)[None]
    with torch.no_grad():
        m5c = i3d.mixed_5c(clip)
        assert m5c.shape[2:] == (2, 7, 7)
        want = F.conv3d(m5c.mean(dim=(2, 3, 4), keepdim=True), i3d.logits.conv3d.weight, i3d.logits.conv3d.bias).flatten(1)
    np.testing.assert_allclose(feats[0], want[0].double().numpy(), rtol=1e-4, atol=1e-5)


def test_fvd_logits_average_over_time_windows_for_longer_clips(i3d):
    """24 frames: Mixed_5c has 3 time steps, the 2-frame window 2 positions; their logits are averaged
    (112 px keeps it cheap: the window shrinks to Mixed_5c's 4x4)."""
    clip = torch.rand(1, 3, 24, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        m5c = i3d.mixed_5c(clip)
        pooled = F.avg_pool3d(m5c, (2, 4, 4), stride=1)
        assert m5c.shape[2:] == (3, 4, 4) and pooled.shape[2:] == (2, 1, 1)
        want = F.conv3d(pooled, i3d.logits.conv3d.weight, i3d.logits.conv3d.bias).mean(dim=(2, 3, 4))
        assert torch.allclose(i3d(clip), want, atol=1e-5)
        assert not torch.allclose(i3d(clip), i3d.logits(i3d.features(clip)[:, :, None, None, None]).flatten(1), atol=1e-4)


@pytest.fixture(scope="module")
def musiq_net():
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(0)
    return MUSIQ(pretrained=False, **TINY_MUSIQ).eval()


def _pyiqa_loaded(path, num_class: int = 1):
    """The reference: pyiqa's own loader into a fresh net."""
    from pyiqa.archs.arch_util import load_pretrained_network
    from pyiqa.archs.musiq_arch import MUSIQ

    net = MUSIQ(pretrained=False, num_class=num_class, **TINY_MUSIQ).eval()
    load_pretrained_network(net, str(path), strict=True)
    return net


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("layout", ["published", "dataparallel", "unpickled_by_pyiqa_only"])
def test_musiq_loads_what_pyiqa_loads(tmp_path, musiq_net, layout):
    """published: the bare OrderedDict pyiqa's convert script saves; dataparallel: ``module.``
    prefixes (pyiqa strips them); unpickled_by_pyiqa_only: a container the safe unpickler refuses
    (a defaultdict), which pyiqa's ``weights_only=False`` reads, so it must load here too."""
    sd = OrderedDict(musiq_net.state_dict())
    if layout == "dataparallel":
        sd = OrderedDict((f"module.{k}", v) for k, v in sd.items())
    if layout == "unpickled_by_pyiqa_only":
        sd = defaultdict(list, sd)
    path = tmp_path / "musiq_koniq_ckpt-e95806b9.pth"
    torch.save(sd, path)
    reference = _pyiqa_loaded(path)
    metric = Q.load_metric("musiq", {"weights": path.name, "arch": TINY_MUSIQ}, tmp_path)
    assert _same(metric.net, reference) and _same(metric.net, musiq_net)
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    assert metric.score(frames, frames, None, None) == pytest.approx(Q.Musiq(musiq_net).score(frames, frames, None, None))


def test_musiq_training_checkpoint_wrapped_in_params(tmp_path, musiq_net):
    """pyiqa's own training checkpoints (BasicSR) hold the weights under 'params'."""
    torch.save({"params": musiq_net.state_dict()}, tmp_path / "net_g_latest.pth")
    assert _same(Q.load_metric("musiq", {"weights": "net_g_latest.pth", "arch": TINY_MUSIQ}, tmp_path).net, musiq_net)


def test_musiq_ava_layout_has_a_ten_way_head(tmp_path):
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(1)
    ava = MUSIQ(pretrained=False, num_class=10, **TINY_MUSIQ).eval()
    torch.save(ava.state_dict(), tmp_path / "musiq_ava_ckpt.pth")
    metric = Q.load_metric("musiq", {"weights": "musiq_ava_ckpt.pth", "arch": TINY_MUSIQ}, tmp_path)
    assert "num_class=10" in metric.implementation and _same(metric.net, ava)
