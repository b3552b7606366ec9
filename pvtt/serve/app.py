"""``python -m pvtt serve``: the PVTT edit as an HTTP service (FastAPI on uvicorn), the model loaded once.

    POST   /v1/tasks              multipart: template (video) + product (image) files, or template_url /
                                  product_url (the ingest policy: http(s), or paths under ingest.data_root);
                                  caption; options (JSON: steps, seed, cfg_scale) -> 201 {id, status, cached}
    GET    /v1/tasks/{id}         status (queued, running, succeeded, failed, cancelled), progress, error
    DELETE /v1/tasks/{id}         cancel (a running edit stops at its next step)
    GET    /v1/tasks/{id}/result  the edited mp4, at the template's frame rate
    GET    /v1/service            health: model, form, queue depth and limit, the running task

The whole edit runs inside (``pvtt.deploy.editor``): decode, the build's mask backend and matting,
latents, the chosen student or engine (``deploy.form``), decode, mp4. Tasks, inputs and results
live under ``deploy.serve.root`` (``pvtt.serve.tasks``), so a restart loses no finished result.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from pathlib import Path

import yaml
from fastapi import FastAPI, File, Form, Request, UploadFile  # module level: the routes' annotations name them
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from genbuild.stage import setup_logging
from genbuild.workflow import namespace
from pvtt.serve.tasks import ServiceError, TaskService, model_identity

log = logging.getLogger(__name__)

OPTIONS = {"steps": int, "seed": int, "cfg_scale": float}


def parse_options(raw: str | None) -> dict:
    """The ``options`` field: a JSON object with known keys only, each of its type."""
    try:
        opts = json.loads(raw) if raw else {}
    except ValueError as e:
        raise ServiceError(422, f"options: not JSON ({e})") from None
    if not isinstance(opts, dict) or set(opts) - set(OPTIONS):
        raise ServiceError(422, f"options: an object with keys among {', '.join(OPTIONS)}, got {raw!r}")
    try:
        return {k: OPTIONS[k](v) for k, v in sorted(opts.items())}
    except (TypeError, ValueError) as e:
        raise ServiceError(422, f"options: {e}") from None


def make_edit(editor, params: dict):
    """The service's edit function: a task's files -> (frames, fps, seconds), with ``editor`` loaded
    once; the edit itself is ``generate``'s (``pvtt.deploy.generate.edit_files``)."""
    from pvtt.deploy.generate import edit_files

    def edit(task, template: Path, product: Path, on_step):
        o = task.options
        e = edit_files(editor, template, product, params, task.caption, o.get("steps"), o.get("cfg_scale"),
                       int(o.get("seed", 0)), on_step=on_step)
        return e.result.frames, e.fps, {k: round(v, 4) for k, v in e.result.seconds.items()}
    return edit


def fetch_url(value: str, what: str, params: dict, dest: Path) -> tuple[str, bytes]:
    """A ``template_url`` / ``product_url`` under the build's ingest policy (genbuild.sources)."""
    from genbuild.sources import SourceError, obtain_source
    from pvtt.data.ingest import validate_params

    cfg = validate_params({"ingest": params["ingest"]})
    try:
        path, fetched = obtain_source(value, dest / "request", cfg, what, copy_to=dest / f".{uuid.uuid4().hex}.{what}")
    except (SourceError, OSError, ValueError) as e:
        raise ServiceError(422, f"{what}: {e}") from None
    data = Path(path).read_bytes()
    if fetched is not None:
        fetched.release(remove=True)
        Path(path).unlink(missing_ok=True)
    return Path(value.split("?")[0]).name or what, data


def create_app(service: TaskService, info: dict, params: dict) -> FastAPI:
    app = FastAPI(title="PVTT edit service", version="1")

    @app.exception_handler(ServiceError)
    async def refused(request: Request, exc: ServiceError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def _read(upload: UploadFile | None, url: str | None, what: str) -> tuple[str, bytes]:
        if (upload is None) == (url is None):
            raise ServiceError(422, f"{what}: send exactly one of the file field '{what}' or '{what}_url'")
        if url is not None:
            # a download blocks: off the event loop, so status requests are answered meanwhile
            return await run_in_threadpool(fetch_url, url, what, params, service.root / "uploads")
        limit = int(service.limits["max_upload_mb"] * 2 ** 20)
        data = await upload.read(limit + 1)  # never more than the limit and one byte into memory
        return upload.filename or what, data

    @app.post("/v1/tasks", status_code=201)
    async def create(template: UploadFile | None = File(None), product: UploadFile | None = File(None),
                     template_url: str | None = Form(None), product_url: str | None = Form(None),
                     caption: str = Form(""), options: str | None = Form(None)):
        opts = parse_options(options)
        t, p = await _read(template, template_url, "template"), await _read(product, product_url, "product")
        task = service.submit(t, p, caption, opts)
        return {"id": task.id, "status": task.status, "cached": task.cached}

    @app.get("/v1/tasks/{task_id}")
    def status(task_id: str):
        return service.get(task_id).public()

    @app.delete("/v1/tasks/{task_id}")
    def cancel(task_id: str):
        return service.cancel(task_id).public()

    @app.get("/v1/tasks/{task_id}/result")
    def result(task_id: str):
        task = service.get(task_id)
        if task.status != "succeeded":
            raise ServiceError(409, f"task '{task_id}' is {task.status}: no result")
        return FileResponse(service.result_path(task), media_type="video/mp4", filename=f"{task_id}.mp4")

    @app.get("/v1/service")
    def health():
        return {"status": "ok", **info, "queue_depth": service.depth(), "queue_limit": service.limits["queue_limit"],
                "running": service.running, "tasks": len(service.tasks)}

    return app


def build_service(params: dict, threads: int = 1) -> tuple[TaskService, dict]:
    """The editor (model loaded once, ``deploy``'s form and kernels) and the task service around it."""
    from pvtt.deploy.generate import editor_from_params

    dp = params["deploy"]
    model = Path(dp["model"])
    editor = editor_from_params(model, params, threads)
    info = {"model": str(model), "form": editor.form, "attention": editor.attention, "kind": editor.config.get("kind")}
    service = TaskService(Path(dp["serve"]["root"]), dp["serve"], make_edit(editor, params), model_identity(model, editor.form))
    return service, info


def main(argv=None) -> int:
    setup_logging()
    ap = argparse.ArgumentParser(prog="python -m pvtt serve", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--host", default=None, help="default: deploy.serve.host")
    ap.add_argument("--port", type=int, default=None, help="default: deploy.serve.port")
    ap.add_argument("--model", type=Path, default=None, help="default: deploy.model (e.g. artifacts/student_4)")
    ap.add_argument("--root", type=Path, default=None, help="tasks, uploads and results (default: deploy.serve.root)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch
    import uvicorn

    torch.set_num_threads(max(1, a.threads))
    try:
        params = namespace(yaml.safe_load(a.params.read_text()), "pvtt")
        dp = params["deploy"]
        dp["model"] = str(a.model or dp["model"])
        dp["serve"]["root"] = str(a.root or dp["serve"]["root"])
        service, info = build_service(params, a.threads)
    except (FileNotFoundError, ValueError) as e:
        print(f"serve: {e}", file=sys.stderr)
        return 2
    host, port = a.host or dp["serve"]["host"], a.port or int(dp["serve"]["port"])
    log.info("serve: %s (%s) on http://%s:%d, results in %s", info["model"], info["form"], host, port, service.root)
    uvicorn.run(create_app(service, info, params), host=host, port=port, log_level="warning")
    return 0
