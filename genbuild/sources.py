"""Where an ingested item's bytes come from: the source policy every pipeline's ingest applies.

A manifest names each source as an ``http(s)`` URL (downloaded by ``genbuild.download`` with its
bounds) or a local path that must lie under a data root, so a manifest cannot make a job read
``/etc/passwd`` or follow a symlink out of the data. Anything else is refused as a per-item
reject (``SourceError.kind`` is the reject category), never a crash of the stage.
"""
from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from genbuild import download
from genbuild.io.video import MediaError
from genbuild.manifest import sha256_file

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def resolve_media_path(manifest_path: str | os.PathLike, p: str | os.PathLike) -> Path:
    """A manifest path: absolute as is, relative to the manifest's directory otherwise."""
    p = Path(os.path.expanduser(str(p)))
    # Not resolved: a relative manifest path keeps reasons and info.json free of the checkout location.
    return p if p.is_absolute() else Path(manifest_path).parent / p


class SourceError(MediaError):
    """A source that is refused or cannot be fetched; ``kind`` is the reject category."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def data_root_of(manifest_path: str | os.PathLike, data_root: str | os.PathLike | None) -> Path:
    """The directory local sources must lie under: ``data_root`` (relative: to the working
    directory) or, when None, the manifest's directory; resolved (symlinks followed)."""
    root = Path(os.path.expanduser(str(data_root))) if data_root not in (None, "") else Path(manifest_path).parent
    return root.resolve()


def check_source(value: str, manifest_path: str | os.PathLike, data_root: str | os.PathLike | None = None,
                 ) -> tuple[str, str | Path]:
    """Classify a manifest path: ("url", url) for http(s), ("file", path) for an allowed local file.

    Raises SourceError("refused source", why) for any other URL scheme (ftp:, file:, s3:,
    data:, ...; a local name with a colon can be written ``./name:x.mp4``), a URL without a
    host, and a local path that leaves the data root (``..``, an absolute path elsewhere, a
    symlink pointing outside). The returned path is resolve_media_path()'s (not resolved).
    """
    raw = str(value)
    m = _SCHEME_RE.match(raw)
    if m:
        scheme = m.group(1).lower()
        if scheme not in download.SCHEMES:
            raise SourceError("refused source", f"URL scheme {scheme!r} is not allowed (only http and https "
                                                f"URLs, or local paths under the data root)")
        try:
            host = urllib.parse.urlsplit(raw).hostname
        except ValueError as e:
            raise SourceError("refused source", f"malformed URL ({e})") from None
        if not host:
            raise SourceError("refused source", "URL has no host")
        return "url", raw
    full = resolve_media_path(manifest_path, raw)
    root = data_root_of(manifest_path, data_root)
    lexical = Path(os.path.abspath(full))
    real = full.resolve()
    if not lexical.is_relative_to(root):
        raise SourceError("refused source", f"{lexical} is outside the data root {root} (ingest.data_root)")
    if not real.is_relative_to(root):
        raise SourceError("refused source", f"resolves through a symlink to {real}, outside the data root {root} "
                                            f"(ingest.data_root)")
    return "file", full


def obtain_source(value: str, manifest_path: str | os.PathLike, cfg: dict, item: str,
                  expected_sha256: str | None = None, copy_to: str | os.PathLike | None = None,
                  ) -> tuple[Path, download.Fetched | None]:
    """A local file for manifest path ``value`` (``item`` names the entry in messages): the file
    itself, or the complete download of a URL (then also the Fetched record; the caller ends its
    use with ``fetched.release(remove=not cfg["keep_downloads"])``). With ``copy_to`` a download is
    handed out as the caller's private hard link (else copy) ``copy_to``, which is then the path
    returned: other jobs sharing the URL cannot remove it. ``cfg`` is validate_params()'s. Raises
    SourceError (refused source, download failed, sha256 mismatch) or MediaError (no such file).
    """
    try:
        kind, where = check_source(value, manifest_path, cfg["data_root"])
    except SourceError as e:
        raise SourceError(e.kind, f"{item} path {value!r}: {e}") from None
    if kind == "url":
        try:
            fetched = download.fetch(
                str(where), cfg["download_dir"], retries=cfg["retries"], backoff=cfg["backoff_seconds"],
                max_backoff=cfg["max_backoff_seconds"], timeout=cfg["timeout_seconds"],
                max_bytes=cfg["max_download_bytes"], deadline=cfg["download_deadline_seconds"],
                stale_part_seconds=cfg["stale_part_hours"] * 3600, expected_sha256=expected_sha256, copy_to=copy_to)
        except download.ChecksumMismatch as e:
            raise SourceError("sha256 mismatch", str(e)) from None
        except download.TooLarge as e:
            raise SourceError("too large", f"{e} (ingest.max_download_bytes)") from None
        except download.DeadlineExceeded as e:
            raise SourceError("download failed", f"{e} (ingest.download_deadline_seconds "
                                                 f"{cfg['download_deadline_seconds']:g})") from None
        except download.DownloadError as e:
            raise SourceError("download failed", str(e)) from None
        return fetched.copy or fetched.path, fetched
    src = Path(where)
    if not src.is_file():
        raise MediaError(f"{src}: no such file")
    if expected_sha256:
        digest = sha256_or_raise(src)
        if digest != expected_sha256.lower():
            raise SourceError("sha256 mismatch",
                              f"{src} has sha256 {digest}, the manifest says {expected_sha256.lower()}")
    return src, None


def sha256_or_raise(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as e:
        raise MediaError(f"{path}: cannot read ({e.strerror or e})") from e
