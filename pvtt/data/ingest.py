"""Ingest stage: validate one source video from the input manifest and copy it into ``raw/<id>/``.

The weight-free (local files) backend of the ``ingest`` stage. A video is accepted when
ffprobe reads it, every frame decodes (a truncated or corrupt file is rejected, not cut to its
decodable prefix: the bytes are copied as they are, and a container that lists frames which do
not decode would break every later stage), its first ``ingest.min_frames`` frames decode
through the same ffmpeg that later stages use, it has at least ``ingest.min_frames`` frames
and its display size (rotation applied) is at least ``ingest.min_side`` pixels on both sides.
An mp4 is copied byte for byte (audio and all: later stages read the first video stream only);
any other container is remuxed into mp4 without re-encoding (``-c copy``, bit-exact flags,
first video stream only). A bad video never fails the job: ``info.json`` says
``"status": "rejected"`` with the reason and ``rejects.jsonl`` holds one row (stage ``ingest``).

Sources. A manifest ``path`` is either
  * an ``http://`` or ``https://`` URL: downloaded by genbuild/download.py into the cache directory
    ``ingest.download_dir`` (default ``work/downloads``, relative to the working directory)
    as ``<sha256 of the URL>.part``, with ``ingest.retries`` retries (exponential backoff from
    ``ingest.backoff_seconds``), ``ingest.timeout_seconds`` per socket operation, and resumed
    with an HTTP Range request by the next attempt or the next run (the ``.part`` survives a
    killed job); once complete it is renamed atomically, linked into ``raw/<id>/`` and removed
    from the cache (kept with ``ingest.keep_downloads``);
  * a local path, relative to the manifest's directory or absolute, that must lie under the
    data root ``ingest.data_root`` (default: the manifest's directory; a relative data root is
    relative to the working directory) after resolving ``..`` and symlinks.
Anything else (``ftp:``, ``file:``, ``s3:``, ``data:``, ... or a path outside the data root) is
refused. A refusal is a per-item reject (``refused source: video 'v1' path 'ftp://...': ...``),
so one bad row does not stop a thousand-video build; ``load_manifest(..., strict=True)`` reports
every such row up front as a ManifestError naming the entries. An optional manifest ``sha256``
(64 hex digits) is checked against the downloaded or local bytes (``sha256 mismatch: ...``).

Reject reasons (the part before the first ``:`` is the category rejects are counted by):
``refused source``, ``download failed``, ``sha256 mismatch``, ``unreadable video``,
``no frames``, ``truncated``, ``too small``, ``too few frames``, ``remux failed``, ``bad field``
(a free-text field, ``category``/``caption``/``product_id``, that is a list or a mapping; a YAML
date, number or boolean is written as its text).

Downloads shared by several entries (one URL, concurrent jobs): each job gets its own hard link
(else copy) of the complete file under the per-URL lock, and the cache file is removed only by the
last job still using it (genbuild/download.py).

The rule runs it once per batch of videos (``--videos``, :mod:`pvtt.data.vbatch`): ``work/raw/<batch>/``
holds one such directory per video; a video whose build raises is that video's reject.

Output directory ``raw/<batch>/<id>/``::

    video.mp4      the accepted video (absent when rejected)
    info.json      {"id", "status", "reason", "source", "sha256", "source_sha256",
                    "category", "caption", "product_id", "probe": VideoInfo.as_dict() | null}
    rejects.jsonl  0 or 1 row

``source`` is the manifest's value (path or URL); ``source_sha256`` the sha256 of the local or
downloaded bytes; ``sha256`` that of ``video.mp4`` (equal for an mp4). The manifest helpers
here (``load_manifest``, ``find_video``, ``find_product``, ``resolve_media_path``,
``check_source``, ``obtain_source``) are shared with the products stage.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import re
import reprlib
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from genbuild import download
from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_json
from genbuild.io.rejects import Rejects
from genbuild.io.video import (
    BITEXACT,
    MediaError,
    MediaTimeout,
    NoFramesError,
    TruncatedError,
    ffmpeg_bin,
    ffmpeg_url,
    input_args,
    probe,
    probe_extent,
    read_frames,
    run_tool,
)
from genbuild.manifest import sha256_file

# The source policy lives in the kit (AVGen ingests through it too); re-exported for PVTT callers.
from genbuild.sources import (  # noqa: F401
    SourceError,
    check_source,
    data_root_of,
    obtain_source,
    resolve_media_path,
    sha256_or_raise,
)
from pvtt.data import vbatch

log = logging.getLogger("pvtt.data.ingest")

STAGE = "ingest"
DEFAULTS = {"min_frames": 12, "min_side": 16, "retries": 3, "backoff_seconds": 1.0, "timeout_seconds": 60.0,
            "download_dir": "work/downloads", "data_root": None, "keep_downloads": False,
            # bounds: an item over one is a reject naming the key
            "max_backoff_seconds": 60.0, "max_download_bytes": 10 * 2**30, "download_deadline_seconds": 3600.0,
            "stale_part_hours": 72.0, "max_seconds": 3600.0, "max_side": 7680, "max_pixels": 7680 * 4320}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")


# ----------------------------------------------------------------------------- manifest

class ManifestError(ValueError):
    """The input manifest is missing, unparsable or malformed; the message names the file."""


def load_manifest(path: str | os.PathLike, strict: bool = False, data_root: str | os.PathLike | None = None) -> dict:
    """Read a YAML or JSON manifest ``{"videos": [...], "products": [...]}`` and check its shape.

    Ids (videos, products) must be unique and usable as directory names. Each video needs
    ``id`` and ``path`` (a string), and may give ``sha256`` (64 hex digits); each product needs
    ``id`` and ``views`` (a list of ``{view, path}``). ``videos``, ``products`` and ``views`` may
    be absent or null (none), anything else that is not a list is an error. Errors name the file
    and the entry.

    With ``strict`` every video and view path is also checked against the source policy
    (check_source, data root ``data_root``, default the manifest's directory) and all the
    refused ones are reported in one ManifestError; without it they become per-item rejects
    of the stage that reads them.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    data = _parse_manifest(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest must be a mapping with 'videos' and 'products'")
    bad = _unusable_value(data)
    if bad:
        raise ManifestError(f"{path}: {bad[0]}: {bad[1]}")
    for key in ("videos", "products"):
        if data.get(key) is not None and not isinstance(data[key], list):
            raise ManifestError(f"{path}: '{key}' must be a list, got a {type(data[key]).__name__}")
    videos = data.get("videos") or []
    products = data.get("products") or []
    for kind, items, required in (("videos", videos, ("id", "path")), ("products", products, ("id",))):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ManifestError(f"{path}: {kind}[{i}] is not a mapping")
            for key in required:
                if item.get(key) in (None, ""):
                    raise ManifestError(f"{path}: {kind}[{i}] has no '{key}'")
            iid = str(item["id"]) if not isinstance(item["id"], (list, dict)) else ""
            if not _ID_RE.match(iid):
                raise ManifestError(f"{path}: {kind}[{i}] id {_shown(item['id'])} is not a valid id ([A-Za-z0-9._-])")
            if iid in seen:
                raise ManifestError(f"{path}: duplicate {kind} id {iid!r}")
            seen.add(iid)
    for i, v in enumerate(videos):
        if not _is_path(v["path"]):
            raise ManifestError(f"{path}: videos[{i}] (id {str(v['id'])!r}) 'path' must be a string without NUL "
                                f"characters (a local path or an http(s) URL), got {_shown(v['path'])}")
        sha = v.get("sha256")
        if sha is not None and not (isinstance(sha, str) and _SHA_RE.match(sha)):
            raise ManifestError(f"{path}: videos[{i}] (id {str(v['id'])!r}) 'sha256' must be 64 hex digits, "
                                f"got {_shown(sha)}")
    for i, prod in enumerate(products):
        views = prod.get("views") or []
        if not isinstance(prod.get("views"), (list, type(None))) or any(not isinstance(v, dict) for v in views):
            raise ManifestError(f"{path}: products[{i}] (id {str(prod['id'])!r}) 'views' must be a list of mappings")
        for j, v in enumerate(views):
            if v.get("path") not in (None, "") and not _is_path(v["path"]):
                raise ManifestError(f"{path}: products[{i}] (id {str(prod['id'])!r}) views[{j}] 'path' must be a "
                                    f"string without NUL characters, got {_shown(v['path'])}")
    if strict:
        problems = source_problems(data, path, data_root)
        if problems:
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise ManifestError(f"{path}: {len(problems)} refused source(s):\n  " + "\n  ".join(problems[:20]) + more)
    return data


class _ManifestLoader(yaml.SafeLoader):
    """yaml.SafeLoader whose constructors name the line of a scalar they cannot build.

    PyYAML's constructors raise bare Python errors, without a position, for a scalar that looks
    like (or is tagged as) a value but is not one: ValueError for ``2024-13-45`` as a date or an
    integer longer than Python's 4300-digit limit, AttributeError for ``!!timestamp x``,
    KeyError for ``!!bool x``, IndexError for ``!!int ''``. Here each is a YAMLError with the
    line and column.
    """

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, LookupError, OverflowError) as e:
            what = f"{_shown(node.value)} as {node.tag.rsplit(':', 1)[-1]}" if isinstance(node, yaml.ScalarNode) \
                else node.tag
            raise yaml.constructor.ConstructorError(None, None, f"cannot read {what} ({e}); quote it to keep it "
                                                    f"as text", node.start_mark) from None


def _parse_manifest(path: Path) -> Any:
    """The parsed document; every way the text can fail to parse is a ManifestError naming the file."""
    try:
        loader = _ManifestLoader(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: manifest is not valid YAML/JSON ({e})") from e
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e.strerror or e})") from e
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: manifest is not valid YAML/JSON ({e})") from e
    except (ValueError, OverflowError) as e:           # the scanner's, for a "\U7fffffff" escape
        raise ManifestError(f"{path}: manifest is not valid YAML/JSON ({e}\n{loader.get_mark()})") from e
    except RecursionError:
        raise ManifestError(f"{path}: manifest is nested too deeply") from None
    finally:
        loader.dispose()


def _unusable_value(data: Any) -> tuple[str, str] | None:
    """Where (``videos[3].caption``) and why, for the first key or value that later stages cannot
    turn into text: an integer too long for str() (a YAML hex literal such as ``0xfff...`` is read
    without Python's digit limit) or a string with a lone surrogate (a YAML ``"\\ud800"`` escape; no
    UTF-8 file, JSON output or file name can hold it). Walks aliases (even cyclic ones) once."""
    stack: list[tuple[str, Any]] = [("", data)]
    seen: set[int] = set()
    while stack:
        where, node = stack.pop()
        if not isinstance(node, (dict, list)):
            why = _unusable_scalar(node)
            if why:
                return where or "(top level)", why
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
            if isinstance(node, list):
                stack.append((f"{where}[{k}]", v))
                continue
            why = _unusable_scalar(k)
            if why:
                return f"{where or '(top level)'} key", why
            stack.append((f"{where}.{k}" if where else str(k), v))
    return None


def _unusable_scalar(value: Any) -> str | None:
    """Why ``value`` (a key or a leaf) cannot become text, or None when it can."""
    if isinstance(value, int):
        try:
            str(value)
        except ValueError:
            return f"an integer of {value.bit_length()} bits is too long to use as text"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"text {_shown(value)} holds a lone surrogate, which is not valid Unicode"
    return None


def _is_path(value: Any) -> bool:
    """A manifest path: a string (a NUL cannot be part of a file name or URL; os calls raise on it)."""
    return isinstance(value, str) and "\0" not in value


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60


def _shown(value: Any, limit: int = 80) -> str:
    """repr() for an error message, cut to ``limit`` characters. Bounded while it is built (reprlib):
    a YAML alias bomb as a caption would make a full repr() take exponential time."""
    try:
        s = _REPR.repr(value)
    except ValueError:                                 # holds an integer too long to print
        return f"a {type(value).__name__} too long to print"
    return s if len(s) <= limit else s[:limit] + "..."


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


def source_problems(manifest: dict, manifest_path: str | os.PathLike,
                    data_root: str | os.PathLike | None = None) -> list[str]:
    """Every video and view path the source policy refuses, as "videos[i] (id 'x') path '...': why"."""
    out = []
    rows = [(f"videos[{i}] (id {str(v.get('id'))!r})", v.get("path"))
            for i, v in enumerate(manifest.get("videos") or [])]
    for i, p in enumerate(manifest.get("products") or []):
        rows += [(f"products[{i}] (id {str(p.get('id'))!r}) views[{j}]", v.get("path"))
                 for j, v in enumerate(p.get("views") or []) if isinstance(v, dict)]
    for where, value in rows:
        if not isinstance(value, str) or not value:
            continue
        try:
            check_source(value, manifest_path, data_root)
        except SourceError as e:
            out.append(f"{where} path {value!r}: {e}")
    return out



# ----------------------------------------------------------------------------- params

def validate_params(params: dict) -> dict:
    """Return the ``ingest`` settings with defaults; a bad value raises ValueError naming the key."""
    sub = cli.get(params, "ingest", {}) or {}
    if not isinstance(sub, dict):
        raise ValueError(f"params key 'ingest' must be a mapping, got {sub!r}")
    cfg = {**DEFAULTS, **sub}

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ValueError(f"params key 'ingest.{key}' must be {what}, got {cfg[key]!r}")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and math.isfinite(v)

    need(is_int(cfg["min_frames"]) and cfg["min_frames"] >= 1, "min_frames", "an integer >= 1")
    need(is_int(cfg["min_side"]) and cfg["min_side"] >= 1, "min_side", "an integer >= 1")
    need(is_int(cfg["retries"]) and 0 <= cfg["retries"] <= download.MAX_RETRIES, "retries",
         f"an integer in [0, {download.MAX_RETRIES}]")
    need(is_num(cfg["max_backoff_seconds"]) and cfg["max_backoff_seconds"] >= 0, "max_backoff_seconds", "a number >= 0")
    for key in ("download_deadline_seconds", "stale_part_hours", "max_seconds"):
        need(is_num(cfg[key]) and cfg[key] > 0, key, "a number > 0")
    for key in ("max_download_bytes", "max_side", "max_pixels"):
        need(is_int(cfg[key]) and cfg[key] >= 1, key, "an integer >= 1")
    need(is_num(cfg["backoff_seconds"]) and cfg["backoff_seconds"] >= 0, "backoff_seconds", "a number >= 0")
    need(is_num(cfg["timeout_seconds"]) and cfg["timeout_seconds"] > 0, "timeout_seconds", "a number > 0")
    need(isinstance(cfg["download_dir"], str) and cfg["download_dir"] != "", "download_dir", "a non-empty path")
    need(cfg["data_root"] is None or (isinstance(cfg["data_root"], str) and cfg["data_root"] != ""), "data_root",
         "null (the manifest's directory) or a non-empty path")
    need(isinstance(cfg["keep_downloads"], bool), "keep_downloads", "true or false")
    return cfg


# ----------------------------------------------------------------------------- validation

class _Reject(Exception):
    """A video that decodes but does not qualify; the message is the reject reason."""


def _remux_to_mp4(src: Path, dst: Path) -> None:
    """Copy the first video stream of ``src`` into an mp4 container without re-encoding."""
    cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-y", *input_args(src), "-map", "0:v:0", "-c", "copy",
           "-an", "-sn", "-dn", *BITEXACT, "-f", "mp4", ffmpeg_url(dst)]
    res = run_tool(cmd, src, "remux", text=True)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"ffmpeg exit {res.returncode}"
        raise MediaError(f"{src}: cannot remux into mp4 ({tail})")


def check_extent(path: Path, width: int, height: int, seconds: float, cfg: dict) -> None:
    """Reject a source over the ingest bounds (a duration of 0.0 is unknown: checked again after counting)."""
    if max(width, height) > cfg["max_side"]:
        raise _Reject(f"too large: {path} is {width}x{height}, a side above ingest.max_side {cfg['max_side']}")
    if width * height > cfg["max_pixels"]:
        raise _Reject(f"too large: {path} is {width}x{height} = {width * height} pixels per frame, above "
                      f"ingest.max_pixels {cfg['max_pixels']}")
    if seconds > cfg["max_seconds"]:
        raise _Reject(f"too long: {path} lasts {seconds:.1f} s, above ingest.max_seconds {cfg['max_seconds']:g}")


def check_video(path: Path, min_frames: int) -> dict:
    """Probe (decoding every frame) and decode the first frames of ``path`` as later stages do;
    return VideoInfo.as_dict() or raise MediaError (NoFramesError, TruncatedError) naming it."""
    info = probe(path)
    n_check = min(info.n_frames, min_frames)
    # A real decode through ffmpeg (small frames: only decodability matters here).
    frames = read_frames(path, size=(32, 32), duration=(n_check + 0.5) / info.fps)
    if len(frames) < n_check:
        raise MediaError(f"{path}: only {len(frames)} of the first {n_check} frames decode")
    return info.as_dict()


def _reason(e: Exception) -> str:
    if isinstance(e, _Reject):
        return str(e)
    if isinstance(e, SourceError):
        return f"{e.kind}: {e}"
    if isinstance(e, NoFramesError):
        return f"no frames: {e}"
    if isinstance(e, TruncatedError):
        return f"truncated: {e}"
    if isinstance(e, MediaTimeout):
        return f"timed out: {e}"
    return f"unreadable video: {e}"


TEXT_FIELDS = ("category", "caption", "product_id")
_SCALARS = (str, bool, int, float, datetime.date, datetime.time)


def text_fields(entry: dict, keys: tuple[str, ...], item: str) -> tuple[dict[str, str | None], list[str]]:
    """The free-text fields ``keys`` of a manifest entry as strings (a YAML date such as
    ``caption: 2024-05-01``, a number or a boolean becomes its text; absent stays None), and a
    ``bad field`` reject reason naming ``item`` and the key for each value that is not a scalar
    (a list or a mapping; its value becomes None)."""
    out: dict[str, str | None] = {}
    bad: list[str] = []
    for key in keys:
        value = entry.get(key)
        if value is None or isinstance(value, _SCALARS):
            out[key] = None if value is None else str(value)
        else:
            out[key] = None
            bad.append(f"bad field: {item} key {key!r} must be text, got a {type(value).__name__} ({_shown(value)})")
    return out, bad


def ingest_video(entry: dict, manifest_path: str | os.PathLike, out: str | os.PathLike, params: dict) -> dict:
    """Validate one manifest video and build ``out`` (raw/<id>/); return what info.json holds."""
    cfg = validate_params(params)
    vid = str(entry["id"])
    rejects = Rejects(STAGE)
    texts, bad_fields = text_fields(entry, TEXT_FIELDS, f"video {vid!r}")
    info: dict[str, Any] = {
        "id": vid, "status": "ok", "reason": None, "source": str(entry["path"]),
        "sha256": None, "source_sha256": None, **texts, "probe": None,
    }
    out = Path(out)
    fetched: download.Fetched | None = None
    try:
        with atomic_path(out, directory=True) as tmp:
            fetched = _ingest_into(tmp, entry, manifest_path, cfg, info, rejects, bad_fields)
        # Only once raw/<id>/ is in place (it holds a hard link or copy): a job killed before this
        # leaves the complete download in the cache for the next run. Another job still using the
        # same URL keeps it there (download.Fetched.release).
        if fetched is not None:
            fetched.release(remove=not cfg["keep_downloads"])
    finally:
        if fetched is not None:
            fetched.release()
    if info["status"] == "ok":
        p = info["probe"]
        log.info("%s: ok %dx%d %.3f fps %d frames (%s)", vid, p["width"], p["height"], p["fps"], p["n_frames"],
                 entry["path"])
    return info


def _ingest_into(tmp: Path, entry: dict, manifest_path: str | os.PathLike, cfg: dict, info: dict,
                 rejects: Rejects, bad_fields: list[str]) -> download.Fetched | None:
    """Fill the temporary output ``tmp`` of ingest_video; return the download record (or None)."""
    vid = info["id"]
    fetched: download.Fetched | None = None
    dst = tmp / "video.mp4"
    private = tmp / f".source{download.url_suffix(str(entry['path']))}"   # this job's copy of a download
    try:
        try:
            if bad_fields:
                raise _Reject(bad_fields[0])
            src, fetched = obtain_source(str(entry["path"]), manifest_path, cfg, f"video {vid!r}",
                                         entry.get("sha256"), copy_to=private)
            info["source_sha256"] = fetched.sha256 if fetched else sha256_or_raise(src)
            is_mp4 = (download.url_suffix(str(entry["path"])) if fetched else src.suffix.lower()) == ".mp4"
            check_extent(src, *probe_extent(src), cfg)          # before decoding every frame
            pr = check_video(src, cfg["min_frames"])
            check_extent(src, pr["width"], pr["height"], pr["n_frames"] / pr["fps"], cfg)
            if min(pr["width"], pr["height"]) < cfg["min_side"]:
                raise _Reject(f"too small: {src} is {pr['width']}x{pr['height']} (display size), a side below "
                              f"ingest.min_side {cfg['min_side']}")
            if pr["n_frames"] < cfg["min_frames"]:
                raise _Reject(f"too few frames: {src} has {pr['n_frames']} frames < ingest.min_frames "
                              f"{cfg['min_frames']}")
            if is_mp4:
                if fetched:
                    os.replace(src, dst)               # this job's private hard link (or copy)
                else:
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
            reason = _reason(e)
            if fetched is not None:                    # name the URL, not the cache file
                for p in (private, fetched.path):
                    reason = reason.replace(str(p), str(entry["path"]))
            info.update(status="rejected", reason=reason, probe=None, sha256=None)
            if dst.exists():
                dst.unlink()
            rejects.add(vid, reason, source=str(entry["path"]))
        finally:
            private.unlink(missing_ok=True)
        write_json(tmp / "info.json", info)
        rejects.write(tmp / "rejects.jsonl")
    except BaseException:
        if fetched is not None:
            fetched.release()
        raise
    return fetched


def run(manifest_path: str | os.PathLike, video_id: str, out: str | os.PathLike, params: dict) -> dict:
    """Ingest ``video_id`` of the manifest into ``out``; KeyError/ManifestError if it is not there."""
    entry = find_video(load_manifest(manifest_path), video_id, manifest_path)
    return ingest_video(entry, manifest_path, out, params)


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Validate one batch of source videos of the manifest and copy them into raw/<batch>/<id>/.")
    ap.add_argument("--manifest", required=True, nargs="+",
                    help="input manifest (YAML or JSON): one for every video, or one per video in --videos order")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--videos", nargs="+", help="ids of the batch's videos in the manifest")
    which.add_argument("--video-id", help="one video: --out is its directory (debugging, tests)")
    ap.add_argument("--out", required=True, help="the batch's directory, e.g. work/raw/<batch> (with --video-id: "
                                                 "the video's, e.g. work/raw/<batch>/<id>)")
    args = ap.parse_args(argv)
    validate_params(args.params)
    if args.video_id is not None:
        if len(args.manifest) != 1:
            ap.error("--video-id takes one --manifest")
        try:
            entry = find_video(load_manifest(args.manifest[0]), args.video_id, args.manifest[0])
        except (ManifestError, KeyError) as e:
            ap.error(str(e.args[0] if isinstance(e, KeyError) else e))
        info = ingest_video(entry, args.manifest[0], args.out, args.params)
        log.info("%s: %s%s", args.video_id, info["status"], f" ({info['reason']})" if info["reason"] else "")
        return
    if len(args.manifest) not in (1, len(args.videos)):
        ap.error(f"--manifest: {len(args.manifest)} given for {len(args.videos)} videos (one, or one per video)")
    manifest_of = dict(zip(args.videos, args.manifest * len(args.videos) if len(args.manifest) == 1 else args.manifest))
    try:  # a manifest that cannot be read at all is the same for every video: the job fails naming it
        loaded = {m: load_manifest(m) for m in sorted(set(manifest_of.values()))}
    except ManifestError as e:
        ap.error(str(e))

    def build(video: str, out: Path) -> None:
        m = manifest_of[video]
        info = ingest_video(find_video(loaded[m], video, m), m, out, args.params)
        log.info("%s: %s%s", video, info["status"], f" ({info['reason']})" if info["reason"] else "")

    vbatch.run_videos(STAGE, args.out, args.videos, build, "info.json",
                      lambda v, reason: {"id": v, "status": "rejected", "reason": reason, "probe": None})


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
