"""`python -m pvtt generate`: one template + one product image -> an edited mp4, with the build's
own mask and matting backends, a real (tiny) trained teacher, and clear errors on bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_checkpoint import TD, make_tiny_latents, teacher_params

from genbuild.io.video import probe, read_frames, write_video
from genbuild.workflow import namespace
from pvtt.deploy.generate import GenerateError, generate

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from pvtt.train.teacher import train_teacher

    base = tmp_path_factory.mktemp("gen")
    train_teacher(make_tiny_latents(base), base / "teacher", teacher_params(iterations=2))
    # Template: a red box gliding over a soft grey gradient, 64x64, 12 frames at 24 fps.
    yy, xx = np.mgrid[0:64, 0:64]
    frames = []
    for f in range(12):
        im = np.dstack([100 + xx, 100 + xx, 110 + yy]).clip(0, 255).astype(np.uint8)
        x0 = 16 + f
        im[22:42, x0:x0 + 18] = (200, 30, 30)
        frames.append(im)
    write_video(base / "template.mp4", np.stack(frames), 24)
    prod = np.full((48, 48, 3), 255, np.uint8)
    prod[10:38, 14:34] = (20, 60, 200)  # a blue product on white: the white matting cuts it out
    Image.fromarray(prod).save(base / "product.png")
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    full["pvtt"]["train_data"] = TD
    (base / "params.yaml").write_text(yaml.safe_dump(full))
    return base, namespace(full, "pvtt")


def test_generate_writes_the_edit_with_auto_mask_and_matting(setup):
    base, params = setup
    out = base / "out" / "edited.mp4"
    r = generate(base / "template.mp4", base / "product.png", base / "teacher", out, params, steps=3,
                 side_by_side=True)
    assert r["kind"] == "teacher" and r["steps"] == 3 and r["frames"] == TD["frames"]
    assert 0.05 < r["mask_fraction"] < 0.3, r  # the red box, found by the build's mask backend
    info = probe(out)
    assert (info.width, info.height) == (TD["width"], TD["height"])
    edited = read_frames(out)
    assert len(edited) == TD["frames"] and edited.std() > 1
    assert (base / "out" / "edited_side_by_side.mp4").exists()


@pytest.mark.slow  # several processes: make test, not test-fast
def test_cli_and_errors_name_the_input(setup, tmp_path):
    base, _ = setup
    cmd = [sys.executable, "-m", "pvtt", "generate", "--template", str(base / "template.mp4"),
           "--product", str(base / "product.png"), "--model", str(base / "teacher"), "--steps", "2",
           "--params", str(base / "params.yaml"), "--out", str(tmp_path / "e.mp4")]
    ok = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip().endswith("e.mp4") and (tmp_path / "e.mp4").exists()
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    for flag, value, message in (("--product", tmp_path / "broken.png", "broken.png' is not a readable image"),
                                 ("--template", tmp_path / "broken.mp4", "broken.mp4"),
                                 ("--model", tmp_path / "no_model", "no_model/config.json")):
        bad = list(cmd)
        bad[bad.index(flag) + 1] = str(value)
        res = subprocess.run(bad, capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 2 and message in res.stderr, (flag, res.stderr[-1500:])
    empty = np.zeros((TD["frames"], 8, 8), bool)
    np.save(tmp_path / "empty.npy", empty)
    with pytest.raises(GenerateError, match="pass --mask"):
        generate(base / "template.mp4", base / "product.png", base / "teacher", tmp_path / "x.mp4",
                 namespace(yaml.safe_load((base / "params.yaml").read_text()), "pvtt"), steps=1, mask_path=tmp_path / "empty.npy")
