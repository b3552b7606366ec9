"""Edit one video: put a new product into a template clip with a trained PVTT model.

``python -m pvtt generate --template V --product I --model M --steps N --out O.mp4``

The template is decoded at the model's training resolution (``train_data`` in params), the
product region is segmented with the build's mask backend (or read from ``--mask``, an
(N, H, W) .npy), the product image is cut out with the build's matting backend unless it
already has an alpha channel, and the model samples the edited clip with flow-matching Euler
steps (shift from the model's config; CFG for a teacher, none for a student, whose guidance
is distilled in). The output is an mp4 at the template's frame rate, plus, with
``--side-by-side``, a template | product | edit strip.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from genbuild.io.video import MediaError, probe, read_frames, write_video
from genbuild.stage import setup_logging
from genbuild.workflow import namespace
from pvtt.deploy.editor import Edit, Editor
from pvtt.models.dit import read_config
from pvtt.train.data import frame_indices

log = logging.getLogger(__name__)


class GenerateError(ValueError):
    pass


def load_product(path: Path, params: dict) -> np.ndarray:
    """RGBA uint8: the image's own alpha when it has one, else the build's matting backend's."""
    from pvtt.data.products import get_backend, validate_params

    try:
        im = Image.open(path)
        im.load()
    except FileNotFoundError:
        raise GenerateError(f"--product: '{path}' does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise GenerateError(f"--product: '{path}' is not a readable image ({e})") from None
    if im.mode in ("RGBA", "LA") or "transparency" in im.info:
        return np.asarray(im.convert("RGBA"))
    rgb = np.asarray(im.convert("RGB"))
    cfg = validate_params(params)
    alpha = get_backend(cfg).matte(rgb)
    if alpha.max() == 0:
        raise GenerateError(f"--product: no product found in '{path}' by the {cfg['backend']} matting")
    return np.dstack([rgb, alpha])


def template_mask(frames: np.ndarray, mask_path: Path | None, params: dict, category: str | None = None) -> np.ndarray:
    """(N, H, W) bool: from ``--mask`` (resized to the frames) or from the build's mask backend."""
    import cv2

    from pvtt.data.masks import get_backend, validate_params

    n, h, w = frames.shape[:3]
    if mask_path is not None:
        m = np.load(mask_path)
        if m.ndim != 3 or len(m) < n:
            raise GenerateError(f"--mask: '{mask_path}' must be (frames, H, W) with at least {n} frames, got {m.shape}")
        m = np.stack([cv2.resize(f.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for f in m[:n]]) > 0
    else:
        cfg = validate_params(params)
        m = get_backend(cfg["backend"], cfg).segment(frames, category)  # a text-prompted backend needs it
    if not m[0].any():
        raise GenerateError("no product region found in the template's first frame: pass --mask FRAMES.npy")
    return m


def read_template(path: Path, td: dict) -> tuple[np.ndarray, float]:
    """The template's frames at the model's training size and frame count, and the frame rate the
    edit is written at (the template's, over the frame stride)."""
    try:
        info = probe(path)
    except MediaError as e:
        raise GenerateError(f"--template: {e}") from None
    frames = read_frames(path, size=(int(td["width"]), int(td["height"])))
    frames = frames[frame_indices(len(frames), int(td["frames"]), int(td["frame_stride"]))]
    return frames, info.fps / int(td["frame_stride"])  # probe guarantees a positive frame rate


@dataclass
class FileEdit:
    """One edit of a template file with a product image file, and what it was made from."""

    frames: np.ndarray      # the template as the model saw it
    mask: np.ndarray
    rgba: np.ndarray
    fps: float
    steps: int
    cfg_scale: float
    result: Edit


def edit_files(editor: Editor, template: Path, product: Path, params: dict, caption: str = "", steps: int | None = None,
               cfg_scale: float | None = None, seed: int = 0, mask_path: Path | None = None, category: str | None = None,
               on_step=None) -> FileEdit:
    """The whole edit of two files, as ``generate`` and the service run it: template frames, the mask
    backend (or ``mask_path``), the matting, then the editor with the student's own steps and no CFG
    (a teacher: ``eval.teacher_steps`` and ``eval.cfg_scale``) and ``eval.keep_background``."""
    td = params["train_data"]
    frames, fps = read_template(template, td)
    mask = template_mask(frames, mask_path, params, category)
    rgba = load_product(product, params)
    steps, cfg_scale = editor.sampling(params["eval"], steps, cfg_scale)
    keep = params["eval"].get("keep_background") or {}
    result = editor.edit(frames, mask, rgba, caption, int(td["reference_size"]), steps, cfg_scale, seed,
                         int(keep.get("dilate", 1)) if keep.get("enabled") else None, on_step)
    return FileEdit(frames, mask, rgba, fps, steps, cfg_scale, result)


def generate(template: Path, product: Path, model_dir: Path, out: Path, params: dict, steps: int | None = None,
             cfg_scale: float | None = None, caption: str = "", mask_path: Path | None = None, seed: int = 0,
             side_by_side: bool = False, category: str | None = None, editor: Editor | None = None) -> dict:
    """Edit one template file; ``editor``: a model already loaded (else ``model_dir`` with ``deploy``'s settings)."""
    td = params["train_data"]
    read_config(model_dir)  # names the missing file when the model is absent
    editor = editor or editor_from_params(model_dir, params)
    e = edit_files(editor, template, product, params, caption, steps, cfg_scale, seed, mask_path, category)
    edited = e.result.frames
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, edited, e.fps)
    if side_by_side:
        from genbuild.media import on_white
        from genbuild.media import side_by_side as strip

        tiles = strip([("template", e.frames), ("product", on_white(e.rgba)), ("edit", edited)])
        write_video(out.with_name(out.stem + "_side_by_side.mp4"), np.stack(tiles), e.fps)
    out_info = {"out": str(out), "model": str(model_dir), "kind": editor.config.get("kind", "model"), "form": editor.form,
                "steps": e.steps, "cfg_scale": e.cfg_scale, "frames": int(len(edited)), "size": [int(td["width"]), int(td["height"])],
                "mask_fraction": round(float(e.mask.mean()), 4), "seconds": round(e.result.seconds["total"], 3)}
    log.info("generate: %s", out_info)
    return out_info


def editor_from_params(model_dir: Path, params: dict, threads: int = 1) -> Editor:
    """The model of ``model_dir`` with ``deploy``'s form, attention kernel and compile setting."""
    dp = params.get("deploy") or {}
    form = dp.get("form", "pytorch")
    return Editor(model_dir, form, Path(dp.get("engine", "artifacts/engine")) if form != "pytorch" else None,
                  dp.get("attention", "sdpa"), bool(dp.get("compile", False)), threads)


def main(argv=None) -> int:
    setup_logging()
    ap = argparse.ArgumentParser(prog="python -m pvtt generate", description=__doc__.splitlines()[0])
    ap.add_argument("--template", required=True, type=Path, help="template video (the product showcase to edit)")
    ap.add_argument("--product", required=True, type=Path, help="new product image (RGBA cut-out or on white)")
    ap.add_argument("--model", required=True, type=Path, help="model dir, e.g. artifacts/student_4 or artifacts/teacher")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the student's own, or eval.teacher_steps)")
    ap.add_argument("--cfg", type=float, default=None, help="CFG scale (default: 1 for students, eval.cfg_scale for the teacher)")
    ap.add_argument("--caption", default="", help="caption of the new product")
    ap.add_argument("--category", default=None, help="the template product's category (prompt of masks.backend grounded_sam2)")
    ap.add_argument("--mask", type=Path, default=None, help="(frames, H, W) .npy product mask of the template")
    ap.add_argument("--out", type=Path, default=Path("edited.mp4"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side-by-side", action="store_true", help="also write <out>_side_by_side.mp4")
    a = ap.parse_args(argv)
    try:
        params = namespace(yaml.safe_load(a.params.read_text()), "pvtt")  # PVTT's keys with the shared ones
        r = generate(a.template, a.product, a.model, a.out, params, a.steps, a.cfg, a.caption, a.mask, a.seed,
                     a.side_by_side, a.category)
    except (GenerateError, FileNotFoundError, ValueError) as e:
        print(f"generate: {e}", file=sys.stderr)
        return 2
    print(r["out"])
    return 0
