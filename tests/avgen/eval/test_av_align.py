"""AV-Align (avgen.eval.av_align) on clips whose events are known: a ball dropped from rest that
bounces, lower each time, with an impact click exactly at each floor contact (8 fps, 16 kHz, 4 s).

Contacts fall on frame times, so the flow magnitude (frame c-1 -> c) peaks at each contact: the
ball is fastest just before it and leaves slower after it. The same clips with the audio delayed by
0.5 s (4 frames; the bounce periods are chosen so that no delayed click lands within one frame of
another contact) must score clearly lower.
"""
from __future__ import annotations

import numpy as np
import pytest

from avgen.eval import av_align as A

FPS, SR, SECONDS, SIZE, RADIUS, HEIGHT = 8, 16_000, 4.0, 128, 16, 40.0
# (frames of free fall from rest, flight times of the bounces in frames); the last flight ends after the clip.
CLIPS = [(5, [8, 7, 6, 5.5]), (6, [10, 8, 7.5]), (7, [11, 9, 6.5]), (6, [9, 8, 7, 6.5])]


def _heights(drop: int, periods: list[float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Height above the floor per frame (px) and the contact frames inside the clip; g is set so the
    highest arc (the drop) rises HEIGHT px."""
    g = HEIGHT / (drop ** 2 / 2)
    contacts = drop + np.concatenate([[0.0], np.cumsum(periods)])
    t = np.arange(n, dtype=np.float64)
    h = np.where(t <= drop, HEIGHT - g * t ** 2 / 2, 0.0)
    for c, p in zip(contacts[:-1], periods):
        s = t - c
        arc = (s > 0) & (s <= p)
        h[arc] = np.maximum(0.0, g * p / 2 * s[arc] - g * s[arc] ** 2 / 2)
    return h, contacts[contacts < n - 1].astype(int)


def _video(h: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shaded ball over a graded background and a floor strip, drifting slowly sideways."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    floor = SIZE - 8 - RADIUS
    bg = 40 + 30 * (yy / SIZE)[..., None] * np.array([0.5, 0.7, 1.0]) + rng.uniform(0, 20, 3)
    bg[floor + RADIUS:] = [90, 70, 50]
    colour, x0, vx = rng.uniform(120, 255, 3), rng.uniform(30, SIZE - 30), rng.uniform(-0.8, 0.8)
    frames = []
    for i, hi in enumerate(h):
        cy, cx = floor - hi, x0 + vx * i
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        shade = np.clip(1.1 - 0.5 * d / RADIUS - 0.25 * ((xx - cx) + (yy - cy)) / RADIUS, 0.3, 1.2)
        img = bg.copy()
        img[d <= RADIUS] = colour * shade[d <= RADIUS, None]
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _audio(contacts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Faint noise plus a 40 ms decaying click (a ringing tone plus noise) starting at each contact."""
    audio = 0.002 * rng.standard_normal(int(SECONDS * SR))
    tc = np.arange(int(0.04 * SR)) / SR
    for k, c in enumerate(contacts):
        start = round(c / FPS * SR)
        click = 0.8 * 0.85 ** k * np.exp(-tc / 0.008) * (np.sin(2 * np.pi * rng.uniform(600, 1500) * tc)
                                                         + 0.5 * rng.standard_normal(len(tc)))
        audio[start:start + len(tc)] += click[:len(audio) - start]
    return audio.astype(np.float32)


def bouncing_ball(drop: int, periods: list[float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames uint8 (32, 128, 128, 3), audio float32 at 16 kHz, contact times in s)."""
    rng = np.random.default_rng(seed)
    h, contacts = _heights(drop, periods, int(SECONDS * FPS))
    return _video(h, rng), _audio(contacts, rng), contacts / FPS


def _delayed(audio: np.ndarray, seconds: float = 0.5) -> np.ndarray:
    k = int(seconds * SR)
    return np.concatenate([np.zeros(k, audio.dtype), audio[:-k]])


@pytest.fixture(scope="module")
def clips():
    return [bouncing_ball(drop, periods, seed) for seed, (drop, periods) in enumerate(CLIPS)]


def test_audio_onsets_land_on_the_impacts(clips):
    for _, audio, contacts in clips:
        peaks = A.audio_peaks(audio, SR)
        assert len(peaks) == len(contacts)
        assert np.abs(peaks - contacts).max() < 0.03


def test_flow_peaks_at_the_contacts(clips):
    for frames, _, contacts in clips:
        peaks = A.video_peaks(frames, FPS)
        assert all(np.abs(peaks - c).min() <= 1.0 / FPS + 1e-9 for c in contacts)


def test_synchronous_clips_score_clearly_higher_than_delayed_audio(clips):
    aligned = [A.av_align(f, FPS, a, SR) for f, a, _ in clips]
    delayed = [A.av_align(f, FPS, _delayed(a), SR) for f, a, _ in clips]
    assert all(0.0 <= s <= 1.0 for s in aligned + delayed)
    assert np.mean(aligned) >= 0.6
    assert np.mean(aligned) - np.mean(delayed) >= 0.2, (aligned, delayed)


def test_iou_arithmetic_with_a_strict_one_frame_window():
    w = 1.0 / FPS
    assert A.peak_iou([0.0, 1.0, 2.0], [0.05, 2.2, 3.0], w) == pytest.approx(1 / 5)
    assert A.peak_iou([0.0], [0.125], w) == 0.0             # exactly one frame apart: not within the window
    assert A.peak_iou([1.0, 1.05], [1.0], w) == pytest.approx(1 / 2)  # one video peak matches one audio peak
    assert A.peak_iou([1.0, 1.1], [0.95, 1.05], w) == pytest.approx(1.0)  # one-to-one: both pairs found
    assert A.peak_iou([], [1.0], w) == 0.0 and A.peak_iou([1.0], [], w) == 0.0


def test_silence_stillness_and_short_inputs_score_zero_not_nan(clips):
    frames, audio, _ = clips[0]
    still = np.repeat(frames[:1], len(frames), axis=0)
    t = np.arange(int(SECONDS * SR)) / SR
    cases = [(frames, np.zeros_like(audio)), (still, audio), (still, np.zeros_like(audio)),
             (frames, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)),  # a steady tone has no onset
             (frames[:1], audio), (frames, audio[:100])]
    for f, a in cases:
        s = A.av_align(f, FPS, a, SR)
        assert s == 0.0 and not np.isnan(s)
    assert len(A.audio_peaks(np.zeros(SR, np.float32), SR)) == 0
    with pytest.raises(ValueError):
        A.av_align(frames, 0, audio, SR)
