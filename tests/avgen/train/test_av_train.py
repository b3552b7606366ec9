"""AVGen's stages on the kit's trainer, on a small synthetic features artifact: the validation loss
falls, a crashed run resumes to the same bytes, stage 3 takes the subset its rule chooses."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avgen.train import subset
from avgen.train.data import load_split, open_split, write_shard
from avgen.train.train import train_stage
from genbuild.train.methods.flow_matching import FlowMatching

FORMAT = {"size": 64, "fps": 8, "sample_rate": 16000, "seconds": 0.5, "mel": {"n_mels": 80, "n_fft": 1024, "hop": 256,
                                                                                "fmin": 80.0, "fmax": 7600.0}}


def _shard(path, n, seed):
    g = np.random.default_rng(seed)
    t = np.linspace(0, 1, 4, dtype=np.float32)
    lat = np.stack([np.sin(2 * np.pi * (t[:, None, None] + k / n) + np.zeros((4, 8, 8), np.float32))[None].repeat(4, 0)
                    for k in range(n)]).astype(np.float32)
    mel = np.stack([np.tile(np.linspace(-2, 1, 80, dtype=np.float32)[:, None] * (1 + k / n), (1, 10)) for k in range(n)])
    emb = lambda: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(g.standard_normal((n, 512)).astype(np.float32))
    arrays = {"latents": lat.astype(np.float16), "mel": mel.astype(np.float16), "clip_text": emb(), "clap_text": emb(),
              "clip_frames": emb(), "clap_audio": emb(), "snr_db": np.linspace(12, 30, n).astype(np.float32),
              "sharpness": np.linspace(150, 900, n).astype(np.float32)}
    write_shard(path, arrays, [f"{path.name}_{k}" for k in range(n)], [f"clip {k}" for k in range(n)])


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    d = tmp_path_factory.mktemp("avfeatures")
    (d / "shards").mkdir()
    _shard(d / "shards" / "train-b0000-000", 5, 0)  # two shards: batches gather rows across memory-mapped files
    _shard(d / "shards" / "train-b0001-000", 3, 2)
    _shard(d / "shards" / "val-b0000-000", 3, 1)
    feats = {"vae": {"backend": "stand_in", "path": "x"}, "clip": {"backend": "stand_in", "path": "x"},
             "clap": {"backend": "stand_in", "path": "x"}}
    (d / "features.json").write_text(json.dumps({"features": feats, "format": FORMAT, "shapes": {
        "video": [4, 4, 8, 8], "audio": [80, 10], "clip_dim": 512, "clap_dim": 512}}))
    return d


def _params(stage, iterations, **over):
    common = {"batch_size": 4, "warmup": 2, "cond_dropout": 0.1, "shift": 3.0, "seed": 0, "checkpoint_every": 3}
    st = {"iterations": iterations, "lr": 2e-3, **over}
    return {"model": {"preset": "tiny", "vocoder": {"backend": "stand_in", "path": "x"}},
            "train": {"common": common, stage: st}}


def test_stage1_lowers_both_unimodal_losses_and_resumes_exactly(features, tmp_path, monkeypatch):
    params = _params("stage1", 8)
    m = train_stage("stage1", features, tmp_path / "straight", params)
    assert m["val_loss_after_video"] < m["val_loss_before_video"]
    assert m["val_loss_after_audio"] < m["val_loss_before_audio"]
    real = FlowMatching.train_step

    def crash_at_5(self, step, next_batch):
        if step == 5:
            raise KeyboardInterrupt("killed")
        return real(self, step, next_batch)
    monkeypatch.setattr(FlowMatching, "train_step", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        train_stage("stage1", features, tmp_path / "crashed", params, checkpoint_dir=tmp_path / "ckpt")
    monkeypatch.setattr(FlowMatching, "train_step", real)
    train_stage("stage1", features, tmp_path / "crashed", params, checkpoint_dir=tmp_path / "ckpt")  # resumes at 3
    for f in sorted((tmp_path / "straight" / "model").rglob("*.safetensors")):
        assert f.read_bytes() == (tmp_path / "crashed" / f.relative_to(tmp_path / "straight")).read_bytes(), f
    assert (tmp_path / "straight/metrics.json").read_bytes() == (tmp_path / "crashed/metrics.json").read_bytes()


def test_stage3_continues_from_stage2_on_its_subset(features, tmp_path):
    train_stage("stage2", features, tmp_path / "s2", _params("stage2", 4))
    rule = {"rank_by": "snr_db", "top_fraction": 0.5, "min_sharpness": 200.0}
    m = train_stage("stage3", features, tmp_path / "s3", _params("stage3", 3, subset=rule), init=tmp_path / "s2")
    assert m["subset_size"] == 4 and m["train_clips"] == 8
    cfg = json.loads((tmp_path / "s3/config.json").read_text())
    assert cfg["started_from"] == "previous stage s2" and cfg["subset"]["subset_size"] == 4
    # sharpness >= 200 drops each shard's first clip; the 4 best SNRs (ties in row order) of the other 6:
    assert (tmp_path / "s3/subset_ids.txt").read_text().split() == ["train-b0000-000_2", "train-b0000-000_3",
                                                                    "train-b0000-000_4", "train-b0001-000_2"]


def test_subset_rule_filters_then_ranks_on_the_store_and_in_memory_alike(features):
    store, whole = open_split(features, "train"), load_split(features, "train")
    assert len(store) == len(whole) == 8
    rule = {"rank_by": "sharpness", "top_fraction": 0.25, "min_snr_db": 20.0}
    for train in (store, whole):
        chosen, rec = subset.select(train, rule)
        assert rec["subset_size"] == 2 and rec["subset_ids"] == ["train-b0000-000_4", "train-b0001-000_2"]
        assert torch.equal(chosen.rows([1, 0]).latents, whole.latents[[7, 4]])
    for rank_by in ("clip_text", "clap_text"):
        assert torch.allclose(subset.scores(store, rank_by), subset.scores(whole, rank_by), atol=1e-6)
    with pytest.raises(ValueError, match="no train clip passes"):
        subset.select(train, {"rank_by": "snr_db", "top_fraction": 0.5, "min_snr_db": 99.0})
    with pytest.raises(ValueError, match="rank_by"):
        subset.select(train, {"rank_by": "vibes", "top_fraction": 0.5})


def test_stage1_starts_from_local_pretrained_weights_of_the_preset(features, tmp_path):
    import copy

    from avgen.models.presets import PRESETS, build

    build("tiny", seed=7).save_pretrained(tmp_path / "pretrained")
    params = _params("stage1", 2)
    params["model"]["init"] = str(tmp_path / "pretrained")
    train_stage("stage1", features, tmp_path / "s1", params)
    assert json.loads((tmp_path / "s1/config.json").read_text())["started_from"] == f"model.init {tmp_path / 'pretrained'}"
    shallow = copy.deepcopy(PRESETS["tiny"])
    shallow["backbone"]["layers"] = 1
    build(shallow).save_pretrained(tmp_path / "shallow")
    params["model"]["init"] = str(tmp_path / "shallow")
    with pytest.raises(ValueError, match="model.init"):
        train_stage("stage1", features, tmp_path / "s1b", params)
    params["model"]["init"] = str(tmp_path / "missing")
    with pytest.raises(Exception, match="missing"):
        train_stage("stage1", features, tmp_path / "s1c", params)
