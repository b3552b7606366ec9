"""Ingest stage: validate one source video from the input manifest and copy it into ``raw/<id>/``.

The weight-free (local files) backend of the ``ingest`` stage. A video is accepted when
ffprobe reads it, its frames decode (a real decode of the first ``ingest.min_frames``
frames through the same ffmpeg that later stages use) and it has at least
``ingest.min_frames`` frames. An mp4 is copied byte for byte; any other container is
remuxed into mp4 without re-encoding (``-c copy``, bit-exact flags). A bad video never fails
the job: ``info.json`` says ``"status": "rejected"`` with the reason and ``rejects.jsonl``
holds one row (stage ``ingest``).

Output directory ``raw/<id>/``::

    video.mp4      the accepted video (absent when rejected)
    info.json      {"id", "status", "reason", "source", "sha256", "source_sha256",
                    "category", "caption", "product_id", "probe": VideoInfo.as_dict() | null}
    rejects.jsonl  0 or 1 row

The manifest helpers here (``load_manifest``, ``find_video``, ``find_product``,
``resolve_media_path``) are shared with the products stage.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from . import cli
from .io.atomic import atomic_path
from .io.jsonio import write_json
from .io.rejects import Rejects
from .io.video import BITEXACT, MediaError, ffmpeg_bin, probe, read_frames
from .manifest import sha256_file

log = logging.getLogger("pvtt.ingest")

STAGE = "ingest"
DEFAULTS = {"min_frames": 12}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ----------------------------------------------------------------------------- manifest

class ManifestError(ValueError):
    """The input manifest is missing, unparsable or malformed; the message names the file."""


def load_manifest(path: str | os.PathLike) -> dict:
    """Read a YAML or JSON manifest ``{"videos": [...], "products": [...]}`` and check its shape.

    Ids (videos, products) must be unique and usable as directory names. Each video needs
    ``id`` and ``path``; each product needs ``id`` and ``views`` (a list of ``{view, path}``).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: manifest is not valid YAML/JSON ({e})") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest must be a mapping with 'videos' and 'products'")
    videos = data.get("videos") or []
    products = data.get("products") or []
    if not isinstance(videos, list) or not isinstance(products, list):
        raise ManifestError(f"{path}: 'videos' and 'products' must be lists")
    for kind, items, required in (("videos", videos, ("id", "path")), ("products", products, ("id",))):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ManifestError(f"{path}: {kind}[{i}] is not a mapping")
            for key in required:
                if item.get(key) in (None, ""):
                    raise ManifestError(f"{path}: {kind}[{i}] has no '{key}'")
            iid = str(item["id"])
            if not _ID_RE.match(iid):
                raise ManifestError(f"{path}: {kind}[{i}] id {iid!r} is not a valid id ([A-Za-z0-9._-])")
            if iid in seen:
                raise ManifestError(f"{path}: duplicate {kind} id {iid!r}")
            seen.add(iid)
    for i, prod in enumerate(products):
        views = prod.get("views") or []
        if not isinstance(views, list) or any(not isinstance(v, dict) for v in views):
            raise ManifestError(f"{path}: products[{i}] 'views' must be a list of mappings")
    return data


def _find(manifest: dict, kind: str, item_id: str, manifest_path: str | os.PathLike) -> dict:
    for item in manifest.get(kind) or []:
        if str(item.get("id")) == item_id:
            return item
    raise KeyError(f"{kind[:-1]} id {item_id!r} is not in manifest {manifest_path}")


def find_video(manifest: dict, video_id: str, manifest_path: str | os.PathLike = "<manifest>") -> dict:
    """The manifest entry of ``video_id``; KeyError naming the id and the manifest if absent."""
    return _find(manifest, "videos", video_id, manifest_path)


def find_product(manifest: dict, product_id: str, manifest_path: str | os.PathLike = "<manifest>") -> dict:
    """The manifest entry of ``product_id``; KeyError naming the id and the manifest if absent."""
    return _find(manifest, "products", product_id, manifest_path)


def resolve_media_path(manifest_path: str | os.PathLike, p: str | os.PathLike) -> Path:
    """A manifest path: absolute as is, relative to the manifest's directory otherwise."""
    p = Path(os.path.expanduser(str(p)))
    # Not resolved: a relative manifest path keeps reasons and info.json free of the checkout location.
    return p if p.is_absolute() else Path(manifest_path).parent / p


# ----------------------------------------------------------------------------- params

def validate_params(params: dict) -> dict:
    """Return the ``ingest`` settings with defaults; a bad value raises ValueError naming the key."""
    sub = cli.get(params, "ingest", {}) or {}
    if not isinstance(sub, dict):
        raise ValueError(f"params key 'ingest' must be a mapping, got {sub!r}")
    cfg = {**DEFAULTS, **sub}
    mf = cfg["min_frames"]
    if isinstance(mf, bool) or not isinstance(mf, int) or mf < 1:
        raise ValueError(f"params key 'ingest.min_frames' must be an integer >= 1, got {mf!r}")
    return cfg


# ----------------------------------------------------------------------------- validation

class _Reject(Exception):
    """A video that decodes but does not qualify; the message is the reject reason."""


def _remux_to_mp4(src: Path, dst: Path) -> None:
    """Copy the first video stream of ``src`` into an mp4 container without re-encoding."""
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-y", "-i", str(src), "-map", "0:v:0", "-c", "copy",
           "-an", "-sn", "-dn", *BITEXACT, "-f", "mp4", str(dst)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"ffmpeg exit {res.returncode}"
        raise MediaError(f"{src}: cannot remux into mp4 ({tail})")


def check_video(path: Path, min_frames: int) -> dict:
    """Probe and decode the first frames of ``path``; return VideoInfo.as_dict() or raise MediaError naming it."""
    info = probe(path)
    n_check = min(info.n_frames, min_frames)
    # A real decode through ffmpeg (small frames: only decodability matters here).
    frames = read_frames(path, size=(32, 32), duration=(n_check + 0.5) / info.fps)
    if len(frames) < n_check:
        raise MediaError(f"{path}: only {len(frames)} of the first {n_check} frames decode")
    return info.as_dict()


def ingest_video(entry: dict, manifest_path: str | os.PathLike, out: str | os.PathLike, params: dict) -> dict:
    """Validate one manifest video and build ``out`` (raw/<id>/); return what info.json holds."""
    cfg = validate_params(params)
    vid = str(entry["id"])
    src = resolve_media_path(manifest_path, entry["path"])
    rejects = Rejects(STAGE)
    info: dict[str, Any] = {
        "id": vid, "status": "ok", "reason": None, "source": str(entry["path"]),
        "sha256": None, "source_sha256": None,
        "category": entry.get("category"), "caption": entry.get("caption"),
        "product_id": entry.get("product_id"), "probe": None,
    }
    out = Path(out)
    with atomic_path(out, directory=True) as tmp:
        dst = tmp / "video.mp4"
        try:
            if not src.is_file():
                raise MediaError(f"{src}: no such file")
            info["source_sha256"] = sha256_file(src)
            pr = check_video(src, cfg["min_frames"])
            if pr["n_frames"] < cfg["min_frames"]:
                raise _Reject(f"too few frames: {src} has {pr['n_frames']} frames < ingest.min_frames "
                              f"{cfg['min_frames']}")
            if src.suffix.lower() == ".mp4":
                shutil.copyfile(src, dst)          # bytes unchanged
            else:
                try:
                    _remux_to_mp4(src, dst)
                    pr = check_video(dst, cfg["min_frames"])
                except MediaError as e:
                    raise _Reject(f"remux failed: {e}") from e
            info["probe"] = pr
            info["sha256"] = sha256_file(dst)
        except (MediaError, _Reject) as e:
            reason = str(e) if isinstance(e, _Reject) else f"unreadable video: {e}"
            info.update(status="rejected", reason=reason, probe=None, sha256=None)
            if dst.exists():
                dst.unlink()
            rejects.add(vid, reason, source=str(entry["path"]))
        write_json(tmp / "info.json", info)
        rejects.write(tmp / "rejects.jsonl")
    if info["status"] == "ok":
        p = info["probe"]
        log.info("%s: ok %dx%d %.3f fps %d frames (%s)", vid, p["width"], p["height"], p["fps"], p["n_frames"], src)
    return info


def run(manifest_path: str | os.PathLike, video_id: str, out: str | os.PathLike, params: dict) -> dict:
    """Ingest ``video_id`` of the manifest into ``out``; KeyError/ManifestError if it is not there."""
    entry = find_video(load_manifest(manifest_path), video_id, manifest_path)
    return ingest_video(entry, manifest_path, out, params)


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Validate one source video of the manifest and copy it into raw/<id>/.")
    ap.add_argument("--manifest", required=True, help="input manifest (YAML or JSON)")
    ap.add_argument("--video-id", required=True, help="id of the video in the manifest")
    ap.add_argument("--out", required=True, help="output directory, e.g. work/raw/<id>")
    args = ap.parse_args(argv)
    validate_params(args.params)
    try:
        manifest = load_manifest(args.manifest)
        entry = find_video(manifest, args.video_id, args.manifest)
    except (ManifestError, KeyError) as e:
        ap.error(str(e.args[0] if isinstance(e, KeyError) else e))
    info = ingest_video(entry, args.manifest, args.out, args.params)
    log.info("%s: %s%s", args.video_id, info["status"], f" ({info['reason']})" if info["reason"] else "")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
