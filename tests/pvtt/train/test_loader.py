"""The training loader over WebDataset shards: multi-process decoding, and the teacher
training from it (``teacher.data: stream``) with exact resume."""
from __future__ import annotations

import logging

import pytest
import torch
from test_checkpoint import TD, Crash, assert_same_artifact, crash_after, make_tiny_dataset, teacher_params

from pvtt.pack.pack import iter_samples
from pvtt.train.data import frame_indices
from pvtt.train.loader import ShardDataset, StepBatches, batch_indices, load_all, shard_paths, video_tensor


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_dataset(tmp_path_factory.mktemp("loader") / "dataset", n_train=6, n_val=2)


def test_worker_processes_decode_what_the_shards_hold(dataset):
    one = load_all(dataset, "train", TD, workers=0)
    two = load_all(dataset, "train", TD, workers=2, batch=2)
    assert one.keys == two.keys == [f"train{i:03d}" for i in range(6)]
    for f in ("source", "edited", "mask", "reference"):
        assert torch.equal(getattr(one, f), getattr(two, f)), f
    assert one.captions == two.captions
    # Against a plain sequential read of the tar: same bytes decoded the same way.
    first = next(iter_samples(shard_paths(dataset, "train")[0]))
    idx = lambda n: frame_indices(n, TD["frames"], TD["frame_stride"])  # noqa: E731
    assert torch.equal(one.edited[0], video_tensor(first["edited"], (TD["width"], TD["height"]), idx))
    assert one.captions[0] == first["caption"]
    assert len(load_all(dataset, "val", TD, limit=1)) == 1


def test_batches_are_a_pure_function_of_seed_and_step(dataset):
    ds = ShardDataset(dataset, "train", TD)
    assert len(ds) == 6
    a = list(StepBatches(0, len(ds), 4, 2, 0, 5))
    assert len(a) == 10 and all(len(b) == 4 and all(0 <= i < 6 for i in b) for b in a)
    assert list(StepBatches(0, len(ds), 4, 2, 3, 5)) == a[6:]              # resuming at step 3
    assert batch_indices(0, 6, 4, 3, 1) == a[7]
    assert batch_indices(1, 6, 4, 3, 1) != a[7] or batch_indices(1, 6, 4, 2, 0) != a[4]
    with pytest.raises(FileNotFoundError, match="no 'benchmark' shards"):
        ShardDataset(dataset, "benchmark", TD)


@pytest.mark.slow  # a training run: make test, not test-fast
def test_teacher_streams_from_shards_and_resumes_exactly(dataset, tmp_path, monkeypatch, caplog):
    """teacher.data: stream trains from the shards; the number of decoding workers changes
    nothing, and a crash resumed from its checkpoint ends in the same artifact."""
    import pvtt.train.teacher as teacher

    params = teacher_params(data="stream", iterations=6, checkpoint_every=2, eval_every=0)
    caplog.set_level(logging.INFO)
    ref = tmp_path / "ref"
    teacher.train_teacher(None, ref, params, dataset_dir=dataset, workers=0)
    assert "streaming 6 train triplets from 1 shards" in caplog.text
    ck, out = tmp_path / "ck", tmp_path / "out"
    import genbuild.train.methods.flow_matching as fm  # the teacher's objective lives in its method
    monkeypatch.setattr(fm, "flow_matching_loss", crash_after(fm.flow_matching_loss, 3))
    with pytest.raises(Crash):
        teacher.train_teacher(None, out, params, ck, dataset_dir=dataset, workers=1)
    monkeypatch.undo()
    teacher.train_teacher(None, out, params, ck, dataset_dir=dataset, workers=1)
    assert "resuming from step 2 of 6" in caplog.text
    assert_same_artifact(out, ref)
    with pytest.raises(ValueError, match="pass --dataset"):
        teacher.train_teacher(None, tmp_path / "x", params)
    with pytest.raises(ValueError, match="teacher.data"):
        teacher.train_teacher(None, tmp_path / "x", teacher_params(data="video"), dataset_dir=dataset)
