"""The format conversion (fixed-shape frames, audio, log-mel) and the vocoder's log-mel."""
from __future__ import annotations

import numpy as np
import pytest

from avgen.data.mel import DEFAULT_MEL, hz_to_mel, log_mel, mel_filters, mel_to_hz
from avgen.data.sample import encode_clip
from avgen.data.standardise import standardise, validate_format_params

FMT = {"size": 64, "fps": 8, "sample_rate": 16000, "seconds": 2.0, "mel": dict(DEFAULT_MEL)}
SRC_SR = 22050


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """1.5 s, 160x96 @ 24 fps: red left fifth, blue right fifth, green middle; a 1 kHz sine at 22.05 kHz."""
    frames = np.zeros((36, 96, 160, 3), np.uint8)
    frames[:, :, :32] = (255, 0, 0)
    frames[:, :, 32:128] = (0, 200, 0)
    frames[:, :, 128:] = (0, 0, 255)
    for i in range(36):                          # a frame counter in the top rows: brightness = frame index
        frames[i, :4, 32:128] = (i * 7, i * 7, i * 7)
    t = np.arange(int(1.5 * SRC_SR)) / SRC_SR
    path = tmp_path_factory.mktemp("avstd") / "clip.mp4"
    encode_clip(path, frames, 24, (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), SRC_SR,
                {"crf": 17, "preset": "medium", "threads": 1})
    return path


def test_exact_shapes_and_centre_crop(clip):
    frames, audio, mel = standardise(clip, FMT)
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    assert audio.shape == (32000,) and audio.dtype == np.float32
    assert mel.shape == (80, 1 + 32000 // 256) and mel.dtype == np.float32
    centre = frames[:12, 8:, 2:-2].reshape(-1, 3).astype(int)      # the real (not padded) frames, below the counter
    assert np.abs(centre - (0, 200, 0)).max() < 40                 # only the green middle survives the crop
    # 1.5 s at 8 fps = 12 real frames; the rest repeat the last one; the audio is zero-padded
    assert all(np.array_equal(frames[i], frames[11]) for i in range(12, 16))
    assert not np.array_equal(frames[0], frames[11])
    assert np.abs(audio[24500:]).max() == 0.0 and np.abs(audio[:23000]).max() > 0.4


def test_trims_a_longer_clip(clip):
    frames, audio, mel = standardise(clip, {**FMT, "size": 32, "fps": 4, "seconds": 1.0, "sample_rate": 8000,
                                            "mel": {**DEFAULT_MEL, "fmax": 3800.0}})
    assert frames.shape == (4, 32, 32, 3) and audio.shape == (8000,) and mel.shape == (80, 1 + 8000 // 256)
    rms = np.sqrt(np.mean(audio[1000:] ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)        # resampled sine keeps its level


def test_log_mel_of_a_1khz_sine_peaks_in_its_bin(clip):
    _, audio, mel = standardise(clip, FMT)
    corners = mel_to_hz(np.linspace(hz_to_mel(80.0), hz_to_mel(7600.0), 82))
    want = int(np.argmin(np.abs(corners[1:-1] - 1000.0)))
    assert np.argmax(mel[:, 10:80].mean(axis=1)) == want
    t = np.arange(16000) / 16000
    assert np.argmax(log_mel(np.sin(2 * np.pi * 1000 * t), FMT["mel"]).mean(axis=1)) == want
    assert mel[:, -10:].max() == pytest.approx(-5.0)               # zero padding sits at the floor


def test_frame_count_and_floor():
    for n in (0, 100, 512, 513, 1000, 16000):
        m = log_mel(np.zeros(n), DEFAULT_MEL)
        assert m.shape == (80, 1 + n // 256) and float(m.max()) == pytest.approx(-5.0)
    assert log_mel(np.zeros(300), {**DEFAULT_MEL, "floor": 1e-10}).max() == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="Nyquist"):
        log_mel(np.zeros(100), {**DEFAULT_MEL, "fmax": 9000.0}, 16000)


def test_matches_the_speecht5_feature_extractor():
    transformers = pytest.importorskip("transformers")
    from transformers.audio_utils import mel_filter_bank

    ref_bank = mel_filter_bank(num_frequency_bins=513, num_mel_filters=80, min_frequency=80.0, max_frequency=7600.0,
                               sampling_rate=16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filters(80, 1024, 80.0, 7600.0, 16000), ref_bank, atol=1e-12)
    x = np.random.default_rng(0).normal(0, 0.1, 12345).astype(np.float32)
    fe = transformers.SpeechT5FeatureExtractor(mel_floor=1e-5)
    ref = fe(audio_target=x, sampling_rate=16000, return_tensors="np")["input_values"][0]
    np.testing.assert_allclose(log_mel(x, DEFAULT_MEL), ref.T, atol=1e-4)


def test_format_params_name_the_key():
    assert validate_format_params(FMT) == FMT
    for change, key in (({"size": 63}, "format.size"), ({"fps": 0}, "format.fps"), ({"seconds": "2"}, "format.seconds"),
                        ({"mel": 3}, "format.mel")):
        with pytest.raises(ValueError, match=f"'{key}'"):
            validate_format_params({**FMT, **change})
