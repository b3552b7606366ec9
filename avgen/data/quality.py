"""The AV filter's judgement of one clip: measure everything, list every reason to reject it.

Thresholds are params ``filter.*`` (DEFAULT_FILTER; DESIGN §2b): video >= 24 fps, shorter side
480-1080 px (480p to 1080p, whatever the orientation), Laplacian variance >= 100, < 2 cuts/s;
audio present, >= 16 kHz, SNR >= 10 dB, < 50 % silent, <= 0.1 % clipped samples.

A reason is ``"<key>: <what was measured> <comparison> filter.<param> <threshold>"``; the key
(REASON_KEYS) is stable, so that reject statistics can be counted by key, and equals the kind
of the sample's planted failure that it catches (avgen.data.sample.FAILURE_KINDS).
"""
from __future__ import annotations

import math
import os

from avgen.data import measure
from avgen.data.probe import probe_av

DEFAULT_FILTER = {
    "min_fps": 24, "min_side": 480, "max_side": 1080, "min_sharpness": 100.0,
    "max_cuts_per_second": 2.0, "cut_threshold": 27.0, "min_scene_len": 3,
    "min_sample_rate": 16000, "min_snr_db": 10.0, "max_silence": 0.5, "silence_db": -50.0,
    "max_clipping": 0.001, "clip_level": 0.999,
}
THRESHOLD_KEYS = tuple(DEFAULT_FILTER)          # the params keys ``filter.<k>``
REASON_KEYS = ("small", "too_large", "low_fps", "blurry", "many_cuts",
               "no_audio", "low_sample_rate", "low_snr", "silent", "clipped")
# NTSC rates (23.976 = 24 x 1000/1001) count as their nominal rate.
FPS_TOLERANCE = 1000 / 1001

# key: (lower bound, upper bound, integer, lower bound excluded)
_RULES = {
    "min_fps": (0.0, None, False, True), "min_side": (1, None, True, False), "max_side": (1, None, True, False),
    "min_sharpness": (0.0, None, False, False), "max_cuts_per_second": (0.0, None, False, True),
    "cut_threshold": (0.0, 255.0, False, False), "min_scene_len": (1, None, True, False),
    "min_sample_rate": (1, None, True, False), "min_snr_db": (measure.SNR_RANGE[0], measure.SNR_RANGE[1], False, False),
    "max_silence": (0.0, 1.0, False, False), "silence_db": (-200.0, 0.0, False, False),
    "max_clipping": (0.0, 1.0, False, False), "clip_level": (0.0, 1.0, False, True),
}


def _check_number(key: str, v, rule: tuple) -> None:
    lo, hi, integer, open_lo = rule
    ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
    ok = ok and (isinstance(v, int) or math.isfinite(v)) and (v > lo if open_lo else v >= lo)
    ok = ok and (hi is None or v <= hi)
    if not ok:
        kind = "an integer" if integer else "a number"
        bounds = (f"> {lo}" if open_lo else f">= {lo}") + (f" and <= {hi}" if hi is not None else "")
        raise ValueError(f"params key 'filter.{key}' must be {kind} {bounds}, got {v!r}")


def validate_filter_params(filt: dict | None) -> dict:
    """The ``filter`` settings with defaults filled in; a bad value raises ValueError naming the
    params key (``filter.<k>``): unknown keys, wrong types, fractions outside [0, 1],
    ``min_side > max_side``, ..."""
    if filt is not None and not isinstance(filt, dict):
        raise ValueError(f"params key 'filter' must be a mapping, got {filt!r}")
    unknown = sorted(set(filt or {}) - set(DEFAULT_FILTER))
    if unknown:
        raise ValueError(f"params key 'filter.{unknown[0]}' is unknown (known: {', '.join(THRESHOLD_KEYS)})")
    cfg = {**DEFAULT_FILTER, **(filt or {})}
    for key, rule in _RULES.items():
        _check_number(key, cfg[key], rule)
    if cfg["min_side"] > cfg["max_side"]:
        raise ValueError(f"params key 'filter.min_side' ({cfg['min_side']}) must be <= filter.max_side ({cfg['max_side']})")
    return cfg


def video_reasons(info: dict, sharp: float, cuts: float, cfg: dict) -> list[str]:
    """Reasons of the picture: size (shorter side), frame rate, sharpness, cuts."""
    reasons = []
    w, h = info["width"], info["height"]
    side = min(w, h)
    if side < cfg["min_side"]:
        reasons.append(f"small: {w}x{h}, shorter side {side} < filter.min_side {cfg['min_side']}")
    elif side > cfg["max_side"]:
        reasons.append(f"too_large: {w}x{h}, shorter side {side} > filter.max_side {cfg['max_side']}")
    if info["fps"] < cfg["min_fps"] * FPS_TOLERANCE - 1e-9:
        reasons.append(f"low_fps: {info['fps']:.1f} fps < filter.min_fps {cfg['min_fps']:g}")
    if sharp < cfg["min_sharpness"]:
        reasons.append(f"blurry: Laplacian variance {sharp:.1f} < filter.min_sharpness {cfg['min_sharpness']:g}")
    if cuts >= cfg["max_cuts_per_second"]:
        reasons.append(f"many_cuts: {cuts:.1f} cuts/s >= filter.max_cuts_per_second {cfg['max_cuts_per_second']:g}")
    return reasons


def audio_reasons(sr: int, snr: float, silence: float, clipping: float, cfg: dict) -> list[str]:
    """Reasons of the sound: sample rate, SNR, silence, clipping."""
    reasons = []
    if sr < cfg["min_sample_rate"]:
        reasons.append(f"low_sample_rate: {sr} Hz < filter.min_sample_rate {cfg['min_sample_rate']}")
    if snr < cfg["min_snr_db"]:
        reasons.append(f"low_snr: {snr:.1f} dB < filter.min_snr_db {cfg['min_snr_db']:g}")
    if silence >= cfg["max_silence"]:
        reasons.append(f"silent: {silence:.0%} silent (below {cfg['silence_db']:g} dBFS) >= filter.max_silence "
                       f"{cfg['max_silence']:g}")
    if clipping > cfg["max_clipping"]:
        reasons.append(f"clipped: {clipping:.2%} of samples at |x| >= {cfg['clip_level']:g} > filter.max_clipping "
                       f"{cfg['max_clipping']:g}")
    return reasons


def judge(path: str | os.PathLike, filt: dict | None) -> tuple[dict, list[str]]:
    """(measurements, reasons) of one clip; no reasons = keep it.

    Probes once, measures the picture (sharpness of SHARPNESS_FRAMES frames at source
    resolution, cuts over every frame), then, when there is an audio stream, decodes it at its
    own sample rate and measures SNR, silence and clipping. Without audio the answer is the
    video reasons plus ``no_audio``. ``filt`` is params ``filter`` (validated here). An
    unreadable file raises ValueError; a decoder failure or timeout genbuild's MediaError.
    """
    cfg = validate_filter_params(filt)
    info = probe_av(path)
    frames = measure.sample_frames(path, info["width"], info["height"], info["seconds"])
    sharp = measure.sharpness(frames)
    cuts = measure.cuts_per_second(path, cfg["cut_threshold"], cfg["min_scene_len"], info)
    m = {**{k: info[k] for k in ("width", "height", "fps", "seconds", "has_audio", "sample_rate", "channels")},
         "sharpness": round(sharp, 3), "cuts_per_second": round(cuts, 4),
         "snr_db": None, "silence": None, "clipping": None}
    reasons = video_reasons(info, sharp, cuts, cfg)
    if not info["has_audio"]:
        return m, reasons + ["no_audio: the file has no audio stream"]
    sr = info["sample_rate"] or cfg["min_sample_rate"]
    x = measure.read_audio(path, sr)
    if info["seconds"] > 0:     # AAC decodes whole 1024-sample frames: drop the encoder's tail padding
        x = x[: max(1, round(info["seconds"] * sr))]
    snr = measure.snr_db(x, sr)
    silence = measure.silence_fraction(x, sr, cfg["silence_db"])
    clipping = measure.clipping_fraction(x, cfg["clip_level"])
    m.update(snr_db=round(snr, 3), silence=round(silence, 4), clipping=round(clipping, 6))
    return m, reasons + audio_reasons(info["sample_rate"], snr, silence, clipping, cfg)


def reason_key(reason: str) -> str:
    """The stable key of a reason string (the text before the first colon)."""
    return reason.split(":", 1)[0]
