"""Resumable http(s) downloads for the ingest stage (stdlib ``urllib`` only).

A URL is fetched into a stable cache directory (``ingest.download_dir``, default
``work/downloads``), never into a job's temporary output, so that the bytes received so far
survive a failed attempt, a killed job and a new run::

    <key>.part        bytes received so far; key = sha256 of the URL (hex)
    <key>.part.json   {"url", "validator"}: ETag (strong) or Last-Modified of the response that
                      started the .part, sent as If-Range when resuming
    <key><suffix>     the complete file (suffix of the URL's path, e.g. ".mp4"), renamed
                      atomically from <key>.part once every byte is in and its sha256 checked
    <key>.lock        an empty file, flock()ed while a process downloads that URL (two jobs
                      with the same URL wait for each other instead of writing one .part twice)
                      and while one hands the complete file out (``copy_to``) or removes it
    <key>.users.lock  an empty file that every job using the URL holds a shared flock() on, from
                      before it waits for <key>.lock until Fetched.release(): the complete file
                      is removed only when no other job holds it (Fetched.release(remove=True))

An attempt with a non-empty ``.part`` sends ``Range: bytes=N-`` (and ``If-Range``): a ``206``
whose ``Content-Range`` starts at N is appended, a ``200`` (server without ranges, or the
resource changed) restarts from byte 0, a ``416`` with the full size equal to N means the
``.part`` was already complete. Connection errors, timeouts (``timeout`` seconds per socket
operation), short bodies and HTTP 408/425/429/5xx are retried ``retries`` times (at most MAX_RETRIES) with
exponential backoff (``backoff * 2**k`` seconds, each wait at most ``max_backoff``); other HTTP
errors (404, 403, ...) and redirects to a scheme other than http/https fail at once.

Bounds, so that a hostile or broken server cannot hold a job forever or fill the disk:
``max_bytes`` caps the resource (a Content-Length or a body beyond it fails at once, TooLarge,
and its ``.part`` is deleted), ``deadline`` caps the whole call, attempts and waits included
(DeadlineExceeded; the ``.part`` is kept for a later run to resume), and a ``.part`` untouched
for ``stale_part_seconds`` whose URL no job is downloading is deleted by the next fetch into the
same directory (an abandoned download does not stay on disk forever). A sha256 that does not match
``expected_sha256`` deletes the ``.part`` (resuming it would only reproduce the mismatch).

The complete file is shared by every job with the same URL (e.g. eight manifest entries, eight
concurrent ingest jobs). ``fetch(..., copy_to=p)`` hard-links (else copies) it to the caller's
private path ``p`` while still holding ``<key>.lock``, so nothing another job does to the cache
afterwards can touch the caller's bytes. The caller ends its use with ``Fetched.release(remove)``
once its output is in place: pvtt/data/ingest.py removes the cache file that way (unless
``ingest.keep_downloads``), and it is removed only if no other job still holds it (a job waiting
for the same URL finds it and does not download again; the last one removes it). A complete file
found at the start of a run (a job killed after the download) is reused when it matches
``expected_sha256`` (or when none is given).
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from genbuild.io.atomic import link_or_copy
from genbuild.manifest import sha256_file

log = logging.getLogger("genbuild.download")

SCHEMES = ("http", "https")
CHUNK = 1 << 16
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)
_UNSAT_RANGE_RE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.I)
_SUFFIX_RE = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
MAX_RETRIES = 20                  # the schema's bound too (ingest.retries)


class DownloadError(Exception):
    """A URL that could not be fetched; the message names it and says why."""


class ChecksumMismatch(DownloadError):
    """The fetched bytes do not have the expected sha256."""


class TooLarge(DownloadError):
    """The resource is larger than the caller's ``max_bytes``."""


class DeadlineExceeded(DownloadError):
    """The download did not complete within the caller's ``deadline``."""


class _Transient(Exception):
    """A failure worth another attempt."""


class _Permanent(Exception):
    """A failure that another attempt will not fix."""


class _TooLarge(_Permanent):
    """The resource exceeds max_bytes (its .part is useless)."""


class _Deadline(Exception):
    """The overall deadline passed (the .part is kept for a later run)."""


@dataclass(frozen=True)
class _Bounds:
    """What one fetch() may spend: socket ``timeout`` per operation, ``max_bytes`` of resource and
    ``deadline_at`` (a ``clock()`` reading; None: no deadline)."""
    timeout: float
    max_bytes: int | None
    deadline_at: float | None
    clock: Callable[[], float]

    def left(self) -> float:
        """Seconds until the deadline (inf without one); _Deadline once it has passed."""
        if self.deadline_at is None:
            return float("inf")
        left = self.deadline_at - self.clock()
        if left <= 0:
            raise _Deadline("the deadline passed")
        return left

    def socket_timeout(self) -> float:
        return min(self.timeout, self.left())

    def check_size(self, size: int, what: str) -> None:
        if self.max_bytes is not None and size > self.max_bytes:
            raise _TooLarge(f"{what} {size} bytes, over the cap of {self.max_bytes} bytes")


class _Claim:
    """A shared flock() on ``<key>.users.lock``: this job still needs the URL's complete file."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "a+b")
        try:
            import fcntl
            fcntl.flock(self._f.fileno(), fcntl.LOCK_SH)
        except ImportError:  # pragma: no cover - not POSIX
            pass

    def sole_user(self) -> bool:
        """True when no other job holds a claim (this one is given up, as by close())."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no other job can be seen
            return True
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()                                  # releases the flock

    def __del__(self) -> None:                               # a caller that never called release()
        self.close()


@dataclass(frozen=True)
class Fetched:
    path: Path            # the complete file in the cache directory (shared with other jobs)
    sha256: str
    size: int
    attempts: int         # HTTP attempts made by this call (0: a complete cached file was reused)
    resumed_from: int     # bytes already in the .part when this call started
    copy: Path | None = None                                 # the caller's private copy (copy_to)
    _claim: _Claim | None = field(default=None, repr=False, compare=False)

    def release(self, remove: bool = False) -> None:
        """End this job's use of the cache file; with ``remove`` delete it unless another job
        (waiting for or using the same URL) still holds it. Idempotent."""
        claim = self._claim
        lock = self.path.parent / f"{self.path.name.split('.')[0]}.lock"      # <key>.lock
        if claim is None:
            if remove:
                with _locked(lock):
                    self.path.unlink(missing_ok=True)
            return
        if claim.closed:
            return
        if not remove:
            claim.close()
            return
        with _locked(lock):                                  # no job is handed the file meanwhile
            if claim.sole_user():
                self.path.unlink(missing_ok=True)
            claim.close()


def is_url(value: str) -> bool:
    return urllib.parse.urlsplit(str(value)).scheme.lower() in SCHEMES


def cache_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def url_suffix(url: str) -> str:
    """The suffix of the URL's path (".mp4"), lower case; "" when it has none usable."""
    suffix = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).suffix.lower()
    return suffix if _SUFFIX_RE.match(suffix) else ""


class _SafeRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would also follow one to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in SCHEMES:
            raise _Permanent(f"redirected ({code}) to {newurl!r}: scheme {scheme!r} is not allowed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_SafeRedirect())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _try_locked(path: Path) -> Iterator[bool]:
    """Hold ``path``'s flock if it is free at once: yields True (held) or False (another holds it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no other job can be seen
        yield False
        return
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _validator(headers) -> str | None:
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):       # If-Range takes strong validators only
        return etag
    return headers.get("Last-Modified")


def _restart(part: Path, meta_path: Path) -> None:
    part.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)


def _attempt(opener, url: str, part: Path, meta_path: Path, bounds: _Bounds) -> None:
    """One HTTP request continuing ``part``; returns when it holds the whole resource.

    The deadline is checked before the request and after every chunk; a read that stalls ends
    after the socket timeout, so a call overruns its deadline by at most one ``timeout``."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "pvtt-ingest/1", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = _read_meta(meta_path).get("validator")
        if validator:
            headers["If-Range"] = validator
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = opener.open(req, timeout=bounds.socket_timeout())
    except urllib.error.HTTPError as e:
        with contextlib.closing(e):
            if e.code == 416 and have:
                m = _UNSAT_RANGE_RE.match(e.headers.get("Content-Range") or "")
                if m and int(m.group(1)) == have:
                    return                                   # the .part was already complete
                _restart(part, meta_path)
                raise _Transient(f"HTTP 416 for a resume at byte {have}: restarting from 0") from None
            if e.code in RETRY_STATUS or e.code >= 500:
                raise _Transient(f"HTTP {e.code} {e.reason}") from None
            raise _Permanent(f"HTTP {e.code} {e.reason}") from None
    except _Permanent:
        raise
    except (ValueError, http.client.InvalidURL) as e:       # e.g. a space in the URL: not worth a retry
        raise _Permanent(f"invalid URL ({e})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise _Transient(f"{type(reason).__name__}: {reason}") from None
    with contextlib.closing(resp):
        if resp.status == 206 and have:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range") or "")
            if not m or int(m.group(1)) != have:
                _restart(part, meta_path)
                raise _Transient(f"server answered the resume at byte {have} with Content-Range "
                                 f"{resp.headers.get('Content-Range')!r}: restarting from 0")
            mode, start = "ab", have
        elif resp.status in (200, 203):
            if have:
                log.info("%s: server sent the whole file (HTTP %d): restarting from 0", url, resp.status)
            mode, start = "wb", 0
            meta_path.write_text(json.dumps({"url": url, "validator": _validator(resp.headers)}), encoding="utf-8")
        else:
            raise _Permanent(f"unexpected HTTP {resp.status} {resp.reason}")
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.strip().isdigit() else None
        if expected is not None:
            bounds.check_size(start + expected, "the server announces")
        got = 0
        # Unbuffered: every chunk written is in the file even if the job is killed right after.
        with open(part, mode, buffering=0) as f:
            try:
                while True:
                    chunk = resp.read1(CHUNK)   # what has arrived (read() would wait for a full chunk)
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    bounds.check_size(start + got, "received")
                    bounds.left()
            except (OSError, http.client.HTTPException, ValueError) as e:
                raise _Transient(f"connection lost after {start + got} bytes ({type(e).__name__}: {e})") from None
            finally:
                with contextlib.suppress(OSError):
                    os.fsync(f.fileno())
        if expected is not None and got < expected:
            raise _Transient(f"connection closed after {start + got} of {start + expected} bytes")


def _hand_out(final: Path, copy_to: Path | None) -> Path | None:
    """Hard-link (else copy) the complete file to the caller's private path ``copy_to``."""
    if copy_to is None:
        return None
    copy_to = Path(copy_to)
    copy_to.unlink(missing_ok=True)
    link_or_copy(final, copy_to)
    return copy_to


def fetch(url: str, cache_dir: str | os.PathLike, *, retries: int = 3, backoff: float = 1.0,
          timeout: float = 60.0, expected_sha256: str | None = None,
          sleep: Callable[[float], None] = time.sleep, copy_to: str | os.PathLike | None = None,
          max_bytes: int | None = None, deadline: float | None = None, max_backoff: float = 60.0,
          stale_part_seconds: float | None = None, clock: Callable[[], float] = time.monotonic) -> Fetched:
    """Download ``url`` (resuming a ``.part`` left by an earlier attempt or run) into ``cache_dir``.

    Returns the complete file; raises DownloadError (ChecksumMismatch, TooLarge, DeadlineExceeded)
    with a reason naming the URL. With ``copy_to`` the complete file is also hard-linked (else
    copied) there under the per-URL lock (``Fetched.copy``). The returned record holds this job's
    claim on the cache file until ``Fetched.release()`` (see the module docstring). ``deadline``
    (seconds) counts from this call, the wait for another job's download of the URL included.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise DownloadError(f"{url}: scheme {scheme!r} is not allowed (only http, https)")
    if not (isinstance(retries, int) and 0 <= retries <= MAX_RETRIES):
        raise ValueError(f"retries must be an integer in [0, {MAX_RETRIES}], got {retries!r}")
    bounds = _Bounds(timeout, max_bytes, None if deadline is None else clock() + deadline, clock)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    if stale_part_seconds is not None:
        sweep_stale_parts(cache, stale_part_seconds)
    claim = _Claim(cache / f"{cache_key(url)}.users.lock")   # before waiting for the download lock
    try:
        got = _fetch(url, cache, retries=retries, backoff=backoff, max_backoff=max_backoff, bounds=bounds,
                     expected_sha256=expected_sha256, sleep=sleep,
                     copy_to=Path(copy_to) if copy_to is not None else None)
    except BaseException:
        claim.close()
        raise
    return Fetched(got.path, got.sha256, got.size, got.attempts, got.resumed_from, got.copy, claim)


def sweep_stale_parts(cache: Path, max_age: float) -> list[Path]:
    """Delete the ``.part`` files (and their ``.part.json``) not written for ``max_age`` seconds
    whose URL no job is downloading now (its ``<key>.lock`` is free); return what was deleted."""
    removed = []
    cutoff = time.time() - max_age
    for part in sorted(cache.glob("*.part")):
        key = part.name[:-len(".part")]
        with contextlib.suppress(OSError), _try_locked(cache / f"{key}.lock") as free:
            if free and part.stat().st_mtime < cutoff:
                part.unlink()
                (cache / f"{key}.part.json").unlink(missing_ok=True)
                removed.append(part)
                log.info("removed the stale partial download %s (untouched for over %g s)", part, max_age)
    return removed


def _fetch(url: str, cache: Path, *, retries: int, backoff: float, max_backoff: float, bounds: _Bounds,
           expected_sha256: str | None, sleep: Callable[[float], None], copy_to: Path | None) -> Fetched:
    expected = expected_sha256.lower() if expected_sha256 else None
    key = cache_key(url)
    part, meta_path = cache / f"{key}.part", cache / f"{key}.part.json"
    final = cache / f"{key}{url_suffix(url)}"
    with _locked(cache / f"{key}.lock"):
        if final.is_file():
            digest = sha256_file(final)
            if expected is None or digest == expected:
                log.info("%s: reusing the complete download %s", url, final)
                return Fetched(final, digest, final.stat().st_size, 0, 0, _hand_out(final, copy_to))
            final.unlink()                                   # stale: fetch again
        resumed_from = part.stat().st_size if part.exists() else 0
        attempts = _attempts(url, part, meta_path, retries, backoff, max_backoff, bounds, sleep)
        if not part.exists():
            part.touch()                                     # an empty resource
        digest = sha256_file(part)
        size = part.stat().st_size
        if expected is not None and digest != expected:
            _restart(part, meta_path)
            raise ChecksumMismatch(f"{url}: downloaded {size} bytes with sha256 {digest}, "
                                   f"the manifest says {expected}")
        os.replace(part, final)                              # atomic: a complete file or none
        meta_path.unlink(missing_ok=True)
        copy = _hand_out(final, copy_to)
    log.info("%s: %d bytes in %d attempt(s) (resumed from byte %d) -> %s", url, size, attempts, resumed_from, final)
    return Fetched(final, digest, size, attempts, resumed_from, copy)


def _attempts(url: str, part: Path, meta_path: Path, retries: int, backoff: float, max_backoff: float,
              bounds: _Bounds, sleep: Callable[[float], None]) -> int:
    """Attempt until ``part`` holds the whole resource; return the number of attempts made."""
    opener = _opener()
    last = "no attempt made"
    for k in range(retries + 1):
        try:
            _attempt(opener, url, part, meta_path, bounds)
            return k + 1
        except _TooLarge as e:
            _restart(part, meta_path)
            raise TooLarge(f"{url}: {e}") from None
        except _Permanent as e:
            raise DownloadError(f"{url}: {e}") from None
        except _Deadline:
            break
        except _Transient as e:
            last = str(e)
            have = part.stat().st_size if part.exists() else 0
            log.warning("%s: attempt %d/%d failed (%s); %d bytes kept in %s", url, k + 1, retries + 1, last, have, part)
            if k == retries:
                raise DownloadError(f"{url}: no complete download after {k + 1} attempts (last error: {last})") from None
            wait = min(backoff * (2 ** k), max_backoff)
            try:
                if wait >= bounds.left():
                    break
            except _Deadline:
                break
            sleep(wait)
    have = part.stat().st_size if part.exists() else 0
    raise DeadlineExceeded(f"{url}: not complete within the deadline ({have} bytes kept in {part} for a later run; "
                           f"last error: {last})")
