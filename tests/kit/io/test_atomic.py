"""genbuild.io.atomic: outputs are fsynced before the rename (and their directory after it),
and the clean-up of temporary siblings spares those of live other processes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import genbuild.io.atomic as atomic


@pytest.fixture
def events(monkeypatch):
    """Every fsync (as the path its fd names) and every rename, in order."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        seen.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def _order(seen, kind, path):
    return seen.index((kind, str(path)))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_file_is_fsynced_before_rename_and_parent_after(tmp_path, events):
    out = tmp_path / "sub" / "out.bin"
    atomic.write_bytes(out, b"abc")
    assert out.read_bytes() == b"abc" and sorted(p.name for p in out.parent.iterdir()) == ["out.bin"]
    tmp = out.parent / f".out.bin.tmp-{os.getpid()}"
    assert ("fsync", str(tmp)) in events, events
    assert _order(events, "fsync", tmp) < _order(events, "replace", out)
    after = [e for e in events[_order(events, "replace", out):] if e == ("fsync", str(out.parent))]
    assert after, events  # the rename itself is made durable


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_directory_output_fsyncs_every_file_and_directory(tmp_path, events):
    out = tmp_path / "art"
    with atomic.atomic_path(out, directory=True) as tmp:
        (tmp / "a.txt").write_text("a")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "b.txt").write_text("b")
    assert (out / "a.txt").read_text() == "a" and (out / "nested" / "b.txt").read_text() == "b"
    rename = _order(events, "replace", out)
    for p in (tmp / "a.txt", tmp / "nested" / "b.txt", tmp / "nested", tmp):
        assert _order(events, "fsync", p) < rename, (p, events)
    assert ("fsync", str(tmp_path)) in events[rename:]
    atomic.write_text(tmp_path / "t.txt", "é")
    assert (tmp_path / "t.txt").read_bytes() == "é".encode()


def test_failed_write_leaves_final_untouched(tmp_path):
    out = tmp_path / "out.txt"
    atomic.write_text(out, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_stale_temps_of_live_processes_are_kept(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()  # reaped: its pid names no process (until reused, which a test run will not see)
        live_tmp = tmp_path / f".out.txt.tmp-{child.pid}"
        live_tmp.write_text("another writer, still at work")
        odd = tmp_path / ".out.txt.tmp-unknown"  # no pid: not ours to judge, kept
        odd.mkdir()
        dead_tmp = tmp_path / f".out.txt.tmp-{dead.pid}"
        dead_tmp.mkdir()
        (dead_tmp / "f").write_text("left by a killed job")
        own_tmp = tmp_path / f".out.txt.tmp-{os.getpid()}"
        own_tmp.write_text("ours, from an earlier attempt")
        atomic.write_text(tmp_path / "out.txt", "new")
        assert (tmp_path / "out.txt").read_text() == "new"
        assert live_tmp.read_text() == "another writer, still at work"
        assert odd.is_dir()
        assert not dead_tmp.exists() and not own_tmp.exists()
    finally:
        child.kill()
        child.wait()


def test_pid_alive():
    assert not atomic.pid_alive(os.getpid())
    assert atomic.pid_alive(1)  # init: exists (PermissionError counts as alive)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not atomic.pid_alive(p.pid)
