"""CLIP/CLAP scores (avgen.eval.scores): the arithmetic, and "unavailable" for stand-in encoders.

Stand-ins are random projections, so no test asks them to rank matched captions above shuffled
ones; the arithmetic is checked with encoders whose embeddings are known, and on a tiny randomly
initialised open_clip model (the real class and preprocessing) against a hand computation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avgen.eval.scores import clap_score, clip_score
from avgen.features.encoders import ClapEncoder, ClipEncoder, OpenClipEncoder, StandInClapEncoder, StandInClipEncoder

torch.set_num_threads(2)

TINY_CLIP = dict(embed_dim=32, vision_cfg=dict(layers=1, width=32, head_width=16, patch_size=16, image_size=64),
                 text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))


class KnownClip(ClipEncoder):
    """Frame i of a clip embeds to the frame's first pixel (3-d); a caption to a fixed vector."""

    backend, implementation, dim = "known", "known vectors", 3
    TEXT = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0]}

    def image(self, frames):
        return np.asarray(frames)[:, 0, 0, :].astype(np.float32)

    def text(self, captions):
        return np.asarray([self.TEXT[c] for c in captions], np.float32)


class KnownClap(ClapEncoder):
    backend, implementation, dim = "known", "known vectors", 2

    def audio(self, waveforms, sr=48_000):
        return np.asarray([[float(np.mean(w)), 1.0] for w in waveforms], np.float32)

    def text(self, captions):
        return np.asarray([[1.0, 0.0] if c == "loud" else [0.0, 1.0] for c in captions], np.float32)


def _clip(*pixels) -> np.ndarray:
    return np.stack([np.full((4, 4, 3), p, np.uint8) for p in pixels])


def test_clip_score_is_the_mean_cosine_of_mean_frame_and_caption():
    clips = [_clip((10, 0, 0), (0, 10, 0)), _clip((0, 5, 0))]
    got = clip_score(KnownClip(), clips, ["red", "green"])
    # clip 1: mean of unit (1,0,0) and (0,1,0) -> (1,1,0)/sqrt2, cos with red = 1/sqrt2; clip 2: cos 1
    assert got["available"] and got["reason"] is None
    assert got["value"] == pytest.approx((1 / np.sqrt(2) + 1.0) / 2)
    assert "known vectors" in got["implementation"] and "no x100" in got["implementation"]
    assert clip_score(KnownClip(), clips, ["green", "red"])["value"] == pytest.approx((1 / np.sqrt(2) + 0.0) / 2)


def test_clap_score_is_the_mean_cosine_of_audio_and_caption():
    wavs = [np.full(10, 1.0), np.full(10, 0.0)]
    got = clap_score(KnownClap(), wavs, 16_000, ["loud", "quiet"])
    assert got["value"] == pytest.approx((1 / np.sqrt(2) + 1.0) / 2)


def test_tiny_open_clip_score_matches_a_hand_computation():
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    torch.manual_seed(0)
    enc = OpenClipEncoder(open_clip.CLIP(**TINY_CLIP).eval(), SimpleTokenizer(context_length=16),
                          implementation="open_clip tiny (test)")
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (3, 40, 56, 3), dtype=np.uint8) for _ in range(2)]
    caps = ["a ball bounces on the floor", "rain falls on a roof"]
    got = clip_score(enc, clips, caps)
    t = enc.text(caps)
    expect = []
    for frames, row in zip(clips, t):
        m = enc.image(frames).mean(axis=0)
        expect.append(float(m @ row / np.linalg.norm(m)))
    assert got["available"] and -1.0 <= got["value"] <= 1.0
    assert got["value"] == pytest.approx(np.mean(expect), abs=1e-5)
    assert got["implementation"].startswith("open_clip tiny (test)")


def test_stand_in_scores_are_unavailable_unless_asked_for():
    clips, caps = [_clip((1, 2, 3), (4, 5, 6))], ["a ball"]
    got = clip_score(StandInClipEncoder(), clips, caps)
    assert got["value"] is None and not got["available"] and "stand-in" in got["reason"]
    got = clap_score(StandInClapEncoder(), [np.zeros(16_000, np.float32)], 16_000, caps)
    assert got["value"] is None and not got["available"] and "stand-in" in got["reason"]
    asked = clip_score(StandInClipEncoder(), clips, caps, allow_stand_in=True)
    assert asked["available"] and np.isfinite(asked["value"]) and asked["implementation"].startswith("STAND-IN")


def test_empty_and_mismatched_inputs():
    assert clip_score(KnownClip(), [], [])["available"] is False
    with pytest.raises(ValueError, match="2 clips but 1 captions"):
        clip_score(KnownClip(), [_clip((1, 0, 0))] * 2, ["red"])
