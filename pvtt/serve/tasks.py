"""The inference service's tasks: a bounded queue, one worker with the model loaded once, results on disk.

Everything a task is lives under ``deploy.serve.root`` (``work/serve`` by default), so a restarted
service loses nothing: ``tasks/<id>.json`` (status, progress, error, the options), ``uploads/<id>/``
(the template and the product as received) and ``results/<key>.mp4``. ``key`` is the sha256 of the
inputs' bytes, the caption, the options and the model's identity: the same request answered once
is answered again from the file, at once. At start-up finished tasks are kept as they are and
tasks that were queued or running are queued again (their inputs are on disk).

Limits (``deploy.serve``) are checked before a task is queued, each error naming the limit:
upload bytes (413), template duration and resolution, unreadable media (422), a full queue (429).
"""
from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from genbuild.io.jsonio import write_json
from genbuild.io.video import MediaError, probe, write_video
from genbuild.manifest import sha256_file

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class ServiceError(Exception):
    """A refused request: ``status`` is the HTTP status, the message names the limit or the input."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Task:
    id: str
    key: str
    status: str = "queued"
    progress: float = 0.0
    caption: str = ""
    options: dict = field(default_factory=dict)
    template: str = ""              # file names under uploads/<id>/
    product: str = ""
    fps: float = 0.0
    error: str | None = None
    cached: bool = False
    created: float = field(default_factory=time.time)
    seconds: dict = field(default_factory=dict)

    def public(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("template", "product")}
        out["result"] = f"/v1/tasks/{self.id}/result" if self.status == "succeeded" else None
        return out


class TaskService:
    """``edit(task, template_path, product_path, on_step) -> (frames, fps, seconds)`` does the work;
    ``identity`` names the model (part of every result's key)."""

    def __init__(self, root: Path, limits: dict, edit, identity: str):
        self.root, self.limits, self.edit, self.identity = Path(root), dict(limits), edit, identity
        for d in ("tasks", "uploads", "results"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.tasks: dict[str, Task] = {}
        self.cancel_requested: set[str] = set()
        self.lock = threading.Lock()
        self.queue: queue.Queue[str] = queue.Queue()
        self.running: str | None = None
        self._recover()
        self.worker = threading.Thread(target=self._work, name="pvtt-serve-worker", daemon=True)
        self.worker.start()

    # -- persistence -----------------------------------------------------------------------------
    def _save(self, task: Task) -> None:
        write_json(self.root / "tasks" / f"{task.id}.json", asdict(task))

    def result_path(self, task: Task) -> Path:
        return self.root / "results" / f"{task.key}.mp4"

    def _recover(self) -> None:
        """Reload every task; queue again those that had not finished (sorted by creation time)."""
        for f in sorted((self.root / "tasks").glob("*.json")):
            try:
                task = Task(**json.loads(f.read_text()))
            except (ValueError, TypeError) as e:
                log.warning("serve: ignoring unreadable task file %s (%s)", f, e)
                continue
            self.tasks[task.id] = task
        for task in sorted(self.tasks.values(), key=lambda t: t.created):
            if task.status in ("queued", "running"):
                task.status, task.progress = "queued", 0.0
                self._save(task)
                self.queue.put(task.id)
        log.info("serve: %d tasks on disk, %d queued again", len(self.tasks), self.queue.qsize())

    # -- requests --------------------------------------------------------------------------------
    def depth(self) -> int:
        return sum(t.status == "queued" for t in self.tasks.values())

    def submit(self, template: tuple[str, bytes], product: tuple[str, bytes], caption: str, options: dict) -> Task:
        """Check the inputs against the limits, then answer from the cache or queue the task."""
        lim = self.limits
        for what, (name, data) in (("template", template), ("product", product)):
            if len(data) > lim["max_upload_mb"] * 2 ** 20:
                raise ServiceError(413, f"{what} '{name}' is {len(data) / 2 ** 20:.1f} MB, over deploy.serve.max_upload_mb "
                                        f"({lim['max_upload_mb']} MB)")
            if not data:
                raise ServiceError(422, f"{what} '{name}' is empty")
        key = hashlib.sha256(json.dumps([hashlib.sha256(template[1]).hexdigest(), hashlib.sha256(product[1]).hexdigest(),
                                         caption, options, self.identity], sort_keys=True).encode()).hexdigest()
        task = Task(id=uuid.uuid4().hex, key=key, caption=caption, options=options)
        up = self.root / "uploads" / task.id
        up.mkdir(parents=True)
        task.template, task.product = "template" + Path(template[0]).suffix.lower(), "product" + Path(product[0]).suffix.lower()
        (up / task.template).write_bytes(template[1])
        (up / task.product).write_bytes(product[1])
        try:
            task.fps = self._check_template(up / task.template, template[0])
            self._check_product(up / task.product, product[0])
        except ServiceError:
            self._discard(up)
            raise
        with self.lock:
            if self.result_path(task).is_file():
                task.status, task.progress, task.cached = "succeeded", 1.0, True
            elif self.depth() >= lim["queue_limit"]:
                self._discard(up)
                raise ServiceError(429, f"the queue is full ({lim['queue_limit']} tasks waiting, deploy.serve.queue_limit); "
                                        "retry later")
            self.tasks[task.id] = task
            self._save(task)
            if task.status == "queued":
                self.queue.put(task.id)
        return task

    @staticmethod
    def _discard(up: Path) -> None:
        for f in up.iterdir():
            f.unlink()
        up.rmdir()

    def _check_template(self, path: Path, name: str) -> float:
        lim = self.limits
        try:
            info = probe(path)
        except MediaError as e:
            raise ServiceError(422, f"template '{name}' is not a readable video ({e})") from None
        if info.duration > lim["max_seconds"]:
            raise ServiceError(422, f"template '{name}' lasts {info.duration:.1f} s, over deploy.serve.max_seconds "
                                    f"({lim['max_seconds']} s)")
        if info.width > lim["max_width"] or info.height > lim["max_height"]:
            raise ServiceError(422, f"template '{name}' is {info.width}x{info.height}, over deploy.serve.max_width x "
                                    f"max_height ({lim['max_width']}x{lim['max_height']})")
        return float(info.fps)

    @staticmethod
    def _check_product(path: Path, name: str) -> None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
        except (UnidentifiedImageError, OSError) as e:
            raise ServiceError(422, f"product '{name}' is not a readable image ({e})") from None

    def get(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise ServiceError(404, f"no task '{task_id}'")
        return task

    def cancel(self, task_id: str) -> Task:
        task = self.get(task_id)
        with self.lock:
            if task.status == "queued":
                task.status = "cancelled"
                self._save(task)
            elif task.status == "running":
                self.cancel_requested.add(task_id)  # the worker stops at the next step
        return task

    # -- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            task = self.tasks[self.queue.get()]
            with self.lock:
                if task.status != "queued":  # cancelled while waiting
                    continue
                task.status, self.running = "running", task.id
                self._save(task)
            self._run(task)
            with self.lock:
                self.running = None
                self.cancel_requested.discard(task.id)
                self._save(task)

    def _run(self, task: Task) -> None:
        from pvtt.deploy.editor import Cancelled

        up = self.root / "uploads" / task.id

        def on_step(done: int, steps: int) -> bool:
            task.progress = round(done / steps, 6)
            return task.id not in self.cancel_requested

        try:
            frames, fps, seconds = self.edit(task, up / task.template, up / task.product, on_step)
            write_video(self.result_path(task), frames, fps)  # atomic: a result file is always whole
            task.status, task.progress, task.seconds = "succeeded", 1.0, seconds
        except Cancelled:
            task.status = "cancelled"
        except Exception as e:  # a bad input found while editing: the task fails, the service goes on
            task.status, task.error = "failed", f"{e.__class__.__name__}: {e}"
            log.warning("serve: task %s failed: %s", task.id, task.error)


def model_identity(model_dir: Path, form: str) -> str:
    """The weights' sha256 and the form: a result is only reused for the same model."""
    weights = Path(model_dir) / "model.safetensors"
    return f"{sha256_file(weights) if weights.is_file() else model_dir}:{form}"
