"""rembg ONNX files through the products stage's loader (``pvtt.data.products.RembgMatting``), one per session
the project lists (``REMBG_SESSIONS``).

The published files (danielgatis/rembg releases: ``u2net.onnx``, ``isnet-general-use.onnx``,
``BiRefNet-general-epoch_244.onnx`` ...) are ONNX graphs with one float32 NCHW image input of a *static* size
and the matte first among the outputs; rembg feeds the input by the name it reads from the file
(``get_inputs()[0].name``) after resizing to the size its session hard-codes (rembg 2.0.86 ``sessions/*.py``:
320 px for the U^2-Net family and silueta, 1024 px for IS-Net, BiRefNet and BRIA) and reads
``outputs[0][:, 0]``. The fixtures are tiny static-shape graphs with those signatures (U^2-Net's export names
its input ``input.1`` and has seven side outputs d0..d6); a session whose size disagreed with the file's would
fail onnxruntime's shape check here. ``tests/pvtt/data/test_products_rembg.py`` checks the matte geometry.
"""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rembg")
pytest.importorskip("onnxruntime")

from pvtt.data import products as P  # noqa: E402

pytestmark = pytest.mark.slow

torch.set_num_threads(2)

U2NET_FAMILY = {"u2net", "u2netp", "u2net_human_seg", "silueta"}     # 320 px, 7 sigmoid outputs


class _Matte(torch.nn.Module):
    def __init__(self, outputs: int):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
        self.outputs = outputs

    def forward(self, x):
        y = torch.sigmoid(self.conv(x))
        return y if self.outputs == 1 else tuple(y * (1.0 - 0.01 * i) for i in range(self.outputs))


def _export(path, size: int, outputs: int, input_name: str):
    names = [f"d{i}" for i in range(outputs)] if outputs > 1 else ["output"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Matte(outputs).eval(), torch.zeros(1, 3, size, size), str(path), dynamo=False,
                          opset_version=17, input_names=[input_name], output_names=names)   # static: no dynamic_axes


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rembg")
    _export(d / "u2net-like.onnx", 320, 7, "input.1")
    _export(d / "large-like.onnx", 1024, 1, "input_image")
    return d


@pytest.mark.parametrize("session", sorted(P.REMBG_SESSIONS))
def test_listed_session_runs_its_published_input_size(session, onnx_files, tmp_path):
    src = onnx_files / ("u2net-like.onnx" if session in U2NET_FAMILY else "large-like.onnx")
    model = tmp_path / f"{session}.onnx"
    shutil.copyfile(src, model)
    be = P.get_backend(P.validate_params({"products": {"backend": "rembg", "rembg_model": str(model)}}))
    inp = be._session.inner_session.get_inputs()[0]
    assert inp.shape == [1, 3, *(2 * [320 if session in U2NET_FAMILY else 1024])] and inp.type == "tensor(float)"
    rgb = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    alpha = be.matte(rgb)
    assert alpha.shape == (40, 56) and alpha.dtype == np.uint8


def test_wrong_static_size_fails_loudly(onnx_files, tmp_path):
    """A 1024 px file named as a 320 px session is refused by onnxruntime at the first image, not mis-resized."""
    model = tmp_path / "u2net.onnx"
    shutil.copyfile(onnx_files / "large-like.onnx", model)
    be = P.get_backend(P.validate_params({"products": {"backend": "rembg", "rembg_model": str(model)}}))
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        be.matte(np.zeros((20, 20, 3), np.uint8))
