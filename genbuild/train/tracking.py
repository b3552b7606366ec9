"""Training logs that DVC reads: DVCLive, with an optional offline wandb mirror.

Two writers, for two purposes:
- ``LiveLog`` follows a run as it goes (loss, lr, grad norm, throughput, in-training
  evaluations, sample animations) under ``work/dvclive/<run>``; a resumed run appends to it.
  Throughput is wall-clock, so it lives here and never in an artifact.
- ``write_history`` writes the same series, replayed from the rows a run keeps in its
  checkpoints, into the artifact's ``dvclive/`` directory. Rows survive a crash and resume
  exactly, so the artifact stays byte-reproducible; this is what ``dvc plots`` and
  ``dvc exp show`` read (dvc.yaml's top-level ``plots``/``metrics`` name it).

DVCLive is told not to touch dvc.yaml or create experiments (``dvcyaml=False``,
``save_dvc_exp=False``): the stage graph is generated from pvtt/pipeline.py alone.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _live(directory: Path, resume: bool):
    os.environ.setdefault("DVCLIVE_LOGLEVEL", "WARNING")
    from dvclive import Live

    return Live(dir=str(directory), resume=resume, report=None, save_dvc_exp=False, dvcyaml=False,
                monitor_system=False)


class LiveLog:
    """Step-wise DVCLive log of a running job (and wandb offline when ``wandb_dir`` is set)."""

    def __init__(self, directory: Path, resume: bool, config: dict | None = None, wandb_dir: Path | None = None,
                 name: str = "run"):
        self.live = _live(Path(directory), resume)
        self.wandb = None
        if wandb_dir is not None:
            import wandb

            Path(wandb_dir).mkdir(parents=True, exist_ok=True)
            self.wandb = wandb.init(mode="offline", dir=str(wandb_dir), project="pvtt", name=name,
                                    config=config or {}, resume="allow" if resume else None, reinit="finish_previous")
            log.info("wandb (offline) run in %s: `wandb sync` it to upload", self.wandb.dir)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.live.step = step
        for k, v in values.items():
            self.live.log_metric(k, float(v))
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)

    def image(self, step: int, name: str, gif: bytes) -> None:
        path = _write_image(self.live, name, gif)
        if self.wandb is not None:
            import wandb

            self.wandb.log({name: wandb.Video(str(path), format="gif")}, step=step)

    def close(self) -> None:
        self.live.end()
        if self.wandb is not None:
            self.wandb.finish()


def _write_image(live, name: str, gif: bytes) -> Path:
    """An animation where DVCLive keeps images (``plots/images/<name>``), byte for byte.

    Not ``Live.log_image``: it re-saves a file through PIL, which keeps only a GIF's first frame.
    """
    path = Path(live.plots_dir) / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gif)
    return path


def write_history(directory: Path, series: dict[str, list[tuple[int, float]]],
                  images: dict[str, bytes] | None = None, summary: dict[str, float] | None = None) -> None:
    """Replay ``series`` (metric name -> [(step, value)]) into a fresh DVCLive directory.

    Written in step order with no timestamps, so equal rows give equal bytes.
    """
    live = _live(Path(directory), resume=False)
    steps = sorted({s for rows in series.values() for s, _ in rows})
    by_step = {name: dict(rows) for name, rows in series.items()}
    for s in steps:
        live.step = s
        for name in sorted(by_step):
            if s in by_step[name]:
                live.log_metric(name, float(by_step[name][s]))
    for name, gif in sorted((images or {}).items()):
        _write_image(live, name, gif)
    for k, v in sorted((summary or {}).items()):
        live.summary[k] = v
    live.make_summary()
    live.end()
