"""`python -m pvtt serve` over real HTTP on 127.0.0.1: a real uvicorn process with a tiny trained
teacher, real multipart uploads, the queue, cancel, limits, the cache and a restart."""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from test_checkpoint import TD, make_tiny_latents, teacher_params

from genbuild.io.video import probe, write_video
from pvtt.bench.gpu_check_dit import free_port

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow  # a server process: make test, not test-fast


def _template(path: Path, frames: int = 12, size: tuple[int, int] = (64, 64)) -> bytes:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    clip = []
    for f in range(frames):
        im = np.dstack([100 + xx % 150, 100 + xx % 150, 110 + yy % 140]).clip(0, 255).astype(np.uint8)
        im[h // 3:h // 3 + 20, 16 + f % 20:34 + f % 20] = (200, 30, 30)  # a red box: the product to replace
        clip.append(im)
    write_video(path, np.stack(clip), 24)
    return path.read_bytes()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from pvtt.train.teacher import train_teacher

    base = tmp_path_factory.mktemp("serve")
    train_teacher(make_tiny_latents(base), base / "teacher", teacher_params(iterations=2))
    prod = np.full((48, 48, 3), 255, np.uint8)
    prod[10:38, 14:34] = (20, 60, 200)
    Image.fromarray(prod).save(base / "product.png")
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    full["pvtt"]["train_data"] = TD
    full["pvtt"]["eval"]["teacher_steps"] = 3
    full["pvtt"]["deploy"]["serve"].update({"queue_limit": 1, "max_upload_mb": 0.5, "max_seconds": 1.5,
                                            "max_width": 100, "max_height": 100})
    (base / "params.yaml").write_text(yaml.safe_dump(full))
    files = {"template": _template(base / "template.mp4"), "product": (base / "product.png").read_bytes()}
    return base, files


class Server:
    def __init__(self, base: Path, root: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root.parent / f"server-{self.port}.log", "w")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        self.proc = subprocess.Popen([sys.executable, "-m", "pvtt", "serve", "--params", str(base / "params.yaml"),
                                      "--model", str(base / "teacher"), "--root", str(root), "--port", str(self.port)],
                                     cwd=ROOT, stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/service", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
            assert self.proc.poll() is None, (root.parent / f"server-{self.port}.log").read_text()[-3000:]
        raise AssertionError("the service did not start")

    def stop(self, sig=signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(30)
        self.log.close()


@contextlib.contextmanager
def _http_server(directory: Path):
    """A real HTTP server on 127.0.0.1 serving ``directory``; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _post(url: str, files: dict, options: dict | None = None, caption: str = "a blue box") -> httpx.Response:
    data = {"caption": caption, **({"options": json.dumps(options)} if options is not None else {})}
    return httpx.post(f"{url}/v1/tasks", files={k: (f"{k}.{'mp4' if k == 'template' else 'png'}", v) for k, v in files.items()},
                      data=data, timeout=60)


def _wait(url: str, task_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = httpx.get(f"{url}/v1/tasks/{task_id}", timeout=10).json()
        if st["status"] in statuses:
            return st
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} still {st}")


def test_edit_cancel_queue_limits_cache_and_restart(setup, tmp_path):
    base, files = setup
    root = tmp_path / "serve"
    srv = Server(base, root)
    try:
        health = httpx.get(f"{srv.url}/v1/service").json()
        assert health["status"] == "ok" and health["kind"] == "teacher" and health["queue_depth"] == 0

        # one edit end to end: an mp4 at the template's frame rate and the model's size
        r = _post(srv.url, files)
        assert r.status_code == 201 and not r.json()["cached"], r.text
        done = _wait(srv.url, r.json()["id"])
        assert done["status"] == "succeeded" and done["progress"] == 1.0, done
        assert set(done["seconds"]) == {"encode", "denoise", "decode", "total"}
        video = httpx.get(f"{srv.url}{done['result']}")
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        (tmp_path / "out.mp4").write_bytes(video.content)
        info = probe(tmp_path / "out.mp4")
        assert (info.width, info.height, info.fps) == (TD["width"], TD["height"], 24.0)

        # the same inputs and options again: answered from the content-addressed result at once
        again = _post(srv.url, files)
        assert again.status_code == 201 and again.json() == {"id": again.json()["id"], "status": "succeeded", "cached": True}

        # a long edit runs, one waits, the next is refused (queue_limit 1); cancel stops both
        long = _post(srv.url, files, {"steps": 100000}).json()["id"]
        _wait(srv.url, long, ("running",))
        waiting = _post(srv.url, files, {"steps": 100000, "seed": 1}).json()["id"]
        full = _post(srv.url, files, {"steps": 100000, "seed": 2})
        assert full.status_code == 429 and "deploy.serve.queue_limit" in full.json()["error"]
        assert httpx.get(f"{srv.url}/v1/service").json()["queue_depth"] == 1
        assert httpx.delete(f"{srv.url}/v1/tasks/{waiting}").json()["status"] == "cancelled"
        httpx.delete(f"{srv.url}/v1/tasks/{long}")
        stopped = _wait(srv.url, long)
        assert stopped["status"] == "cancelled" and 0 < stopped["progress"] < 1, stopped
        assert httpx.get(f"{srv.url}/v1/tasks/{long}/result").status_code == 409

        # bad uploads: each refused with its status and a message naming the limit or the input
        bad = [({**files, "template": b"\x00" * 4000}, 422, "not a readable video"),
               ({**files, "product": b"not an image"}, 422, "not a readable image"),
               ({**files, "template": b"\x00" * 600_000}, 413, "deploy.serve.max_upload_mb"),
               ({**files, "template": _template(tmp_path / "long.mp4", frames=60)}, 422, "deploy.serve.max_seconds"),
               ({**files, "template": _template(tmp_path / "wide.mp4", size=(128, 64))}, 422, "deploy.serve.max_width")]
        for upload, code, message in bad:
            res = _post(srv.url, upload)
            assert res.status_code == code and message in res.json()["error"], (code, res.text)
        assert _post(srv.url, files, {"stpes": 3}).status_code == 422

        # inputs by URL, under the ingest policy: http(s) is fetched, another scheme is refused
        with _http_server(base) as web:
            by_url = httpx.post(f"{srv.url}/v1/tasks", data={"template_url": f"{web}/template.mp4",
                                                              "product_url": f"{web}/product.png", "caption": "a blue box"})
            assert by_url.status_code == 201 and by_url.json()["cached"], by_url.text  # the same bytes as the first edit
        refused = httpx.post(f"{srv.url}/v1/tasks", data={"template_url": "ftp://example.com/t.mp4",
                                                          "product_url": "ftp://example.com/p.png"})
        assert refused.status_code == 422 and "scheme 'ftp' is not allowed" in refused.json()["error"]
        both = httpx.post(f"{srv.url}/v1/tasks", files={"template": ("t.mp4", files["template"])},
                          data={"template_url": "http://127.0.0.1:1/t.mp4", "product_url": "http://127.0.0.1:1/p.png"})
        assert both.status_code == 422 and "exactly one" in both.json()["error"]
        assert httpx.get(f"{srv.url}/v1/tasks/nope").status_code == 404
        assert not list((root / "uploads").glob("*/*.part"))
    finally:
        srv.stop()

    # a restart (after SIGKILL) loses no finished result
    srv = Server(base, root)
    try:
        st = httpx.get(f"{srv.url}/v1/tasks/{r.json()['id']}").json()
        assert st["status"] == "succeeded"
        assert httpx.get(f"{srv.url}{st['result']}").content == video.content
        assert httpx.get(f"{srv.url}/v1/tasks/{long}").json()["status"] == "cancelled"
        assert _post(srv.url, files).json()["cached"]
    finally:
        srv.stop(signal.SIGTERM)
