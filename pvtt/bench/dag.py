"""`make bench-dag`: dry-run the DAG at the seed's full scale and time it.

Builds placeholder inputs for configs/full.yaml (500 raw videos, 53 products with their
views, a manifest listing them) in a temporary copy of the workflow, runs `snakemake -n`,
and prints as its last line ``jobs=<N> seconds=<S>``. The job count grows with videos and
shards, never with pairs: 6 per video + 1 per product + 2 per shard + fixed ones
(see pvtt.pipeline.job_count_formula).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

from genbuild.dagbench import copy_workflow, dry_run, sample_others
from genbuild.workflow import namespace
from pvtt.pipeline import job_count_formula, num_shards

CATEGORIES = ["watch", "bottle", "bag", "box"]


def make_full_scale_copy(dest: Path) -> dict:
    params = copy_workflow(dest)
    sample_others(params, "pvtt")
    pv = params["pvtt"]
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
    pv["data"] = {"source": "manifest", "manifest": "data/manifest.yaml"}
    return params


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-dag-") as tmp:
        dest = Path(tmp)
        params = make_full_scale_copy(dest)
        pv = namespace(params, "pvtt")
        n_v, n_p = pv["sample"]["n_videos"], pv["sample"]["n_products"]
        shards = num_shards(pv, n_v)
        try:
            jobs, seconds, _ = dry_run(dest, params, "all_pvtt")
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        expected = job_count_formula(n_v, n_p, shards, sample=False)
        print(f"full scale: {n_v} videos, {n_p} products, {shards} pair shards "
              f"(~{int(n_v * pv['pairs']['expected_clips_per_video'] * pv['pairs']['products_per_clip'])} pairs); "
              f"formula 6*V + P + 2*S + 12 = {expected}")
        print(f"jobs={jobs} seconds={seconds:.1f}")
        return 0 if jobs == expected else 1


if __name__ == "__main__":
    sys.exit(main())
