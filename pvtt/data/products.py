"""Products stage: reference images of one product -> RGBA cut-outs (manifest -> ``products/<id>/``).

Each view image of the product goes through a matting backend (``products.backend``) that
returns an alpha matte; the RGBA result is cropped to the matte's bounding box plus
``products.pad`` pixels (transparent padding where the box meets the image border).

Backends (registry ``BACKENDS``):

* ``white_matting`` (weight-free): product shots on a white background. A pixel is
  foreground when some channel is below ``products.white_threshold`` both after a 3x3 blur
  and in the pixel itself (no dark halo around the product); speckles are removed (3x3
  opening); silhouette pixels less than half covered are dropped (:func:`refine_edge`);
  holes enclosed by the product are filled, except see-through gaps (at least
  ``products.open_hole_min_frac`` of the object and within ``products.hole_bg_tolerance``
  of the background's colour, e.g. inside a bag handle); components smaller
  than ``products.min_component_frac`` of the largest dropped, and the edge feathered by
  ``products.feather`` pixels.
* ``rembg`` (U^2-Net, BiRefNet, ... through the rembg package): runs the local ONNX file
  ``products.rembg_model``; its file name picks rembg's session, i.e. the pre/post-processing
  (see ``REMBG_SESSIONS``): ``u2net.onnx``, ``u2netp.onnx``, ``u2net_human_seg.onnx``,
  ``silueta.onnx`` (320 px, ImageNet mean/std, first output = sigmoid matte),
  ``isnet-general-use.onnx``, ``isnet-anime.onnx`` (1024 px DIS), ``birefnet-general.onnx``,
  ``birefnet-general-lite.onnx``, ``birefnet-general-fp16.onnx``, ``birefnet-portrait.onnx``,
  ``birefnet-dis.onnx``, ``birefnet-hrsod.onnx``, ``birefnet-cod.onnx``, ``birefnet-massive.onnx``
  (1024 px, first output = logits, rembg applies the sigmoid), ``bria-rmbg.onnx`` (1024 px).
  The file is handed to onnxruntime directly: the session class's ``download_models`` is
  overridden. (rembg 2.0.86 returns ``<home>/models/<name>/<name>.onnx`` or
  ``<U2NET_HOME>/<name>.onnx`` when one exists and otherwise downloads with ``pooch.retrieve``;
  older releases always call ``pooch.retrieve`` with the release file's md5, which re-downloads
  a local file whose hash differs, e.g. a re-export, unless ``MODEL_CHECKSUM_DISABLED`` is set.)
  So no network access happens whatever the rembg version, and no environment variable
  (``U2NET_HOME``, ``MODEL_CHECKSUM_DISABLED``) is needed or changed. A missing file stops the
  stage naming the path and ``dvc pull models/rembg``; so do an unknown file name, a file
  onnxruntime cannot load and a missing rembg package. Never a silent fallback.

Output directory ``products/<id>/``::

    <view>.png     RGBA (write_png)
    product.json   {"id", "status": "ok"|"rejected", "reason", "backend", "category", "name",
                    "caption", "views": [{"view", "path" (file name), "source", "width",
                    "height", "aspect" (w/h), "alpha_frac" (mean alpha / 255),
                    "src_box": [x0, y0, x1, y1] of the cut-out in source pixels}]}
    rejects.jsonl  stage "products": unreadable images, empty mattes, ...
"""
from __future__ import annotations

import abc
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_json
from genbuild.io.rejects import Rejects
from genbuild.io.video import ImageTooLargeError, MediaError, read_image, write_png
from genbuild.registry import Registry
from pvtt.data import ingest
from pvtt.data.backends import BackendError
from pvtt.data.ingest import ManifestError, SourceError, find_product, load_manifest

log = logging.getLogger("pvtt.data.products")

STAGE = "products"
DEFAULTS = {"backend": "white_matting", "white_threshold": 232, "feather": 1, "pad": 4,
            "rembg_model": "models/rembg/u2net.onnx", "min_component_frac": 0.1, "max_alpha_frac": 0.98,
            "open_hole_min_frac": 0.01, "hole_bg_tolerance": 2.0, "max_pixels": 80_000_000}
_VIEW_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")




# ----------------------------------------------------------------------------- backends

class MattingBackend(abc.ABC):
    """Image (H, W, 3) uint8 RGB -> alpha matte (H, W) uint8 (255 = product)."""

    name: str = ""

    def __init__(self, cfg: dict):
        self.cfg = cfg

    @abc.abstractmethod
    def matte(self, rgb: np.ndarray) -> np.ndarray:
        ...


def fill_holes(mask: np.ndarray, rgb: np.ndarray | None = None, open_min_frac: float = 1.0,
               bg_tolerance: float = 0.0) -> np.ndarray:
    """Set background regions not connected to the image border (holes in the object).

    With ``rgb``, a hole stays open (a see-through gap, e.g. inside a bag handle) when it is
    at least ``open_min_frac`` of the filled object's area and its median colour is within
    ``bg_tolerance`` (every channel) of the outer background's median colour. Smaller or
    differently coloured holes (highlights, white labels) are filled.
    """
    inv = (~mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    if n <= 1:
        return mask.copy()
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    outside = np.isin(labels, border)
    filled = ~outside
    if rgb is None or not outside.any():
        return filled
    area = int(filled.sum())
    on_border = set(border.tolist())
    big = [lab for lab in range(1, n) if lab not in on_border
           and stats[lab, cv2.CC_STAT_AREA] >= open_min_frac * area]
    if big:
        bg = np.median(rgb[outside], axis=0)
        for lab in big:
            hole = labels == lab
            if np.abs(np.median(rgb[hole], axis=0) - bg).max() <= bg_tolerance:
                filled[hole] = False
    return filled


def keep_large_components(mask: np.ndarray, min_frac: float) -> np.ndarray:
    """Keep the largest 8-connected component and every one at least ``min_frac`` of its area."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.copy()
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(1.0, min_frac * areas.max())) + 1
    return np.isin(labels, keep)


def refine_edge(mask: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Drop edge pixels that are less than half as far from white as the product next to them.

    A pixel on the silhouette is a mix of product and white; it belongs to the product when
    its coverage is at least 1/2, i.e. when its darkness (255 - min channel) is at least half
    the darkness of the darkest interior pixel beside it. Edge pixels with no interior
    neighbour (1-2 px thin parts) are kept.
    """
    k = np.ones((3, 3), np.uint8)
    interior = cv2.erode(mask.astype(np.uint8), k, borderType=cv2.BORDER_REPLICATE).astype(bool)
    dark = 255.0 - rgb.min(axis=2).astype(np.float32)
    ref = cv2.dilate(np.where(interior, dark, 0.0).astype(np.float32), k)
    edge = mask & ~interior
    drop = edge & (ref > 0) & (dark < 0.5 * ref)
    return mask & ~drop


class WhiteMatting(MattingBackend):
    """Weight-free matting of product shots on a white background."""

    name = "white_matting"

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        thr = self.cfg["white_threshold"]
        blur = cv2.GaussianBlur(rgb, (3, 3), 0)
        # Non-white after the blur (robust to isolated noisy pixels) and itself non-white (no halo).
        fg = (blur.min(axis=2) < thr) & (rgb.min(axis=2) < thr)
        fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
        fg = refine_edge(fg, rgb)
        if not fg.any():
            return np.zeros(fg.shape, np.uint8)
        fg = fill_holes(fg, rgb, self.cfg["open_hole_min_frac"], self.cfg["hole_bg_tolerance"])
        fg = keep_large_components(fg, self.cfg["min_component_frac"])
        alpha = fg.astype(np.float32)
        f = int(self.cfg["feather"])
        if f > 0:
            alpha = cv2.GaussianBlur(alpha, (2 * f + 1, 2 * f + 1), f / 2.0, borderType=cv2.BORDER_REPLICATE)
        return np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)


# rembg session name (= the model file's stem) -> what it is. Only sessions that run one local
# ONNX file and return one matte; sam (two files + prompts), u2net_cloth_seg (three garment masks),
# the *_custom sessions (a model_path under rembg's home) and the remote ones are left out.
REMBG_SESSIONS = {
    "u2net": "U^2-Net, general salient objects (320 px)",
    "u2netp": "U^2-Net lite (320 px)",
    "u2net_human_seg": "U^2-Net, people (320 px)",
    "silueta": "U^2-Net, reduced (320 px)",
    "isnet-general-use": "IS-Net / DIS, general (1024 px)",
    "isnet-anime": "IS-Net, anime characters (1024 px)",
    "birefnet-general": "BiRefNet, general (1024 px)",
    "birefnet-general-lite": "BiRefNet lite, general (1024 px)",
    "birefnet-general-fp16": "BiRefNet general converted to float16 (1024 px, for GPUs)",
    "birefnet-portrait": "BiRefNet, portraits (1024 px)",
    "birefnet-dis": "BiRefNet, DIS dichotomous segmentation (1024 px)",
    "birefnet-hrsod": "BiRefNet, high-resolution salient objects (1024 px)",
    "birefnet-cod": "BiRefNet, camouflaged objects (1024 px)",
    "birefnet-massive": "BiRefNet trained on a massive dataset (1024 px)",
    "bria-rmbg": "BRIA RMBG 2.0 (1024 px; non-commercial licence)",
}


class RembgMatting(MattingBackend):
    """Salient-object matting via rembg from a local ONNX file (no download, no U2NET_HOME).

    The file's stem names the rembg session (``REMBG_SESSIONS``); the session class is subclassed
    with ``download_models`` returning the file, so rembg's own lookup/download code never runs.
    """

    name = "rembg"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        model = Path(cfg["rembg_model"])
        if not model.is_file():
            raise BackendError(f"products.backend 'rembg': model file {model} not found "
                               f"(params products.rembg_model); fetch it with `dvc pull models/rembg`")
        session_name = model.stem
        if model.suffix != ".onnx" or session_name not in REMBG_SESSIONS:
            raise BackendError(f"products.backend 'rembg': model file {model} (params products.rembg_model) must be "
                               f"named <rembg session>.onnx so that its pre/post-processing is known; "
                               f"one of: {', '.join(f'{n}.onnx' for n in REMBG_SESSIONS)}")
        try:
            import onnxruntime as ort
            import rembg
            from rembg.sessions import sessions as rembg_sessions
        except ImportError as e:
            raise BackendError("products.backend 'rembg' needs the rembg package, which is not installed "
                               f"(pip install rembg onnxruntime; model {model}): {e}") from e
        base = rembg_sessions.get(session_name)
        if base is None:
            raise BackendError(f"products.backend 'rembg': the installed rembg has no session '{session_name}' "
                               f"(model {model}); it has {sorted(rembg_sessions)}")
        path = str(model.resolve())
        local = type(f"Local{base.__name__}", (base,),
                     {"download_models": classmethod(lambda cls, *a, **k: path)})
        opts = ort.SessionOptions()
        threads = os.environ.get("OMP_NUM_THREADS")   # as rembg.new_session does
        if threads and threads.isdigit():
            opts.inter_op_num_threads = opts.intra_op_num_threads = int(threads)
        try:
            self._session = local(session_name, opts)
        except Exception as e:  # onnxruntime's own error types: a corrupt or foreign file
            raise BackendError(f"products.backend 'rembg': cannot load {model} as rembg session "
                               f"'{session_name}' ({e.__class__.__name__}: {e})") from e
        self._rembg = rembg
        self.session_name = session_name

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image
        out = self._rembg.remove(Image.fromarray(rgb), session=self._session, only_mask=True)
        return np.asarray(out.convert("L"), dtype=np.uint8)


BACKENDS = Registry("products.backend")
BACKENDS.register(WhiteMatting.name)(WhiteMatting)
BACKENDS.register(RembgMatting.name)(RembgMatting)


def get_backend(cfg: dict) -> MattingBackend:
    return BACKENDS.create(cfg["backend"], cfg)


# ----------------------------------------------------------------------------- params

def validate_params(params: dict) -> dict:
    """Return the ``products`` settings with defaults; a bad value raises ValueError naming the key."""
    sub = cli.get(params, "products", {}) or {}
    if not isinstance(sub, dict):
        raise ValueError(f"params key 'products' must be a mapping, got {sub!r}")
    c = {**DEFAULTS, **sub}

    def bad(key: str, what: str) -> ValueError:
        return ValueError(f"params key 'products.{key}' must be {what}, got {c[key]!r}")

    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
    is_num = lambda v: isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and math.isfinite(v)
    BACKENDS.check(c["backend"])
    if not is_num(c["white_threshold"]) or not 1 <= c["white_threshold"] <= 255:
        raise bad("white_threshold", "a number in [1, 255]")
    if not is_int(c["feather"]) or c["feather"] < 0:
        raise bad("feather", "an integer >= 0")
    if not is_int(c["pad"]) or c["pad"] < 0:
        raise bad("pad", "an integer >= 0")
    if not isinstance(c["rembg_model"], str) or not c["rembg_model"]:
        raise bad("rembg_model", "a file path")
    if not is_num(c["min_component_frac"]) or not 0 <= c["min_component_frac"] <= 1:
        raise bad("min_component_frac", "a number in [0, 1]")
    if not is_num(c["max_alpha_frac"]) or not 0 < c["max_alpha_frac"] <= 1:
        raise bad("max_alpha_frac", "a number in (0, 1]")
    if not is_num(c["open_hole_min_frac"]) or c["open_hole_min_frac"] < 0:
        raise bad("open_hole_min_frac", "a number >= 0")
    if not is_num(c["hole_bg_tolerance"]) or not 0 <= c["hole_bg_tolerance"] <= 255:
        raise bad("hole_bg_tolerance", "a number in [0, 255]")
    if not is_int(c["max_pixels"]) or c["max_pixels"] < 1:
        raise bad("max_pixels", "an integer >= 1")
    return c


# ----------------------------------------------------------------------------- stage

def load_rgb(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """RGB uint8; transparent pixels of an RGBA/LA/P image are composited onto white. Raises MediaError
    (ImageTooLargeError, before decoding, for an image of more than ``max_pixels``: params products.max_pixels)."""
    try:
        rgba = read_image(path, "RGBA", max_pixels=max_pixels)
    except ImageTooLargeError as e:
        raise ImageTooLargeError(f"{e} (params products.max_pixels)") from None
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    if a.min() >= 1.0:
        return rgba[..., :3].copy()
    return np.rint(rgba[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)


def cutout(rgb: np.ndarray, alpha: np.ndarray, pad: int) -> tuple[np.ndarray, list[int]] | None:
    """(RGBA crop of the matte's bounding box + ``pad``, its [x0, y0, x1, y1] in source pixels); None if empty.

    Where the padded box extends beyond the image the padding is transparent white.
    """
    ys, xs = np.nonzero(alpha)
    if len(xs) == 0:
        return None
    rgba = np.dstack([rgb, alpha]).astype(np.uint8)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    crop = rgba[y0:y1, x0:x1]
    if pad:
        out = np.zeros((crop.shape[0] + 2 * pad, crop.shape[1] + 2 * pad, 4), np.uint8)
        out[..., :3] = 255
        out[pad:pad + crop.shape[0], pad:pad + crop.shape[1]] = crop
        # Image content (not padding) where the padded box is still inside the source image.
        gy0, gx0 = y0 - pad, x0 - pad
        sy0, sx0 = max(0, gy0), max(0, gx0)
        sy1, sx1 = min(rgba.shape[0], y1 + pad), min(rgba.shape[1], x1 + pad)
        out[sy0 - gy0:sy1 - gy0, sx0 - gx0:sx1 - gx0] = rgba[sy0:sy1, sx0:sx1]
        crop = out
    return crop, [x0 - pad, y0 - pad, x1 + pad, y1 + pad]


def _product_view(v: dict, tmp: Path, product_id: str, manifest_path, cfg: dict, icfg: dict, backend,
                  rejects: Rejects, seen: set[str]) -> dict | None:
    """One manifest view -> its cut-out in ``tmp`` and its record, or None with a reject naming why.

    Each view stands alone: a bad one (id, path, download, image, matte) is rejected and the
    product keeps its other views.
    """
    view = str(v.get("view"))
    item = f"{product_id}/{view}"
    if not v.get("view") or not _VIEW_RE.match(view):
        rejects.add(item, f"invalid view id: {view!r} (allowed: [A-Za-z0-9._-])")
        return None
    if view in seen:
        rejects.add(item, f"duplicate view id: {view!r} listed twice", source=str(v.get("path")))
        return None
    seen.add(view)
    if not v.get("path"):
        rejects.add(item, f"missing key: product {product_id!r} view {view!r} in {manifest_path} has no 'path'")
        return None
    # A download is handed to this job as its own hard link (else copy) ``private``: another
    # job sharing the URL cannot remove it; the cache file goes when no job uses it any more.
    private = tmp / f".{view}.source{ingest.download.url_suffix(str(v['path']))}"
    try:  # a local path under the data root, or an http(s) URL (downloaded as ingest does)
        src, fetched = ingest.obtain_source(v["path"], manifest_path, icfg,
                                            f"product {product_id!r} view {view!r}", copy_to=private)
        try:
            rgb = load_rgb(src, cfg["max_pixels"])
        finally:
            private.unlink(missing_ok=True)
            if fetched is not None:
                fetched.release(remove=not icfg["keep_downloads"])
        if fetched is not None:
            src = v["path"]                    # name the URL, not this job's copy
    except SourceError as e:
        rejects.add(item, f"{e.kind}: {e}", source=str(v["path"]))
        return None
    except MediaError as e:
        reason = str(e).replace(str(private), str(v["path"]))
        rejects.add(item, f"unreadable image: {reason}", source=str(v["path"]))
        return None
    alpha = backend.matte(rgb)
    frac_src = float(alpha.mean()) / 255.0
    cut = cutout(rgb, alpha, cfg["pad"])
    if cut is None or not (alpha > 127).any():
        rejects.add(item, f"empty matte: no foreground found in {src} by {backend.name}", source=str(v["path"]))
        return None
    if frac_src > cfg["max_alpha_frac"]:
        rejects.add(item, f"no background: matte covers {frac_src:.1%} of {src} "
                          f"(> products.max_alpha_frac {cfg['max_alpha_frac']})", source=str(v["path"]))
        return None
    rgba, box = cut
    write_png(tmp / f"{view}.png", rgba)
    h, w = rgba.shape[:2]
    rec = {"view": view, "path": f"{view}.png", "source": str(v["path"]), "width": int(w), "height": int(h),
           "aspect": round(w / h, 6), "alpha_frac": round(float(rgba[..., 3].mean()) / 255.0, 6),
           "src_box": box}
    log.info("%s: %s -> %dx%d alpha %.3f", product_id, view, w, h, rec["alpha_frac"])
    return rec


def run(manifest_path: str | Path, product_id: str, out: str | Path, params: dict) -> dict:
    """Build ``out`` (products/<id>/) for one manifest product; return what product.json holds.

    Raises KeyError (id not in manifest), ManifestError, ValueError (params), BackendError.
    """
    cfg = validate_params(params)
    icfg = ingest.validate_params(params)  # where views may come from: data root, downloads
    manifest = load_manifest(manifest_path)
    entry = find_product(manifest, product_id, manifest_path)
    backend = get_backend(cfg)
    rejects = Rejects(STAGE)
    # Free text as strings (a YAML date caption is written as its text); a list/mapping rejects the product.
    texts, bad_fields = ingest.text_fields(entry, ("category", "name", "caption"), f"product {product_id!r}")
    result: dict[str, Any] = {"id": product_id, "status": "ok", "reason": None, "backend": backend.name,
                              **texts, "views": []}
    views = entry.get("views") or []
    seen: set[str] = set()
    with atomic_path(out, directory=True) as tmp:
        for v in [] if bad_fields else sorted(views, key=lambda v: (str(v.get("view")), str(v.get("path")))):
            rec = _product_view(v, tmp, product_id, manifest_path, cfg, icfg, backend, rejects, seen)
            if rec is not None:
                result["views"].append(rec)
        if not result["views"]:
            result["status"] = "rejected"
            if bad_fields:
                result["reason"] = bad_fields[0]
                rejects.add(product_id, result["reason"])
            elif not views:
                result["reason"] = "no views listed in the manifest"
                rejects.add(product_id, result["reason"])
            else:
                result["reason"] = "no view survived (" + ", ".join(sorted(rejects.by_reason())) + ")"
        write_json(tmp / "product.json", result)
        rejects.write(tmp / "rejects.jsonl")
    log.info("%s: %s, %d views, %d rejected %s", product_id, result["status"], len(result["views"]), len(rejects),
             rejects.by_reason())
    return result


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Cut out the reference views of one product as RGBA images.")
    ap.add_argument("--manifest", required=True, help="input manifest (YAML or JSON)")
    ap.add_argument("--product-id", required=True, help="id of the product in the manifest")
    ap.add_argument("--out", required=True, help="output directory, e.g. work/products/<id>")
    args = ap.parse_args(argv)
    validate_params(args.params)
    try:
        find_product(load_manifest(args.manifest), args.product_id, args.manifest)
    except (ManifestError, KeyError) as e:
        ap.error(str(e.args[0] if isinstance(e, KeyError) else e))
    try:
        run(args.manifest, args.product_id, args.out, args.params)
    except BackendError as e:
        log.error("%s", e)
        raise SystemExit(f"products: {e}") from None


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
