"""VGGish / FAD (genbuild.metrics.vggish): the published layout, the front end and the distance.

The published network (72M parameters) is only built on the meta device, to check its tensor names
and shapes against torchvggish's ``vggish-10086976.pth``; the FAD properties are checked with a narrow
random instance of the same layout, saved and loaded strictly like the real file.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from genbuild.metrics import vggish as V
from genbuild.metrics.learned import Unavailable
from genbuild.weights import WeightsError

torch.set_num_threads(2)

# torchvggish's vggish-10086976.pth: (name, shape)
PUBLISHED = {
    "features.0.weight": (64, 1, 3, 3), "features.3.weight": (128, 64, 3, 3), "features.6.weight": (256, 128, 3, 3),
    "features.8.weight": (256, 256, 3, 3), "features.11.weight": (512, 256, 3, 3), "features.13.weight": (512, 512, 3, 3),
    "embeddings.0.weight": (4096, 12288), "embeddings.2.weight": (4096, 4096), "embeddings.4.weight": (128, 4096),
}
NARROW = dict(channels=(4, 4, 8, 8, 8, 8), hidden=32, embedding=16)
SR = 16_000


def _noise(seed: int, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def _tones(seed: int, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return sum(0.2 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) for _ in range(2)).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = V.VGGish(**NARROW)
    path = tmp_path_factory.mktemp("vggish") / "vggish-narrow.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_the_default_network_has_torchvggish_published_layout():
    with torch.device("meta"):
        sd = V.VGGish().state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items() if k.endswith(".weight")} == PUBLISHED
    assert {k for k in sd if k.endswith(".bias")} == {k.replace("weight", "bias") for k in PUBLISHED}


def test_front_end_gives_vggish_examples():
    ex = V.waveform_to_examples(_noise(0, 3.0), SR)
    assert ex.shape == (3, 96, 64) and ex.dtype == np.float32 and np.isfinite(ex).all()
    assert V.waveform_to_examples(_noise(0, 0.2), SR).shape == (1, 96, 64)  # padded to one example
    assert V.waveform_to_examples(_noise(0, 3.0, 48_000), 48_000).shape == (3, 96, 64)  # resampled
    # a 1 kHz tone puts its energy in the mel band holding 1 kHz
    t = np.arange(SR * 2) / SR
    band = V.waveform_to_examples(np.sin(2 * np.pi * 1000 * t), SR).mean(axis=(0, 1)).argmax()
    m = V.mel_matrix()
    assert m[round(1000 / (SR / 2) * 256), band] > 0.5
    assert np.allclose(V.waveform_to_examples(np.zeros(SR), SR), np.log(0.01))


def test_published_layout_file_loads_strict_and_fad_behaves(weights):
    path, net = weights
    fad = V.load_fad(path)
    x = torch.from_numpy(V.waveform_to_examples(_noise(1), SR))[:, None]
    with torch.inference_mode():
        np.testing.assert_allclose(fad.net(x).numpy(), net.eval()(x).numpy(), atol=1e-6)
    real = [_noise(s) for s in range(4)]
    same_kind = [_noise(s) for s in range(10, 14)]
    other = [_tones(s) for s in range(4)]
    assert fad.score(real, real, SR) == pytest.approx(0.0, abs=1e-6)
    near, far = fad.score(real, same_kind, SR), fad.score(real, other, SR)
    assert far > 5 * near and far > 0
    assert "VGGish" in fad.implementation and path.name in fad.implementation


def test_final_relu_and_pca_postprocessing(weights, tmp_path):
    path, _ = weights
    raw = V.load_fad(path).embed(_noise(2), SR)
    assert (raw < 0).any()                      # Google's embedding layer is linear
    assert (V.load_fad(path, final_relu=True).embed(_noise(2), SR) >= 0).all()  # torchvggish's extra ReLU
    rng = np.random.default_rng(0)
    pca = {"pca_eigen_vectors": rng.standard_normal((16, 16)), "pca_means": rng.standard_normal(16)}
    torch.save(pca, tmp_path / "pca.pth")        # numpy arrays, as torchvggish's PCA file holds
    np.savez(tmp_path / "pca.npz", **pca)         # Google's format
    buf = io.BytesIO()                            # as pickled under numpy 1 (torchvggish's file is from 2019)
    torch.save(pca, buf, _use_new_zipfile_serialization=False)
    (tmp_path / "pca_np1.pth").write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    for f in ("pca.pth", "pca.npz", "pca_np1.pth"):
        post = V.load_fad(path, pca=tmp_path / f).embed(_noise(2), SR)
        expect = np.clip((pca["pca_eigen_vectors"] @ (raw.T - pca["pca_means"][:, None])).T, -2, 2)
        np.testing.assert_allclose(post, np.round((expect + 2) * 255 / 4), atol=1.0)
        assert post.min() >= 0 and post.max() <= 255


def test_missing_or_wrong_files(weights, tmp_path):
    path, _ = weights
    with pytest.raises(Unavailable, match=r"models/vggish/vggish-10086976\.pth"):
        V.load_fad(tmp_path / "models/vggish/vggish-10086976.pth")
    with pytest.raises(Unavailable, match=r"nope\.pth"):
        V.load_fad(path, pca=tmp_path / "nope.pth")
    with pytest.raises(Unavailable, match="pproc"):
        V.load_fad(path, pca=True)
    torch.save({"features.0.weight": torch.zeros(4, 1, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"bad\.pth"):
        V.load_fad(tmp_path / "bad.pth")
