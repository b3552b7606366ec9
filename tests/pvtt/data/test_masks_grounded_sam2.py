"""Masks stage, ``grounded_sam2`` backend (Grounding DINO box on frame 0 + SAM2 video propagation).

No real weights here (offline, CPU): the test builds a tiny random Grounding DINO (transformers,
saved with ``save_pretrained``) and a tiny random SAM2 from the package's hiera_t config made
small by hydra overrides (saved as ``{"model": state_dict}``), and the backend loads both
through the same code path as the real ``models/`` files. Random weights say nothing about
mask quality, so the tests pin the plumbing: box_threshold 0 always yields a box and SAM2
propagates it over every frame, a threshold of 1 yields none (empty masks -> "no product
detected"), missing weights and bad params name the path / key.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_masks import make_showcase, write_clips_dir

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.masks import load_masks
from pvtt.data import masks as M
from pvtt.data.backends import BackendError
from pvtt.data.backends.grounded_sam2 import GroundedSam2Backend

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SAM2_TINY = [  # hiera_t shrunk: 128 px input, one block per stage (+1 global), 16-d trunk, 1 memory layer
    "++model.image_size=128",
    "++model.memory_attention.layer.self_attention.feat_sizes=[8,8]",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[8,8]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=64",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.num_maskmem=2",
]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "an", "the", "watch", "bottle", "bag", "box"]
SPEC = dict(seed=1, shape="bottle", hue=120, tint_hue=30, area=0.12, width=64, height=48)
N_FRAMES = 5
# the sam2 wheel has no compiled _C extension: SAM2 skips its optional hole filling and says so
pytestmark = pytest.mark.filterwarnings("ignore:cannot import name '_C':UserWarning")


def _tiny_grounding_dino(d):
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})  # v5: a dict, not vocab_file
    proc = GroundingDinoProcessor(GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}), tok)
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 1, 1], window_size=2, out_indices=[2, 3, 4]),
        text_config=BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64),
        d_model=32,                     # GroupNorm(32, d_model) in the input projections
        encoder_layers=1, decoder_layers=2,  # decoder_layers=1 breaks the tied bbox_embed heads
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        num_queries=10, max_text_len=32, encoder_n_points=1, decoder_n_points=1)
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(cfg).save_pretrained(d)
    proc.save_pretrained(d)


def _tiny_sam2(path):
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    model = build_sam2_video_predictor(SAM2_CONFIG, None, device="cpu", hydra_overrides_extra=SAM2_TINY)
    torch.save({"model": model.state_dict()}, path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    _tiny_grounding_dino(root / "grounding-dino-tiny")
    _tiny_sam2(root / "sam2.pt")
    return {"backend": "grounded_sam2", "grounding_dino": str(root / "grounding-dino-tiny"),
            "sam2_config": SAM2_CONFIG, "sam2_checkpoint": str(root / "sam2.pt"), "sam2_overrides": SAM2_TINY,
            "device": "cpu"}


@pytest.fixture(scope="module")
def frames():
    return make_showcase(n_frames=N_FRAMES, **SPEC)[0]


def _backend(weights, **kw):
    cfg = M.validate_params({"masks": {**weights, **kw}})
    return M.get_backend(cfg["backend"], cfg)


def test_box_is_propagated_by_sam2_over_every_frame(weights, frames):
    be = _backend(weights, box_threshold=0.0)
    assert isinstance(be, GroundedSam2Backend) and be.needs_category
    m = be.segment(frames, "bottle")
    assert m.dtype == bool and m.shape == frames.shape[:3]
    assert be.last["prompt"] == "a bottle."
    x0, y0, x1, y1 = be.last["box"]
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 48 and 0 < be.last["score"] <= 1
    assert be.last["frames_propagated"] == N_FRAMES
    assert np.array_equal(be.segment(frames, "bottle"), m)    # deterministic


def test_no_box_above_threshold_gives_empty_masks(weights, frames):
    be = _backend(weights, box_threshold=1.0)                 # sigmoid scores never exceed 1
    m = be.segment(frames, "bottle")
    assert m.shape == frames.shape[:3] and not m.any()
    assert be.last["box"] is None and be.last["frames_propagated"] == 0


def test_prompt_text_and_category_need(weights):
    be = _backend(weights, prompt="A Product Shot of a {category}")
    assert be.text("water_bottle") == "a product shot of a water bottle."
    with pytest.raises(BackendError, match=r"masks\.prompt"):
        be.text(None)
    fixed = _backend(weights, prompt="a product.")
    assert not fixed.needs_category and fixed.text(None) == "a product."


@pytest.mark.parametrize("key,what", [("grounding_dino", "grounding-dino-tiny"),
                                      ("sam2_checkpoint", "sam2/sam2.1_hiera_tiny.pt")])
def test_missing_weights_name_path_key_and_dvc_pull(weights, tmp_path, monkeypatch, key, what):
    monkeypatch.chdir(tmp_path)
    cfg = M.validate_params({"masks": {**weights, key: f"models/{what}"}})
    with pytest.raises(BackendError) as e:
        M.get_backend("grounded_sam2", cfg)
    msg = str(e.value)
    assert f"models/{what}" in msg and f"masks.{key}" in msg and f"dvc pull models/{what.split('/')[0]}" in msg


def test_stage_stops_on_missing_weights(weights, tmp_path):
    params = {"masks": {**weights, "sam2_checkpoint": str(tmp_path / "none.pt")}}
    with pytest.raises(SystemExit, match=r"masks: .*none\.pt.*masks\.sam2_checkpoint.*dvc pull"):
        M.main(["--params", json.dumps(params), "--clips", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_checkpoint_not_matching_config_names_the_keys(weights):
    with pytest.raises(BackendError, match=r"masks\.sam2_checkpoint.*masks\.sam2_overrides"):
        _backend(weights, sam2_overrides=[])                  # full-size hiera_t vs the tiny checkpoint


def test_unknown_sam2_config_names_the_key(weights):
    with pytest.raises(BackendError, match=r"masks\.sam2_config"):
        _backend(weights, sam2_config="configs/sam2.1/none.yaml")


@pytest.mark.parametrize("sec,key", [
    ({"prompt": "a {product}."}, "masks.prompt"),
    ({"prompt": ""}, "masks.prompt"),
    ({"prompt": "a {category.x}."}, "masks.prompt"),
    ({"box_threshold": 1.5}, "masks.box_threshold"),
    ({"text_threshold": "0.2"}, "masks.text_threshold"),
    ({"device": "gpu"}, "masks.device"),
    ({"sam2_overrides": "++model.image_size=128"}, "masks.sam2_overrides"),
    ({"grounding_dino": ""}, "masks.grounding_dino"),
    ({"sam2_checkpoint": None}, "masks.sam2_checkpoint"),
    ({"box_thresh": 0.3}, "masks.box_thresh"),
    ({"backend": "grounded_sam3"}, "masks.backend"),
])
def test_invalid_params_name_the_key(sec, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        M.validate_params({"masks": {"backend": "grounded_sam2", **sec}})


def test_stage_end_to_end(weights, tmp_path, caplog):
    """masks.main over a clips dir: categories from clips.json, else the video's raw info.json."""
    specs = {"c000": SPEC, "c001": {**SPEC, "seed": 2, "shape": "bag", "hue": 45}}
    d, truth = write_clips_dir(tmp_path, video="v000", specs=specs, n_frames=N_FRAMES)
    index = read_json(d / "clips.json")
    index["clips"][1]["category"] = "bag"                    # clip's own category wins
    write_json(d / "clips.json", index)
    write_json(tmp_path / "raw" / "v000" / "info.json", {"id": "v000", "status": "ok", "category": "bottle"})
    d2, _ = write_clips_dir(tmp_path, video="v001", specs={"c000": SPEC}, n_frames=N_FRAMES)  # no category anywhere

    params = {"masks": {**weights, "box_threshold": 0.0, "min_area_frac": 0.0}}
    caplog.set_level("INFO", logger="pvtt.data.masks")
    out = tmp_path / "masks" / "v000"
    M.run(d, out, params)                                     # raw info.json found next to work/clips
    info = read_json(out / "masks.json")
    assert sorted(info["clips"]) == ["c000", "c001"]
    for cid, entry in info["clips"].items():
        m = load_masks(out / entry["path"])
        assert m.shape == truth[cid][1].shape and entry["backend"] == "grounded_sam2"
        assert entry["n_frames"] == N_FRAMES and entry["area_frac"] == M.mask_stats(m)[0]
    logged = caplog.text
    assert "'a bottle.' box" in logged and "'a bag.' box" in logged and f"{N_FRAMES} frames propagated" in logged

    out2 = tmp_path / "masks" / "v001"
    M.run(d2, out2, params)
    assert read_json(out2 / "masks.json")["clips"] == {}
    assert [r["reason"] for r in read_jsonl(out2 / "rejects.jsonl")] == [M.NO_CATEGORY]

    out3 = tmp_path / "masks" / "v000-strict"                 # nothing above the threshold: rejected clips
    M.main(["--params", json.dumps({"masks": {**weights, "box_threshold": 1.0}}), "--clips", str(d),
            "--out", str(out3), "--raw", str(tmp_path / "raw" / "v000")])
    assert sorted(r["reason"] for r in read_jsonl(out3 / "rejects.jsonl")) == [M.NO_PRODUCT] * 2
