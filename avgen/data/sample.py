"""Embedded sample of AVGen-DiT: procedural clips with sound whose events are known.

Why procedural: the build runs end to end with no network and no licensed footage, and the
weight-free stages (filter, format, AV-Align) need inputs whose right answers are known.
Every clip therefore comes with ground truth (``truth.json``): the exact time of every impact,
what the clip shows and, for a planted failure, the one filter reason it must be rejected for.

What a good clip is, and why:

* One object (a disc = "ball" or a square = "block", in a saturated colour) bounces under
  gravity on a floor. The motion is solved analytically (no time step), so impact times are
  exact and do not depend on the frame rate; each impact plays a short decaying noise burst plus
  a low thump at that exact sample. Every bounce returns to the same apex (a lively ball), so a
  clip of any length keeps having events, FLIGHT (0.875 s) apart.
* The scene is built so that AV-Align (avgen.eval.av_align: audio onsets vs optical-flow peaks
  strictly within +-1 frame) tells the synchronous clip from the same clip with its audio delayed
  by 0.5 s (the evaluation's check) after the format stage (64 x 64 centre crop at EVENT_FPS = 8,
  frame i showing time i / 8), for every clip:
  - every impact falls mid-way between two frames (6.5 and 13.5 frames in, +-0.15 frame): the
    flow of the frame pair that holds the impact folds (down, then up) and reads low, so the
    flow peaks on the falling pair just before it, within the window; an impact on a frame time
    would put the peak on the rising pair one whole frame later, outside it;
  - impacts are 0.875 s apart and the first comes at ~0.81 s, so a delayed impact sound, and the
    delayed audio's own onset at 0.5 s where its silence ends, land >= ~0.3 s from any impact,
    further than the +-125 ms window; the second impact comes before 1.75 s, the last flow entry
    that can be a peak;
  - one object, because two independent bouncers cannot keep their impacts that far apart in
    2 s (1-3 objects gave ~10 impacts per 2 s, and a delayed sound almost always found one
    within +-125 ms);
  - big and slow: at 64 x 64 Farneback flow under-reads a displacement beyond about half the
    object, so the ball (radius >= 7 px there) lands at <= 0.8 frame heights/s (<= 6.4 px per
    8-fps frame); it stays within the centred square, which the crop keeps, and its colour is
    dark in grey (flow sees luminance only; an orange or yellow ball on the light wall was all
    but invisible to it).
* One object is the sound "source": a continuous sine (phase accumulated sample by sample, so
  no clicks) whose pitch follows its height, 300 Hz on the floor to 1200 Hz at the highest apex.
  A tone that moves through the spectrum is also what a reference-free SNR estimate needs
  (avgen.data.measure.snr_db): no frequency bin holds signal all the time.
* The background (wall and textured floor) carries per-pixel grain, so the variance of the
  Laplacian is in the thousands (the sharpness filter wants > 100); it is static within a clip,
  so PySceneDetect sees no cut; low ambient noise keeps the SNR near 27 dB.

Planted failures (ids ``avfail_<kind>``) are good clips with exactly one thing broken, each
breaking exactly one filter (avgen.data.quality's reason key == the kind): ``blurry`` (Gaussian
blur), ``low_fps`` (15 fps), ``many_cuts`` (background switches every 0.25 s), ``low_snr``
(white noise as loud as the signal), ``silent`` (digital silence after the first 30 %),
``clipped`` (gain x16 into full scale), ``small`` (320x240), ``no_audio`` (no audio stream).

All randomness comes from ``numpy.random.Generator`` seeded by (seed, purpose, index): a clip
depends only on the seed and its own index (or failure kind), and reruns give identical bytes
(x264 and ffmpeg's AAC encoder run bit-exactly, see genbuild.io.video).
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_csv, write_json
from genbuild.io.video import MediaError, ffmpeg_bin, ffmpeg_url, run_tool, x264_args

log = logging.getLogger("avgen.data.sample")

FAILURE_KINDS = ("blurry", "low_fps", "many_cuts", "low_snr", "silent", "clipped", "small", "no_audio")
DEFAULT_SAMPLE = {"n_good": 10, "seconds": 2.0, "width": 640, "height": 480, "fps": 24, "sample_rate": 16000,
                  "failures": list(FAILURE_KINDS)}
DEFAULT_ENCODER = {"crf": 17, "preset": "medium", "threads": 1}

SMALL_SIZE = (320, 240)     # "small": shorter side 240 < the filter's 480
LOW_FPS = 15                # "low_fps": < the filter's 24
CUT_EVERY = 0.25            # "many_cuts": seconds between background switches (4 per second)
BLUR_SIGMA = 4.0            # "blurry": Gaussian sigma in pixels per 480 lines of height
SILENT_AFTER = 0.3          # "silent": audio is digital zero after this fraction of the clip
CLIP_GAIN = 16.0            # "clipped": gain before clipping to full scale (the tone clips too)
AUDIO_BITRATE = "96k"

# Geometry in units of the frame height (the same scene renders at any size), time in seconds.
FLOOR_Y = 0.86              # floor line
GRAVITY = 1.8               # frame heights / s^2 (slow: see the module docstring)
RADIUS = (0.11, 0.15)       # >= 11 % of the frame height: >= 7 px of radius at the format stage's 64 x 64
EVENT_FPS = 8               # the format stage's fps: every impact falls mid-way between two of its frames
FLIGHT_FRAMES = 7           # each bounce lasts 7 frames at EVENT_FPS (FLIGHT = 0.875 s between impacts)
FIRST_IMPACT_FRAMES = 6.5   # the first impact, 6.5 frames in (0.8125 s), jittered by +-JITTER_FRAMES
JITTER_FRAMES = 0.15
FLIGHT = FLIGHT_FRAMES / EVENT_FPS
VX = 0.06                   # horizontal speed, at most this many frame heights per second
TONE_HZ = (300.0, 1200.0)
TONE_AMP = 0.16
NOISE_STD = 0.003           # ambient white noise (about -50 dBFS), SNR near 27 dB
PEAK = 0.7                  # mixes are normalised to this peak (no clipping in good clips)

PALETTE = (("red", (220, 30, 36)), ("orange", (196, 76, 0)), ("brown", (132, 70, 24)),
           ("green", (20, 140, 44)), ("blue", (30, 80, 220)), ("purple", (136, 44, 208)),
           ("magenta", (210, 30, 140)), ("teal", (0, 130, 128)))
SHAPES = {"disc": "ball", "square": "block"}
# floor name, floor RGB, wall RGB (muted colours; texture modulates brightness only)
FLOORS = (("wooden", (150, 104, 64), (196, 188, 172)), ("tiled", (170, 170, 160), (150, 170, 186)),
          ("stone", (128, 124, 118), (186, 174, 160)), ("carpeted", (110, 60, 64), (200, 196, 184)))
# contrasting backdrops of the many_cuts clip: (floor RGB, wall RGB)
CUT_BACKDROPS = (((40, 40, 90), (30, 30, 70)), ((230, 200, 120), (250, 230, 170)),
                 ((40, 110, 40), (20, 80, 30)), ((220, 130, 200), (240, 170, 220)))
NUMBERS = ("no", "one", "two", "three")
CAPTION_TAIL = {
    "good": "", "blurry": ", out of focus", "low_fps": ", choppy low frame rate",
    "many_cuts": ", with the backdrop cutting every quarter second", "low_snr": ", buried in loud hiss",
    "silent": ", then silence", "clipped": ", loud and distorted", "small": ", low resolution",
    "no_audio": "",
}


# ----------------------------------------------------------------------------- ids and params

def clip_ids(sp: dict) -> list[str]:
    """Ids the sample will produce, from params alone (the Snakefile lists outputs at parse time)."""
    sp = {**DEFAULT_SAMPLE, **(sp or {})}
    return [f"av{i:04d}" for i in range(int(sp["n_good"]))] + [f"avfail_{k}" for k in sp["failures"]]


def _check(sp: dict) -> None:
    """Fail fast, naming the params key, on values that would give a broken sample."""
    def bad(key: str, what: str):
        raise ValueError(f"params key 'sample.{key}' {what}, got {sp[key]!r}")
    if isinstance(sp["n_good"], bool) or not isinstance(sp["n_good"], int) or sp["n_good"] < 0:
        bad("n_good", "must be an integer >= 0")
    if isinstance(sp["seconds"], bool) or not isinstance(sp["seconds"], (int, float)) or not 0.5 <= sp["seconds"] <= 600:
        bad("seconds", "must be a number of seconds in [0.5, 600]")
    for key in ("width", "height"):
        if isinstance(sp[key], bool) or not isinstance(sp[key], int) or sp[key] < 64 or sp[key] % 2:
            bad(key, "must be an even integer >= 64")
    if isinstance(sp["fps"], bool) or not isinstance(sp["fps"], (int, float)) or not 1 <= sp["fps"] <= 240:
        bad("fps", "must be a frame rate in [1, 240]")
    if isinstance(sp["sample_rate"], bool) or not isinstance(sp["sample_rate"], int) or not 8000 <= sp["sample_rate"] <= 96000:
        bad("sample_rate", "must be an integer rate in [8000, 96000]")
    unknown = [k for k in sp["failures"] if k not in FAILURE_KINDS]
    if unknown or len(set(sp["failures"])) != len(sp["failures"]):
        bad("failures", f"must be distinct kinds among {', '.join(FAILURE_KINDS)}")


def _rng(seed: int, purpose: int, index: int) -> np.random.Generator:
    """Independent stream per (purpose, index): a clip does not depend on how many others exist."""
    return np.random.default_rng([int(seed), purpose, index])


# ----------------------------------------------------------------------------- motion

@dataclass(frozen=True)
class Body:
    """One bouncing object; lengths in frame heights, times in seconds."""

    shape: str
    colour: str
    rgb: tuple[int, int, int]
    radius: float
    x0: float              # horizontal start, fraction of the way across the centred square
    vx: float              # frame heights per second (reflects at the square's sides, silently)
    apex: float
    segments: np.ndarray   # (n, 3): start time, height, upward velocity of each flight
    impacts: np.ndarray    # (m, 2): time, impact speed

    def height(self, t: np.ndarray) -> np.ndarray:
        """Height of the object's bottom above the floor at times ``t``."""
        t = np.asarray(t, np.float64)
        i = np.clip(np.searchsorted(self.segments[:, 0], t, side="right") - 1, 0, len(self.segments) - 1)
        t0, h0, v0 = self.segments[i].T
        dt = t - t0
        return np.maximum(0.0, h0 + v0 * dt - 0.5 * GRAVITY * dt * dt)

    def x(self, t: np.ndarray, aspect: float) -> np.ndarray:
        """Centre x in frame widths: a triangle wave between the sides of the centred square of the
        frame (``aspect`` = width / height), so that a square centre crop (the format stage's) keeps
        the object in view."""
        half = 0.5 * min(1.0, 1.0 / aspect)
        lo = 0.5 - half + self.radius / aspect
        span = max(1e-6, 2 * (half - self.radius / aspect))
        u = np.mod(self.x0 * span + self.vx / aspect * np.asarray(t, np.float64), 2 * span)
        return lo + np.where(u > span, 2 * span - u, u)


def flights(h0: float, v0: float, apex: float, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Analytic bouncing: (flight segments [t, h, v], impacts [t, speed]) up to ``seconds``.

    After the first landing every bounce leaves at the speed that reaches ``apex`` (a lively ball:
    all flights last the same 2 sqrt(2 apex / g), so the impacts keep their place on the frame grid)."""
    segs, hits = [(0.0, h0, v0)], []
    t, h, v = 0.0, h0, v0
    v_apex = math.sqrt(2 * GRAVITY * apex)
    while True:
        dt = (v + math.sqrt(v * v + 2 * GRAVITY * h)) / GRAVITY      # time to reach the floor
        t += dt
        if t > seconds:
            break
        hits.append((t, math.sqrt(v * v + 2 * GRAVITY * h)))
        h, v = 0.0, v_apex
        segs.append((t, h, v))
    return np.asarray(segs, np.float64), np.asarray(hits, np.float64).reshape(-1, 2)


def launch(apex: float, first_impact: float) -> tuple[float, float]:
    """(height, upward velocity) at t = 0 of an object in a flight to ``apex`` that lands at
    ``first_impact`` (clamped to the flight's length)."""
    flight = 2 * math.sqrt(2 * apex / GRAVITY)
    s = flight - min(first_impact, flight)                             # time already spent in the air
    v_up = GRAVITY * flight / 2
    return max(0.0, v_up * s - 0.5 * GRAVITY * s * s), v_up - GRAVITY * s


def plan_bodies(rng: np.random.Generator, seconds: float) -> list[Body]:
    """The scene's objects (one; see the module docstring), the first being the tone's source."""
    name, rgb = PALETTE[int(rng.integers(len(PALETTE)))]
    shape = str(rng.choice(list(SHAPES)))
    radius = float(rng.uniform(*RADIUS))
    apex = GRAVITY * FLIGHT * FLIGHT / 8                                # a flight of FLIGHT s
    first = (FIRST_IMPACT_FRAMES + float(rng.uniform(-JITTER_FRAMES, JITTER_FRAMES))) / EVENT_FPS
    segs, hits = flights(*launch(apex, first), apex, seconds)
    x0, vx = float(rng.uniform(0.0, 1.0)), float(rng.uniform(-VX, VX))
    return [Body(shape, name, rgb, radius, x0, vx, apex, segs, hits)]


# ----------------------------------------------------------------------------- pictures

def backdrop(rng: np.random.Generator, floor: tuple, wall: tuple, w: int, h: int, pattern: str) -> np.ndarray:
    """Wall above a textured floor, float32 RGB; per-pixel grain keeps the Laplacian variance high."""
    fy = int(round(FLOOR_Y * h))
    shade = np.ones((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if pattern == "wooden":
        plank = (xx // max(4, w // 7) + (yy // max(3, h // 24)) * 3) % 5
        shade[fy:] = (0.8 + 0.06 * plank + 0.08 * np.sin(yy * 0.9 + 0.05 * xx))[fy:]
    elif pattern == "tiled":
        cell = max(6, h // 12)
        grout = (xx % cell < 2) | (yy % cell < 2)
        shade[fy:] = np.where(grout, 0.55, 1.0)[fy:]
    elif pattern == "carpeted":
        shade[fy:] = (0.9 + 0.1 * np.sin(xx * 1.3) * np.sin(yy * 1.1))[fy:]
    big = cv2.resize(rng.standard_normal((max(2, h // 16), max(2, w // 16))).astype(np.float32), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    shade *= 1.0 + 0.06 * big
    shade[fy - max(1, h // 160):fy + max(1, h // 160)] *= 0.6                  # skirting line
    img = np.empty((h, w, 3), np.float32)
    img[:fy] = np.asarray(wall, np.float32)
    img[fy:] = np.asarray(floor, np.float32)
    img *= shade[..., None]
    img += rng.normal(0.0, 12.0, (h, w, 1)).astype(np.float32)            # grain (brightness only)
    return img


def draw_frame(bg: np.ndarray, bodies: list[Body], t: float) -> np.ndarray:
    """One uint8 frame at time ``t``: shadows first, then the objects with a highlight."""
    h, w = bg.shape[:2]
    img = bg.copy()
    fy = FLOOR_Y * h
    for b in bodies:
        r = b.radius * h
        cx, lift = float(b.x(t, w / h)) * w, float(b.height(t)) * h
        sw = max(1, int(round(r * (1.0 - 0.5 * min(1.0, lift / (0.7 * h))))))
        cv2.ellipse(img, (int(round(cx)), int(round(fy))), (sw, max(1, sw // 4)), 0, 0, 360,
                    (40, 40, 40), -1, cv2.LINE_AA)
    for b in bodies:
        r = b.radius * h
        cx, cy = float(b.x(t, w / h)) * w, fy - float(b.height(t)) * h - r
        c = tuple(float(v) for v in b.rgb)
        if b.shape == "disc":
            cv2.circle(img, (int(round(cx)), int(round(cy))), int(round(r)), c, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (int(round(cx - r)), int(round(cy - r))), (int(round(cx + r)), int(round(cy + r))), c, -1,
                          cv2.LINE_AA)
        light = tuple(v + 0.45 * (255 - v) for v in c)
        cv2.circle(img, (int(round(cx - 0.35 * r)), int(round(cy - 0.35 * r))), max(1, int(round(0.22 * r))), light, -1,
                   cv2.LINE_AA)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_video(rng: np.random.Generator, bodies: list[Body], kind: str, size: tuple[int, int], fps: float,
                 seconds: float, floor: tuple) -> np.ndarray:
    """All frames (N, H, W, 3) uint8 of one clip; the ``kind`` decides blur and backdrop switches."""
    w, h = size
    n = int(round(seconds * fps))
    if kind == "many_cuts":
        backs = [backdrop(rng, f, wl, w, h, "stone") for f, wl in CUT_BACKDROPS]
    else:
        backs = [backdrop(rng, floor[1], floor[2], w, h, floor[0])]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        t = i / fps
        frames[i] = draw_frame(backs[int(t / CUT_EVERY + 1e-9) % len(backs)], bodies, t)
        if kind == "blurry":
            frames[i] = cv2.GaussianBlur(frames[i], (0, 0), BLUR_SIGMA * h / 480.0)
    return frames


# ----------------------------------------------------------------------------- sound

def tone(source: Body, sr: int, n: int) -> np.ndarray:
    """The source's sine: pitch follows its height (TONE_HZ from the floor to its apex), phase
    accumulated sample by sample so that the pitch glides without clicks."""
    t = np.arange(n, dtype=np.float64) / sr
    frac = np.clip(source.height(t) / source.apex, 0.0, 1.0)
    freq = TONE_HZ[0] + (TONE_HZ[1] - TONE_HZ[0]) * frac
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return TONE_AMP * np.sin(phase)


def impact_sound(rng: np.random.Generator, body: Body, speed: float, sr: int) -> np.ndarray:
    """A short decaying noise burst (the click) plus a low decaying thump (lower for bigger objects);
    louder for a faster impact."""
    n = int(0.15 * sr)
    tau = np.arange(n, dtype=np.float64) / sr
    amp = 0.25 + 0.35 * min(1.0, speed / math.sqrt(2 * GRAVITY * body.apex))
    thump_hz = 90.0 + 70.0 * (RADIUS[1] - body.radius) / (RADIUS[1] - RADIUS[0])
    burst = rng.standard_normal(n) * np.exp(-tau / 0.012)
    thump = np.sin(2 * np.pi * thump_hz * tau) * np.exp(-tau / 0.045)
    return amp * (0.6 * burst + thump)


def render_audio(rng: np.random.Generator, bodies: list[Body], kind: str, sr: int, seconds: float) -> np.ndarray:
    """Mono float32 mix: the source's tone, every impact at its exact sample, ambient noise;
    then the one audio fault of ``kind`` (low_snr, silent, clipped), if any."""
    n = int(round(seconds * sr))
    sig = tone(bodies[0], sr, n)
    for b in bodies:
        for t, speed in b.impacts:
            i = int(round(t * sr))
            s = impact_sound(rng, b, float(speed), sr)[: max(0, n - i)]
            sig[i:i + len(s)] += s
    sig *= PEAK / max(PEAK, float(np.max(np.abs(sig))))
    mix = sig + rng.normal(0.0, NOISE_STD, n)
    if kind == "low_snr":       # white noise as loud as the signal (SNR about 0 dB)
        mix = sig + rng.normal(0.0, math.sqrt(float(np.mean(sig ** 2))), n)
        mix *= PEAK / float(np.max(np.abs(mix)))
    elif kind == "silent":
        mix[int(SILENT_AFTER * n):] = 0.0
    elif kind == "clipped":
        mix = np.clip(mix * CLIP_GAIN, -1.0, 1.0)
    return mix.astype(np.float32)


# ----------------------------------------------------------------------------- encoding

def encode_clip(path: Path, frames: np.ndarray, fps: float, audio: np.ndarray | None, sr: int, enc: dict) -> None:
    """Mux H.264 (yuv420p, the build's x264 settings) and, when given, mono AAC into ``path``,
    bit-exactly. Frames go through a pipe, audio through a raw f32le file next to ``path``."""
    n, h, w, _ = frames.shape
    raw = path.with_name(f".{path.name}.f32")
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", str(Fraction(fps).limit_denominator(1001)), "-protocol_whitelist", "pipe", "-i", "pipe:0"]
    maps = ["-map", "0:v:0"]
    acodec: list[str] = []
    if audio is not None:
        raw.write_bytes(np.ascontiguousarray(audio, "<f4").tobytes())
        cmd += ["-f", "f32le", "-ar", str(sr), "-ac", "1", "-protocol_whitelist", "file", "-i", ffmpeg_url(raw)]
        maps += ["-map", "1:a:0"]
        acodec = ["-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(sr), "-ac", "1", "-flags:a", "+bitexact"]
    cmd += [*maps, *x264_args(int(enc["crf"]), str(enc["preset"]), int(enc["threads"])), *acodec, "-f", "mp4",
            ffmpeg_url(path)]
    try:
        res = run_tool(cmd, path, "encode", "encode", input=np.ascontiguousarray(frames).tobytes())
    finally:
        raw.unlink(missing_ok=True)
    if res.returncode != 0:
        raise MediaError(f"{path}: encode failed ({res.stderr.decode(errors='replace').strip()[-300:]})")


# ----------------------------------------------------------------------------- captions and driver

def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def caption(bodies: list[Body], floor: str, kind: str) -> str:
    """From the generator's metadata, e.g. "an orange ball bouncing on a wooden floor with impact
    sounds and a rising and falling tone" (several objects: "two red and blue balls ...")."""
    groups: dict[str, list[str]] = {}
    for b in bodies:
        groups.setdefault(SHAPES[b.shape], []).append(b.colour)
    things = [f"{'an' if cs[0][0] in 'aeiou' else 'a'} {cs[0]} {noun}" if len(cs) == 1 else f"{NUMBERS[len(cs)]} {_join(cs)} {noun}s"
              for noun, cs in groups.items()]
    where = "a floor" if kind == "many_cuts" else f"a {floor} floor"
    sound = "" if kind == "no_audio" else " with impact sounds and a rising and falling tone"
    return f"{_join(things)} bouncing on {where}{sound}{CAPTION_TAIL[kind]}"


def _make_clip(out: Path, cid: str, kind: str, index: int, sp: dict, seed: int, enc: dict) -> tuple[dict, dict]:
    """Plan, render, encode one clip; returns (manifest row, truth record)."""
    seconds, sr = float(sp["seconds"]), int(sp["sample_rate"])
    scene = _rng(seed, 1, index)
    bodies = plan_bodies(scene, seconds)
    floor = FLOORS[int(scene.integers(len(FLOORS)))]
    size = SMALL_SIZE if kind == "small" else (int(sp["width"]), int(sp["height"]))
    fps = LOW_FPS if kind == "low_fps" else sp["fps"]
    frames = render_video(_rng(seed, 2, index), bodies, kind, size, fps, seconds, floor)
    audio = None if kind == "no_audio" else render_audio(_rng(seed, 3, index), bodies, kind, sr, seconds)
    rel = f"clips/{cid}.mp4"
    encode_clip(out / rel, frames, fps, audio, sr, enc)
    events = sorted(round(float(t), 6) for b in bodies for t in b.impacts[:, 0])
    text = caption(bodies, floor[0], kind)
    log.info("%s (%s): %dx%d @ %s fps, %d objects, %d impacts", cid, kind, size[0], size[1], fps, len(bodies),
             len(events))
    truth = {"kind": kind, "expect": None if kind == "good" else kind, "events": events, "caption": text,
             "fps": fps, "size": list(size), "seconds": seconds,
             "objects": [{"shape": b.shape, "colour": b.colour, "radius": round(b.radius, 6), "apex": round(b.apex, 6),
                          "source": i == 0} for i, b in enumerate(bodies)]}
    return {"id": cid, "source": rel, "caption": text}, truth


def make_sample(out_dir: str | os.PathLike, params: dict, seed: int, encoder: dict) -> dict:
    """Write the sample into ``out_dir`` (replaced atomically): ``clips/<id>.mp4``, ``manifest.csv``
    (id,source,caption), ``truth.json``. Returns ``{"manifest": rows, "truth": {id: record}}``.

    ``params`` is the ``sample`` section (DEFAULT_SAMPLE fills gaps), ``encoder`` the x264
    settings (crf, preset, threads). Clips are independent, so two are made at a time (one
    renders while the other encodes); the bytes do not depend on this.
    """
    sp = {**DEFAULT_SAMPLE, **(params or {})}
    _check(sp)
    enc = {**DEFAULT_ENCODER, **(encoder or {})}
    ids = clip_ids(sp)
    jobs = [(cid, "good", i) for i, cid in enumerate(ids[: sp["n_good"]])]
    jobs += [(f"avfail_{k}", k, 100_000 + FAILURE_KINDS.index(k)) for k in sp["failures"]]
    with atomic_path(Path(out_dir), directory=True) as tmp:
        (tmp / "clips").mkdir()
        workers = max(1, min(2, os.cpu_count() or 1, len(jobs)))
        with ThreadPoolExecutor(workers) as pool:
            made = list(pool.map(lambda j: _make_clip(tmp, j[0], j[1], j[2], sp, int(seed), enc), jobs))
        rows = [r for r, _ in made]
        truth = {r["id"]: t for r, t in made}
        write_csv(tmp / "manifest.csv", ["id", "source", "caption"], [[r["id"], r["source"], r["caption"]] for r in rows])
        write_json(tmp / "truth.json", truth)
    return {"manifest": rows, "truth": truth}


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Generate the AVGen-DiT sample: procedural clips with sound and known impact times, "
                    "plus clips planted to fail each filter. --params: {seed, sample, video}.")
    ap.add_argument("--out", required=True, type=Path, help="output directory (replaced)")
    args = ap.parse_args(argv)
    p = args.params or {}
    res = make_sample(args.out, p.get("sample") or {}, int(p.get("seed", 0)), p.get("video") or {})
    log.info("wrote %d clips to %s", len(res["manifest"]), args.out)
