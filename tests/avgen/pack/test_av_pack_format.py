from __future__ import annotations

import numpy as np

from avgen.pack.format import assign_splits, read_wav, shard_name, wav_bytes


def test_splits_give_every_split_a_clip_from_three_and_are_stable():
    ids = [f"av{i:04d}" for i in range(8)]
    s = assign_splits(ids, 1234, 0.2, 0.2)
    assert sorted(s.values()).count("benchmark") == 2 and list(s.values()).count("val") == 2
    assert assign_splits(list(reversed(ids)), 1234, 0.2, 0.2) == s  # order of the input does not matter
    assert set(assign_splits(ids[:2], 1234, 0.2, 0.2).values()) == {"train"}
    assert set(assign_splits(ids[:3], 1234, 0.2, 0.2).values()) == {"train", "val", "benchmark"}
    assert set(assign_splits(ids, 1234, 0.0, 0.0).values()) == {"train"}
    assert shard_name("val", "b0003", 2) == "val-b0003-002.tar"


def test_wav_round_trip_is_pcm16_and_reproducible():
    x = (np.sin(np.linspace(0, 100, 16000)) * 0.5).astype(np.float32)
    b = wav_bytes(x, 16000)
    assert b == wav_bytes(x, 16000)
    y, sr = read_wav(b)
    assert sr == 16000 and np.abs(y - x).max() < 1 / 32767 + 1e-6
