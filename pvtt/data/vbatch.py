"""PVTT's videos grouped per job: the per-video stages run once per batch of videos.

The six per-video stages (ingest, shots, clips, masks, maskqc, backgrounds) run per batch of
``data.videos_per_job`` videos (``genbuild.batching``: ids ``b0000``..., members in sorted video-id
order), so the DAG grows with batches, not videos. Each stage's batch output keeps the per-video
layout inside it: ``work/<stage>/<batch>/<video>/`` holds what ``work/<stage>/<video>/`` held
before (the stage's JSON, its media, its ``rejects.jsonl``). A video's batch is a pure function
of the sorted video ids and ``videos_per_job``; readers that take a video list (index, pairs) use
``Layout``, readers that take whatever was built (pack's counts) use ``scan``.

No torch here: the Snakefile imports it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from genbuild import batching
from genbuild.io.jsonio import write_json
from genbuild.io.rejects import Rejects

KEY = "data.videos_per_job"
STAGES = ("raw", "shots", "clips", "masks", "maskqc", "backgrounds")  # the per-video stage directories


def per_job(params: Mapping) -> int:
    """``data.videos_per_job`` of a rule's params (or of the pipeline's namespace)."""
    try:
        n = params["data"]["videos_per_job"]
    except (KeyError, TypeError):
        raise ValueError(f"params key '{KEY}' is missing") from None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"params key '{KEY}': expected an integer >= 1, got {n!r}")
    return n


def batches(videos: Iterable[str], n: int) -> dict[str, list[str]]:
    """{batch id: its videos}, videos in sorted id order, ``n`` per batch."""
    return batching.group(sorted(set(videos)), n)


class Layout:
    """Where each video's per-stage directory is: ``<stage>/<batch>/<video>``."""

    def __init__(self, videos: Iterable[str], n: int):
        self.batches = batches(videos, n)
        self.batch = {v: b for b, vs in self.batches.items() for v in vs}

    @classmethod
    def from_params(cls, videos: Iterable[str], params: Mapping) -> Layout:
        return cls(videos, per_job(params))

    def rel(self, stage: str, video: str) -> str:
        """The directory of ``video`` in ``stage``, relative to the work dir (``clips/b0000/vid003``)."""
        return f"{stage}/{self.batch[video]}/{video}"

    def dir(self, work: str | Path, stage: str, video: str) -> Path:
        return Path(work) / self.rel(stage, video)


def scan(stage_root: str | Path) -> dict[str, Path]:
    """{video: its directory} of every ``<batch>/<video>/`` under a stage directory (hidden ones skipped)."""
    root = Path(stage_root)
    out: dict[str, Path] = {}
    if not root.is_dir():
        return out
    for b in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for d in sorted(p for p in b.iterdir() if p.is_dir() and not p.name.startswith(".")):
            out.setdefault(d.name, d)
    return out


def run_videos(stage: str, out: str | Path, videos: list[str], build: Callable[[str, Path], object],
               failed_json: str, failed_doc: Callable[[str, str], dict],
               fatal: tuple[type[BaseException], ...] = ()) -> dict[str, str]:
    """Build one stage's batch directory ``out``: ``build(video, out/<video>)`` for each video.

    A video whose ``build`` raises is that video's reject, not the batch's failure: its directory
    gets ``failed_json`` (``failed_doc(video, reason)``: the stage's document with a rejected
    status, what its consumers read) and a ``rejects.jsonl`` row with the reason.
    """
    from genbuild.params import ParamsError
    from genbuild.weights import MissingWeightsError
    from pvtt.data.backends import BackendError

    def failed(video: str, d: Path, reason: str) -> None:
        rejects = Rejects(stage)
        rejects.add(video, f"error: {reason}")
        write_json(d / failed_json, failed_doc(video, f"error: {reason}"))
        rejects.write(d / "rejects.jsonl")

    return batching.build_batch(out, sorted(videos), build, failed,
                                fatal=(MissingWeightsError, BackendError, ParamsError, *fatal))
