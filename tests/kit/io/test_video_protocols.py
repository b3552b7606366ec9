"""genbuild/io/video.py opens exactly the named local file: no ffmpeg protocol or playlist tricks.

ffmpeg reads ``name:rest`` as a URL: a relative path ``file:/elsewhere/x.mp4`` (a directory
named ``file:``) would open /elsewhere/x.mp4, and an HLS playlist under the data root would
pull its segments from anywhere. Real ffmpeg, real files.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from genbuild.io import video as V


def make_video(path: Path, size: str, seconds: float = 1, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size={size}:rate=25:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", *(["-f", fmt] if fmt else []), str(path)], check=True)
    return path


def test_file_colon_name_is_opened_as_itself(tmp_path, monkeypatch):
    outside = make_video(tmp_path / "elsewhere" / "x.mp4", "64x48")
    cwd = tmp_path / "data"
    # The literal relative name "file:<outside>": a directory "file:" under the working directory.
    trick_rel = Path("file:" + str(outside))
    make_video(cwd / trick_rel, "32x24")
    monkeypatch.chdir(cwd)
    assert trick_rel.exists() and not trick_rel.is_absolute()

    info = V.probe(trick_rel)
    assert (info.width, info.height) == (32, 24), "ffprobe opened the file outside, not the named one"
    assert V.probe(trick_rel, count_frames=False).width == 32
    frames = V.read_frames(trick_rel)
    assert frames.shape[1:] == (24, 32, 3)
    assert V.read_frames(trick_rel, size=(16, 12)).shape[1:] == (12, 16, 3)


def test_write_video_to_file_colon_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = Path("file:" + str(tmp_path / "elsewhere" / "out.mp4"))
    (tmp_path / target).parent.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    V.write_video(target, np.zeros((3, 16, 16, 3), np.uint8), 25, preset="ultrafast")
    assert (tmp_path / target).is_file()
    assert not (tmp_path / "elsewhere" / "out.mp4").exists()
    assert V.probe(target).n_frames == 3


def test_hls_playlist_pulling_outside_segments_is_refused(tmp_path):
    seg = make_video(tmp_path / "elsewhere" / "seg.ts", "64x48", fmt="mpegts")
    root = tmp_path / "root"
    root.mkdir()
    playlist = root / "video.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{seg}\n"
                        "#EXT-X-ENDLIST\n")
    for call in (lambda: V.probe(playlist), lambda: V.probe(playlist, count_frames=False),
                 lambda: V.read_frames(playlist, size=(16, 12))):
        with pytest.raises(V.FormatError) as e:
            call()
        assert str(playlist) in str(e.value) and "'hls'" in str(e.value) and "not allowed" in str(e.value)
    # Disguised as an mp4 by its name: the content decides.
    disguised = root / "video.mp4"
    disguised.write_text(playlist.read_text())
    with pytest.raises(V.FormatError, match="'hls'"):
        V.probe(disguised)


def test_concat_list_is_refused(tmp_path):
    seg = make_video(tmp_path / "elsewhere" / "a.mp4", "64x48")
    lst = tmp_path / "root" / "list.mp4"
    lst.parent.mkdir()
    lst.write_text(f"ffconcat version 1.0\nfile '{seg}'\n")
    with pytest.raises(V.MediaError, match="not allowed|not a readable video") as e:
        V.probe(lst)
    assert str(lst) in str(e.value)
    with pytest.raises(V.MediaError):
        V.read_frames(lst, size=(16, 12))


def test_allowed_containers_still_read(tmp_path):
    for name, fmt in (("a.mkv", None), ("a.webm", None), ("a.avi", None), ("a.ts", "mpegts"), ("a.mov", None)):
        if name == "a.webm":
            p = tmp_path / name
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                            "testsrc=size=32x24:rate=25:duration=1", "-c:v", "libvpx-vp9", "-deadline", "realtime",
                            str(p)], check=True)
        else:
            p = make_video(tmp_path / name, "32x24", fmt=fmt)
        assert (V.probe(p).width, V.read_frames(p, size=(32, 24)).shape[2]) == (32, 32), name


@pytest.fixture()
def limits():
    """video.LIMITS restored in place after the test (configure_timeouts changes the process's
    limits; stages hold the same dict object)."""
    saved = dict(V.LIMITS)
    yield V.LIMITS
    V.LIMITS.clear()
    V.LIMITS.update(saved)


def test_every_media_process_has_a_timeout(tmp_path, limits):
    p = make_video(tmp_path / "a.mp4", "32x24")
    V.configure_timeouts({"count": 1e-4})
    with pytest.raises(V.MediaTimeout, match=r"a\.mp4: ffprobe timed out after .*video\.timeouts\.count"):
        V.probe(p)
    V.configure_timeouts({"probe": 1e-4})
    with pytest.raises(V.MediaTimeout, match="timed out"):
        V.probe(p, count_frames=False)
    with pytest.raises(V.MediaTimeout, match="timed out"):
        V.probe_extent(p)
    V.configure_timeouts({"decode": 1e-4})
    with pytest.raises(V.MediaTimeout, match="decode timed out"):
        V.read_frames(p, size=(16, 12))
    V.configure_timeouts({"encode": 1e-4})
    with pytest.raises(V.MediaTimeout, match="encode timed out"):
        V.write_video(tmp_path / "b.mp4", np.zeros((2, 16, 16, 3), np.uint8), 25)
    assert not (tmp_path / "b.mp4").exists()


def test_stage_processes_over_the_whole_source_have_a_timeout(tmp_path, limits):
    from pvtt.data import ingest, shots
    p = make_video(tmp_path / "a.mkv", "32x24", seconds=2, fmt="matroska")
    V.configure_timeouts({"stream": 1e-3})
    with pytest.raises(V.MediaTimeout, match=r"remux timed out .*video\.timeouts\.stream"):
        ingest._remux_to_mp4(p, tmp_path / "out.mp4")
    with pytest.raises(V.MediaTimeout, match=r"decode timed out .*video\.timeouts\.stream"):
        list(shots.iter_frames_bgr(p, (16, 12)))


@pytest.mark.parametrize("bad", [{"probe": 0}, {"probe": "1"}, {"probe": True}, {"probe": float("inf")}, {"nope": 1}])
def test_bad_timeouts_name_the_key(bad, limits):
    with pytest.raises(ValueError, match=r"video\.timeouts\."):
        V.configure_timeouts(bad)


def test_stage_parser_applies_the_timeouts_from_the_environment(monkeypatch, limits, capsys):
    from genbuild import stage
    monkeypatch.setenv(stage.TIMEOUTS_ENV, '{"decode": 7.5}')
    stage.parser("x").parse_args([])
    assert limits["decode"] == 7.5 and limits["probe"] == V.DEFAULT_TIMEOUTS["probe"]
    monkeypatch.setenv(stage.TIMEOUTS_ENV, '{"decode": -1}')
    with pytest.raises(SystemExit):
        stage.parser("x").parse_args([])
    assert "video.timeouts.decode" in capsys.readouterr().err


def test_no_subprocess_without_a_time_limit():
    """Every subprocess call in the packages passes ``timeout=`` (or goes through run_tool); the one
    streaming Popen (shots) has its watchdog, tested above."""
    import ast
    root = Path(__file__).resolve().parents[3]
    missing = []
    for f in sorted([*root.glob("genbuild/**/*.py"), *root.glob("pvtt/**/*.py")]):
        if "bench" in f.parts:                      # developer benchmarks, not the build
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess"
                    and node.func.attr in ("run", "call", "check_call", "check_output", "Popen")):
                if node.func.attr == "Popen" and f.name == "shots.py":
                    continue
                if not any(k.arg == "timeout" for k in node.keywords):
                    missing.append(f"{f.relative_to(root)}:{node.lineno}")
    assert not missing, f"subprocess calls without a timeout: {missing}"


def test_error_text_names_the_path_as_given_not_the_file_url(tmp_path, monkeypatch):
    """Reject reasons land in artifacts: they must not depend on where the checkout is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.mp4").write_bytes(bytes(range(256)) * 20)
    for given in ("bad.mp4", tmp_path / "bad.mp4"):
        with pytest.raises(V.MediaError) as e:
            V.probe(given)
        assert "file:" not in str(e.value) and str(e.value).startswith(f"{given}: not a readable video ({given}:")
