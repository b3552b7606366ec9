"""`make bench-dag`, AVGen's line: dry-run AVGen's DAG at the plan's scale (19.5M clips) and time it.

Writes a placeholder ingest manifest of ``--clips`` rows (default 19,500,000: VGGSound + AudioSet
+ the rest, as the plan counts them) into a temporary copy of the workflow with configs/full.yaml,
runs `snakemake -n all_avgen`, and prints as its last line ``avgen jobs=<N> seconds=<S>``. Only
the row count is read at parse time, and jobs grow with batches (``data.clips_per_job`` clips
each), never with clips: 4 per batch (ingest, filter, format, features) + 8 fixed ones.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from genbuild import batching
from genbuild.dagbench import copy_workflow, dry_run, sample_others

FULL_SCALE_CLIPS = 19_500_000
PER_BATCH = ("avgen_ingest", "avgen_filter", "avgen_format", "avgen_features")
FIXED = ("avgen_pack", "avgen_features_index", "avgen_stage1", "avgen_stage2", "avgen_stage3", "avgen_int8",
         "avgen_eval", "all_avgen")


def job_count_formula(n_clips: int, clips_per_job: int, sample: bool = False) -> int:
    return len(PER_BATCH) * batching.num_batches(n_clips, clips_per_job) + len(FIXED) + (1 if sample else 0)


def write_manifest(path: Path, n: int, chunk: int = 200_000) -> None:
    """``n`` rows ``id,source,caption`` (ids c000000000...), written in chunks: ~0.8 GB at full scale."""
    with path.open("w", encoding="utf-8") as f:
        f.write("id,source,caption\n")
        for start in range(0, n, chunk):
            f.write("".join(f"c{i:09d},clips/c{i:09d}.mp4,a clip\n" for i in range(start, min(n, start + chunk))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=FULL_SCALE_CLIPS, help="manifest rows (default: the plan's 19.5M)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="avgen-bench-dag-") as tmp:
        dest = Path(tmp)
        params = copy_workflow(dest)
        sample_others(params, "avgen")
        (dest / "data").mkdir()
        write_manifest(dest / "data" / "manifest.csv", a.clips)
        params["avgen"]["data"] = {**params["avgen"]["data"], "source": "manifest", "manifest": "data/manifest.csv"}
        per_job = int(params["avgen"]["data"]["clips_per_job"])
        try:
            jobs, seconds, _ = dry_run(dest, params, "all_avgen")
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        expected = job_count_formula(a.clips, per_job)
        print(f"avgen full scale: {a.clips} clips, {per_job} per job -> {batching.num_batches(a.clips, per_job)} batches; "
              f"formula 4*B + 8 = {expected}")
        print(f"avgen jobs={jobs} seconds={seconds:.1f}")
        return 0 if jobs == expected else 1


if __name__ == "__main__":
    sys.exit(main())
