"""The kit's shards and loader on a pipeline-free sample format: reproducible tars, member checks,
worker decoding, and batches that are a pure function of (seed, step)."""
from __future__ import annotations

import hashlib
import tarfile
from functools import partial

import pytest
import torch

from genbuild.data import loader
from genbuild.data.shards import index_shard, iter_raw_samples, shard_paths, write_tar

MEMBERS = ("x.txt", "y.bin")


def _write(root, split="train", n=5, drop=None):
    (root / "shards").mkdir(parents=True, exist_ok=True)
    members = []
    for i in range(n):
        for m in MEMBERS:
            if (i, m) != drop:
                members.append((f"s{i:03d}.{m}", f"{m}:{i}".encode()))
    write_tar(root / "shards" / f"{split}-000000.tar", members)
    return root / "shards" / f"{split}-000000.tar"


def _decode(key, raw, scale):
    return {"key": key, "v": torch.tensor([int(raw["x.txt"].split(b":")[1]) * scale])}


def _collate(items):
    return [it["key"] for it in items], torch.cat([it["v"] for it in items])


def test_tars_are_byte_reproducible_and_carry_no_owner_or_time(tmp_path):
    a, b = _write(tmp_path / "a"), _write(tmp_path / "b")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    with tarfile.open(a) as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in tar} == {(0, 0, 0, "", "", 0o644)}
    assert list(index_shard(a)) == [f"s{i:03d}" for i in range(5)]


def test_samples_read_in_order_and_a_missing_member_names_the_sample(tmp_path):
    shard = _write(tmp_path)
    assert [k for k, _ in iter_raw_samples(shard, MEMBERS)] == [f"s{i:03d}" for i in range(5)]
    bad = _write(tmp_path / "bad", drop=(3, "y.bin"))
    with pytest.raises(ValueError, match=r"sample s003 lacks members \['y.bin'\]"):
        list(iter_raw_samples(bad, MEMBERS))
    with pytest.raises(ValueError, match="s003"):
        loader.ShardDataset(tmp_path / "bad", "train", MEMBERS, _decode)
    with pytest.raises(FileNotFoundError, match="no 'val' shards"):
        shard_paths(tmp_path, "val")


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_decoding_follows_the_step_batches(tmp_path, workers):
    _write(tmp_path, n=7)
    ds = loader.ShardDataset(tmp_path, "train", MEMBERS, partial(_decode, scale=10), read=["x.txt"])
    batches = loader.StepBatches(seed=3, n=len(ds), batch=4, accum=2, start=1, iters=4)
    got = [v.tolist() for _, v in loader.make_loader(ds, batches, workers, _collate)]
    want = [[10 * i for i in loader.batch_indices(3, 7, 4, step, micro)] for step in range(1, 4) for micro in range(2)]
    assert got == want and len(batches) == 6
    # resuming at step 2 sees exactly the batches an uninterrupted run sees from step 2
    resumed = loader.StepBatches(seed=3, n=7, batch=4, accum=2, start=2, iters=4)
    assert list(resumed) == list(batches)[2:]
