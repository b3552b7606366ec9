"""`make bench-dag`: dry-run the DAG at the seed's full scale and time it.

Builds placeholder inputs for configs/full.yaml (500 raw videos, 53 products with their
views, a manifest listing them; ``--videos N`` for another scale, ``--videos-per-job K`` for
another batch size) in a temporary copy of the workflow, runs `snakemake -n`, and prints as
its last line ``jobs=<N> seconds=<S>``. The job count grows with batches of videos and with
shards, never with videos or pairs: 6 per batch of ``data.videos_per_job`` videos + 1 per
product + 2 per shard + fixed ones (see pvtt.pipeline.job_count_formula).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

from genbuild.batching import num_batches
from genbuild.dagbench import copy_workflow, dry_run, sample_others
from genbuild.workflow import namespace
from pvtt.pipeline import job_count_formula, num_shards

CATEGORIES = ["watch", "bottle", "bag", "box"]


def make_full_scale_copy(dest: Path, n_videos: int | None = None, videos_per_job: int | None = None) -> dict:
    params = copy_workflow(dest)
    sample_others(params, "pvtt")
    pv = params["pvtt"]
    if n_videos is not None:
        pv["sample"]["n_videos"] = n_videos
    if videos_per_job is not None:
        pv["data"]["videos_per_job"] = videos_per_job
    n_videos, n_products, views = (pv["sample"][k] for k in ("n_videos", "n_products", "views_per_product"))
    data = dest / "data"
    (data / "raw").mkdir(parents=True)
    (data / "products").mkdir()
    videos, products = [], []
    for i in range(n_videos):
        (data / "raw" / f"v{i:04d}.mp4").touch()
        videos.append({"id": f"v{i:04d}", "path": f"raw/v{i:04d}.mp4", "category": CATEGORIES[i % 4],
                       "caption": f"showcase video {i}"})
    for j in range(n_products):
        vs = []
        for k in range(views):
            (data / "products" / f"p{j:03d}_{k}.png").touch()
            vs.append({"view": f"view{k}", "path": f"products/p{j:03d}_{k}.png"})
        products.append({"id": f"p{j:03d}", "category": CATEGORIES[j % 4], "name": f"product {j}",
                         "caption": f"product {j}", "views": vs})
    (data / "manifest.yaml").write_text(yaml.safe_dump({"videos": videos, "products": products}))
    pv["data"] = {**pv["data"], "source": "manifest", "manifest": "data/manifest.yaml"}
    return params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=None,
                    help="raw videos in the placeholder manifest (default: configs/full.yaml's sample.n_videos, 500)")
    ap.add_argument("--videos-per-job", type=int, default=None,
                    help="data.videos_per_job (default: configs/full.yaml's)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-dag-") as tmp:
        dest = Path(tmp)
        params = make_full_scale_copy(dest, a.videos, a.videos_per_job)
        pv = namespace(params, "pvtt")
        n_v, n_p = pv["sample"]["n_videos"], pv["sample"]["n_products"]
        per_job = pv["data"]["videos_per_job"]
        shards = num_shards(pv, n_v)
        try:
            jobs, seconds, _ = dry_run(dest, params, "all_pvtt")
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        expected = job_count_formula(n_v, n_p, shards, sample=False, videos_per_job=per_job)
        print(f"full scale: {n_v} videos in {num_batches(n_v, per_job)} batches of {per_job}, {n_p} products, "
              f"{shards} pair shards "
              f"(~{int(n_v * pv['pairs']['expected_clips_per_video'] * pv['pairs']['products_per_clip'])} pairs); "
              f"formula 6*B + P + 2*S + 14 = {expected}")
        print(f"jobs={jobs} seconds={seconds:.1f}")
        return 0 if jobs == expected else 1


if __name__ == "__main__":
    sys.exit(main())
