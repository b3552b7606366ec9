"""Learned-metric weight layouts through ``genbuild.metrics.learned``'s loaders (``load_metric``).

- open_clip (CLIP-I): ``open_clip_pytorch_model.bin`` of the laion ViT-H-14 release is a plain ``torch.save``d
  state dict of ``open_clip.CLIP`` (mlfoundations/open_clip ``model.py``/``transformer.py``, open_clip_torch 3.3.0);
  the fixture is that class's own state dict at a reduced width with ViT-H-14's structure (head width 80,
  patch 14, text tower with a causal mask, ``text_projection``, ``logit_scale``). Both loader paths run: a named
  architecture (``model:``; a tiny config registered with open_clip under its own name) and ``model_config``.
- DINOv2 (DINO-I): a facebook/dinov2-* transformers directory (``config.json`` + ``model.safetensors``, fp32) with
  the published names (``encoder.layer.N.attention.attention.query.weight`` ...), from
  :func:`layouts_helpers.hf_dinov2_shapes` -- not from the installed transformers, whose class renamed them.
- LPIPS backbone: torchvision's published ImageNet files (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``,
  ``squeezenet1_1-b8a52dc0.pth``) are the state dicts of torchvision's ``alexnet``/``vgg16``/``squeezenet1_1``
  (pytorch/vision ``models/*.py``, torchvision 0.29.2); the fixtures are those classes' state dicts. The
  ``classifier.*`` tensors, which the loader drops, keep their names but are stored 4x4 (VGG16's are 0.5 GB).
"""
from __future__ import annotations

import json
import os
import re
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import layouts_helpers as L  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from genbuild.metrics import learned as Q  # noqa: E402

pytestmark = pytest.mark.slow

torch.set_num_threads(2)

REF = np.full((64, 64, 3), 255, np.uint8)
REF[16:48, 20:44] = (200, 40, 40)
VIDEO = np.stack([np.roll(REF, i, axis=1) for i in range(2)])
MASK = np.ones(VIDEO.shape[:3], bool)

# ViT-H-14's structure (open_clip model_configs/ViT-H-14.json) at a reduced width: head width 80, patch 14.
TINY_VIT_H = {"embed_dim": 32,
              "vision_cfg": {"image_size": 56, "layers": 2, "width": 160, "head_width": 80, "patch_size": 14},
              "text_cfg": {"context_length": 77, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}


def _depthless(keys) -> set[str]:
    return {re.sub(r"\.\d+\.", ".N.", k) for k in keys}


# ------------------------------------------------------------------------------------------ open_clip
def test_open_clip_tiny_config_has_vit_h_14s_key_kinds():
    import open_clip

    with torch.device("meta"):
        full = open_clip.CLIP(**open_clip.get_model_config("ViT-H-14")).state_dict()
        tiny = open_clip.CLIP(**TINY_VIT_H).state_dict()
    assert _depthless(full) == _depthless(tiny)
    assert {"logit_scale", "text_projection", "positional_embedding", "visual.proj"} <= set(full)


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("open_clip")
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_VIT_H).eval()
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    (d / "cfg").mkdir()
    (d / "cfg" / "ViT-H-14-layout-test.json").write_text(json.dumps(TINY_VIT_H))
    open_clip.add_model_config(d / "cfg")
    return d, model


@pytest.mark.parametrize("entry", [{"model": "ViT-H-14-layout-test"}, {"model_config": TINY_VIT_H}], ids=["named", "config"])
def test_open_clip_checkpoint_loads_strictly_and_scores(entry, clip_files):
    d, model = clip_files
    metric = Q.load_metric("clip_i", {"weights": "open_clip_pytorch_model.bin", **entry}, d)
    own = metric.net.state_dict()
    ref = model.state_dict()
    assert set(own) == set(ref) and all(torch.equal(own[k], ref[k]) for k in ref)
    assert np.isfinite(metric.score(VIDEO, VIDEO, REF, MASK))


@pytest.mark.parametrize("entry", [{"model": "ViT-H-14-layout-test"}, {"model_config": TINY_VIT_H}], ids=["named", "config"])
def test_open_clip_renamed_key_is_refused(entry, clip_files, tmp_path):
    d, model = clip_files
    torch.save(L.rename_one(model.state_dict(), "visual.ln_post.weight", "visual.ln_final.weight"), tmp_path / "c.bin")
    with pytest.raises(RuntimeError, match=r"visual\.ln_post\.weight"):
        Q.load_metric("clip_i", {"weights": "c.bin", **entry}, tmp_path)


# ------------------------------------------------------------------------------------------ DINOv2
DINO = dict(hidden=32, layers=2, intermediate=64, image_size=56, patch=14)


def test_dinov2_published_names_match_the_installed_class_after_its_renames():
    """Two sources: the generator (published names) and transformers' own legacy renaming of its current class."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=56, patch_size=14)
    with torch.device("meta"):
        now = L.shapes_of(Dinov2Model(cfg).state_dict())
    renames = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
               "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}
    legacy = {}
    for k, v in now.items():
        for a, b in renames.items():
            k = k.replace(a, b)
        legacy[k] = v
    assert legacy == L.hf_dinov2_shapes(**DINO)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dinov2") / "dinov2-base"
    state = L.write_hf_dinov2(d, **DINO)
    return d, state


def test_dinov2_directory_loads_and_scores(dino_dir):
    d, state = dino_dir
    metric = Q.load_metric("dino_i", {"weights": d.name, "resize": 56, "crop": 56}, d.parent)
    own = metric.net.state_dict()
    assert torch.equal(own["encoder.layer.1.attention.q_proj.weight"], state["encoder.layer.1.attention.attention.query.weight"])
    assert torch.equal(own["encoder.layer.0.attention.o_proj.weight"], state["encoder.layer.0.attention.output.dense.weight"])
    assert torch.equal(own["embeddings.position_embeddings"], state["embeddings.position_embeddings"])
    assert np.isfinite(metric.score(VIDEO, VIDEO, REF, MASK))


def test_dinov2_renamed_key_is_refused(dino_dir, tmp_path):
    d, state = dino_dir
    L.write_hf_dinov2(tmp_path / "bad", state=L.rename_one(state, "encoder.layer.1.mlp.fc2.weight",
                                                           "encoder.layer.1.mlp.fc_2.weight"), **DINO)
    with pytest.raises(Exception, match=r"mlp\.fc2"):
        Q.load_metric("dino_i", {"weights": "bad", "resize": 56, "crop": 56}, tmp_path)


# ------------------------------------------------------------------------------------------ LPIPS backbones
def _torchvision_backbone(net: str) -> dict:
    import torchvision.models as tvm

    build = {"alex": tvm.alexnet, "vgg": tvm.vgg16, "squeeze": tvm.squeezenet1_1}[net]
    with torch.device("meta"):
        names = L.shapes_of(build(weights=None).state_dict())
    keep = {k: s for k, s in names.items() if k.startswith("features.")}
    state = L.materialize(keep, torch.float32, seed=7)
    state.update({k: torch.zeros(4, 4) if len(s) > 1 else torch.zeros(4) for k, s in names.items() if k not in keep})
    return state


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_lpips_backbone_file_loads_strictly_and_scores(net, tmp_path):
    state = _torchvision_backbone(net)
    assert any(k.startswith("classifier.") for k in state)            # the published files carry the head too
    torch.save(state, tmp_path / f"{net}.pth")
    metric = Q.load_metric("lpips", {"weights": f"{net}.pth", "net": net}, tmp_path)
    loaded = {}
    for name, part in metric.net.net.named_children():
        if name.startswith("slice"):
            loaded.update({f"features.{k}": v for k, v in part.state_dict().items()})
    assert set(loaded) == {k for k in state if k.startswith("features.")}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    x = VIDEO[:1]
    noisy = np.clip(x.astype(int) + 40, 0, 255).astype(np.uint8)
    assert metric.score(x, x, REF, MASK[:1]) == pytest.approx(0.0, abs=1e-6)
    assert metric.score(noisy, x, REF, MASK[:1]) > 0


def test_lpips_renamed_backbone_key_is_refused(tmp_path):
    state = _torchvision_backbone("alex")
    torch.save(L.rename_one(state, "features.8.weight", "features.9.weight"), tmp_path / "a.pth")
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match=r"slice\d\.8\.weight"):
        warnings.simplefilter("ignore")
        Q.load_metric("lpips", {"weights": "a.pth", "net": "alex"}, tmp_path)
