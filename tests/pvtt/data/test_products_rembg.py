"""Products stage with the rembg backend, on tiny random ONNX models with the real I/O contracts.

rembg's U^2-Net session (rembg/sessions/u2net.py + base.py) resizes the image to 320x320 (Lanczos),
divides by its maximum, normalises with ImageNet mean/std, feeds the model's first input (U^2-Net's
export calls it ``input.1``, (1, 3, 320, 320) float32), reads output 0 ``[:, 0]`` (``d0``: the fused
sigmoid saliency map; U^2-Net returns d0..d6), min-max normalises it and resizes it back. BiRefNet
sessions do the same at 1024x1024 with a sigmoid applied by rembg to output 0 (logits).

The tiny models here are a random 2-layer conv net whose (small) output is added to a fixed centred
disc of large logits, so the matte is a deterministic centred ellipse in the source image whatever
the random weights: the cut-out's size is known. rembg must not touch the network: pooch.retrieve
and the stock sessions' download_models are replaced by functions that fail the test.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genbuild.io.jsonio import read_jsonl
from genbuild.io.video import read_image
from pvtt.data import products as P

pytest.importorskip("rembg")
pytest.importorskip("onnxruntime")
torch.set_num_threads(2)

H, W = 120, 160          # source image (not square: the 320/1024 px square is stretched back)
RADIUS = 0.3             # disc radius as a fraction of the model's square input
PAD = 4


class TinySaliency(torch.nn.Module):
    """Random conv features (scaled down) + a fixed centred disc of logits +-12.

    ``sigmoid_out``: U^2-Net style, 7 outputs d0..d6 of sigmoid maps; else BiRefNet style, one
    logits map.
    """

    def __init__(self, size: int, sigmoid_out: bool):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(4, 1, 3, padding=1))
        yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        r = torch.sqrt((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / size
        self.register_buffer("disc", (12.0 * torch.sign(RADIUS - r))[None, None])
        self.sigmoid_out = sigmoid_out

    def forward(self, x):
        logits = self.disc + 0.05 * torch.tanh(self.body(x))
        if not self.sigmoid_out:
            return logits
        d0 = torch.sigmoid(logits)
        return (d0,) + tuple(torch.sigmoid(logits * (1.0 - 0.01 * i)) for i in range(1, 7))


def export(path: Path, size: int, sigmoid_out: bool) -> Path:
    model = TinySaliency(size, sigmoid_out).eval()
    outputs = [f"d{i}" for i in range(7)] if sigmoid_out else ["output"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(path), dynamo=False, opset_version=17,
                          input_names=["input.1"], output_names=outputs)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("rembg_models")
    return {"u2net": export(d / "u2net" / "u2net.onnx", 320, True),
            "birefnet-general": export(d / "birefnet" / "birefnet-general.onnx", 1024, False)}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rembg_prod")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(d / "photo.png")
    m = {"videos": [], "products": [{"id": "prod00", "category": "bottle", "name": "Bottle",
                                     "caption": "a bottle", "views": [{"view": "view0", "path": "photo.png"}]}]}
    (d / "manifest.json").write_text(json.dumps(m))
    return d / "manifest.json"


@pytest.fixture
def offline(monkeypatch):
    """Any attempt by rembg to fetch or locate a model through its own code fails the test."""
    import pooch
    from rembg.sessions import sessions

    def boom(*a, **k):
        raise AssertionError("rembg tried to download or look up a model")

    monkeypatch.setattr(pooch, "retrieve", boom)
    for cls in sessions.values():
        monkeypatch.setattr(cls, "download_models", classmethod(boom), raising=False)
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.setenv("REMBG_HOME", "/nonexistent/rembg-home")


def _params(model: Path) -> dict:
    return {"products": {"backend": "rembg", "rembg_model": str(model), "pad": PAD}}


@pytest.mark.parametrize("session", ["u2net", "birefnet-general"])
def test_rembg_cutout_from_local_onnx(session, models, manifest, tmp_path, offline):
    out = tmp_path / "prod00"
    res = P.run(manifest, "prod00", out, _params(models[session]))
    assert "U2NET_HOME" not in os.environ                     # nothing set behind the caller's back
    assert res["status"] == "ok" and res["backend"] == "rembg" and read_jsonl(out / "rejects.jsonl") == []
    (v,) = res["views"]
    rgba = read_image(out / v["path"], "RGBA")
    assert rgba.shape == (v["height"], v["width"], 4)
    # the disc of radius 0.3 (of the square input) becomes an ellipse of 0.6 W x 0.6 H in the source
    a = rgba[..., 3]
    ys, xs = np.nonzero(a > 127)
    assert abs(xs.max() + 1 - xs.min() - 2 * RADIUS * W) <= 2 and abs(ys.max() + 1 - ys.min() - 2 * RADIUS * H) <= 2
    # the cut-out is the box of every non-zero alpha (Lanczos ringing adds faint pixels up to ~3 px out) + PAD
    assert 0 <= v["width"] - (2 * RADIUS * W + 2 * PAD) <= 8, v
    assert 0 <= v["height"] - (2 * RADIUS * H + 2 * PAD) <= 8, v
    x0, y0, x1, y1 = v["src_box"]
    assert abs((x0 + x1) / 2 - W / 2) <= 1.5 and abs((y0 + y1) / 2 - H / 2) <= 1.5
    assert a[v["height"] // 2, v["width"] // 2] >= 250 and a[0, 0] == 0 and a[-1, -1] == 0
    assert (a[:PAD] == 0).all() and (a[:, :PAD] == 0).all()      # transparent padding
    inside = (a > 127).mean()
    assert abs(inside - np.pi * (RADIUS * W) * (RADIUS * H) / (v["width"] * v["height"])) < 0.05
    src = np.asarray(Image.open(manifest.parent / "photo.png").convert("RGB"))
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    np.testing.assert_array_equal(rgba[cy - y0, cx - x0, :3], src[cy, cx])   # colours are the source's
    # deterministic
    again = P.run(manifest, "prod00", tmp_path / "again", _params(models[session]))
    assert again == res and (tmp_path / "again" / v["path"]).read_bytes() == (out / v["path"]).read_bytes()


def test_session_follows_file_name(models, offline, tmp_path):
    b = P.get_backend(P.validate_params(_params(models["birefnet-general"])))
    assert b.session_name == "birefnet-general"
    assert type(b._session).__mro__[1].__name__ == "BiRefNetSessionGeneral"
    u = P.get_backend(P.validate_params(_params(models["u2net"])))
    assert type(u._session).__mro__[1].__name__ == "U2netSession"
    assert u._session.inner_session.get_inputs()[0].name == "input.1"
    # same bytes under a name that is not a rembg session: refused, with the accepted names listed
    odd = tmp_path / "my-matting.onnx"
    odd.write_bytes(models["u2net"].read_bytes())
    with pytest.raises(P.BackendError, match=r"u2net\.onnx.*birefnet-general\.onnx") as e:
        P.get_backend(P.validate_params(_params(odd)))
    assert str(odd) in str(e.value)
    # a file named like a session that onnxruntime cannot load
    bad = tmp_path / "u2netp.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(P.BackendError, match="cannot load"):
        P.get_backend(P.validate_params(_params(bad)))


def test_every_listed_session_exists_in_rembg():
    from rembg.sessions import sessions

    assert set(P.REMBG_SESSIONS) <= set(sessions)
    assert all(sessions[n].is_local() and not sessions[n].requires_credentials() for n in P.REMBG_SESSIONS)
