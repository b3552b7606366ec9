"""Inference benchmark: seconds per video of the teacher and every student form, and the service under load.

In one run, on the first ``deploy.bench.items`` benchmark clips: the teacher (its eval steps with
its CFG), each student in PyTorch eager, student_4 compiled, and every form of student_4 the engine
stage built that runs here (ONNX fp32/fp16/INT8, INT8 weight-only and dynamic, FP8), each split into
encode, denoise and decode (``pvtt.deploy.editor``). Each form's quality on those clips is
compared with the eager student_4's (the gate's metrics and ``distill.gate.max_drop``). Then the
service (``pvtt.serve``) runs on 127.0.0.1 with ``deploy.form``'s model while ``deploy.bench.clients``
clients submit edits for ``deploy.bench.load_seconds``: throughput and p50/p95 latency.

The last line is ``speedup=<teacher seconds / student_4 seconds>`` for the fastest student_4 form
whose quality stays within the gate (wall time per video, encode + denoise + decode).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
import yaml

from genbuild.media import to_uint8
from genbuild.workflow import namespace
from pvtt.bench.gpu_check_dit import free_port
from pvtt.deploy import forms
from pvtt.deploy.editor import Editor
from pvtt.eval.regions import clip_scores
from pvtt.train.gate import GateResult, relative_drops
from pvtt.train.loader import load_all

log = logging.getLogger(__name__)
PARTS = ("encode", "denoise", "decode", "total")


def _items(dataset: Path, td: dict, n: int):
    tr = load_all(dataset, "benchmark", td, limit=n)
    return [(to_uint8(tr.source[i]), tr.mask[i][0].numpy() > 0.5, tr.reference_rgba[i], tr.captions[i], to_uint8(tr.edited[i]))
            for i in range(len(tr))]


def time_form(editor: Editor, items, td: dict, steps: int, cfg: float, warmup: bool = True) -> dict:
    """Mean seconds of each part over the items (after one untimed warm-up edit), and mean scores."""
    if warmup:  # first calls allocate, and a compiled model compiles: not what a served video costs
        f, m, r, c, _ = items[0]
        editor.edit(f, m, r, c, int(td["reference_size"]), steps, cfg)
    seconds = {p: [] for p in PARTS}
    scores = []
    for frames, mask, rgba, caption, truth in items:
        out = editor.edit(frames, mask, rgba, caption, int(td["reference_size"]), steps, cfg)
        for p in PARTS:
            seconds[p].append(out.seconds[p])
        scores.append(clip_scores(out.frames, truth, mask))
    return {"steps": steps, "cfg_scale": cfg, **{p: float(np.mean(v)) for p, v in seconds.items()},
            "scores": {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}}


def within_gate(scores: dict, reference: dict, max_drop: float) -> tuple[bool, float]:
    """(every directional metric within ``max_drop`` of the reference, the largest relative drop):
    the distillation gate's rule (``pvtt.train.gate``)."""
    result = GateResult(reference, scores, relative_drops(reference, scores), max_drop)
    return result.passed, max(result.drops.values(), default=0.0)


def forms_to_time(artifacts: Path, params: dict) -> list[tuple[str, dict]]:
    """(row name, Editor kwargs) of every model form to time, teacher first."""
    rows = [("teacher", {"model_dir": artifacts / "teacher"})]
    rows += [(s, {"model_dir": artifacts / s}) for s in ("student_16", "student_8", "student_4")]
    rows.append(("student_4 compiled", {"model_dir": artifacts / "student_4", "compile_model": True}))
    rows += [(f"student_4 {form}", {"model_dir": artifacts / "student_4", "form": form, "engine_dir": artifacts / "engine"})
             for form in forms.built(artifacts / "engine")]
    return rows


def bench_forms(artifacts: Path, params: dict, threads: int) -> dict[str, dict]:
    td, ep = params["train_data"], params["eval"]
    items = _items(artifacts / "dataset", td, int(params["deploy"]["bench"]["items"]))
    attention = params["deploy"].get("attention", "sdpa")
    out = {}
    for name, kwargs in forms_to_time(artifacts, params):
        editor = Editor(attention=attention, threads=threads, **kwargs)
        steps, cfg = editor.sampling(ep)
        out[name] = time_form(editor, items, td, steps, cfg)
        log.info("%-26s %3d steps  encode %.4f  denoise %.4f  decode %.4f  total %.4f s/video", name, steps,
                 *(out[name][p] for p in PARTS))
    ref, max_drop = out["student_4"]["scores"], float(params["distill"]["gate"]["max_drop"])
    for name, row in out.items():
        if name.startswith("student_4"):
            row["within_gate"], row["worst_drop"] = within_gate(row["scores"], ref, max_drop)
    return out


def bench_service(artifacts: Path, params: dict, threads: int) -> dict:
    """The service on 127.0.0.1 under ``clients`` concurrent submitters for ``load_seconds``."""
    import uvicorn

    from genbuild.io.video import write_video
    from pvtt.serve.app import build_service, create_app

    bp, td = params["deploy"]["bench"], params["train_data"]
    frames, _, rgba, caption, _ = _items(artifacts / "dataset", td, 1)[0]
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-serve-") as tmp:
        tmp = Path(tmp)
        write_video(tmp / "template.mp4", frames, 24)
        from PIL import Image

        Image.fromarray(rgba, "RGBA").save(tmp / "product.png")
        files = {"template": ("template.mp4", (tmp / "template.mp4").read_bytes()),
                 "product": ("product.png", (tmp / "product.png").read_bytes())}
        p = json.loads(json.dumps(params))
        p["deploy"]["model"] = str(artifacts / "student_4")
        p["deploy"]["engine"] = str(artifacts / "engine")
        p["deploy"]["serve"].update(root=str(tmp / "serve"), queue_limit=10 ** 6)
        service, info = build_service(p, threads)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(service, info, p), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        while not server.started:
            time.sleep(0.05)
        latencies, errors, seed = [], [], iter(range(10 ** 9))
        lock, stop = threading.Lock(), time.time() + float(bp["load_seconds"])

        def client():
            with httpx.Client(base_url=url, timeout=120) as c:
                while time.time() < stop:
                    with lock:
                        s = next(seed)  # a new seed each time: no cached answers
                    t0 = time.perf_counter()
                    r = c.post("/v1/tasks", files=files, data={"caption": caption, "options": json.dumps({"seed": s})})
                    if r.status_code != 201:
                        errors.append(r.status_code)
                        continue
                    tid = r.json()["id"]
                    while (st := c.get(f"/v1/tasks/{tid}").json())["status"] in ("queued", "running"):
                        time.sleep(0.01)
                    if st["status"] == "succeeded":
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors.append(st["status"])

        t0 = time.time()
        workers = [threading.Thread(target=client) for _ in range(int(bp["clients"]))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.time() - t0
        server.should_exit = True
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {"form": info["form"], "clients": int(bp["clients"]), "seconds": round(wall, 2), "videos": len(latencies),
            "errors": len(errors), "throughput_videos_per_s": len(latencies) / wall,
            "p50_s": float(np.percentile(lat, 50)), "p95_s": float(np.percentile(lat, 95))}


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-service", action="store_true", help="time the model forms only")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    params = namespace(yaml.safe_load(a.params.read_text()), "pvtt")
    forms = bench_forms(a.artifacts, params, a.threads)
    service = None if a.no_service else bench_service(a.artifacts, params, a.threads)
    print(f"{'model':26s} {'steps':>5s} {'encode':>8s} {'denoise':>8s} {'decode':>8s} {'total':>8s}  psnr   mask_psnr  gate")
    for name, r in forms.items():
        gate = "" if "within_gate" not in r else ("ok" if r["within_gate"] else "OUT") + f" ({100 * r['worst_drop']:+.1f} %)"
        print(f"{name:26s} {r['steps']:5d} " + " ".join(f"{r[p]:8.4f}" for p in PARTS)
              + f"  {r['scores']['psnr']:.2f}  {r['scores']['mask_psnr']:.2f}  {gate}")
    if service:
        print(f"service ({service['form']}, {service['clients']} clients, {service['seconds']} s): "
              f"{service['videos']} videos, {service['throughput_videos_per_s']:.2f} videos/s, "
              f"p50 {service['p50_s']:.3f} s, p95 {service['p95_s']:.3f} s, errors {service['errors']}")
    ok = {n: r for n, r in forms.items() if n.startswith("student_4") and r.get("within_gate")}
    fastest = min(ok, key=lambda n: ok[n]["total"])
    speedup = forms["teacher"]["total"] / ok[fastest]["total"]
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"forms": forms, "service": service, "fastest": fastest, "speedup": speedup}, indent=1))
    print(f"fastest student_4 form within the gate: {fastest}; teacher {forms['teacher']['total']:.4f} s "
          f"({forms['teacher']['steps']} steps, CFG {forms['teacher']['cfg_scale']:g}) vs {ok[fastest]['total']:.4f} s")
    print(f"speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
