"""`make bench-avgen`: seconds per generated sample (prompt -> frames + waveform) of the built models.

Loads ``artifacts/avgen_stage3`` and ``artifacts/avgen_int8`` (built by the target first), warms
each up once, then generates ``--samples`` clips from the sample's captions with ``--steps``
sampler steps and CFG, timing sampling + SD-VAE decode + vocoder per clip in one process. Prints
the fp32 and INT8 figures and their ratio, and as its last line ``seconds_per_sample=<stage 3's median>``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

PROMPTS = ("a red ball bouncing on a wooden floor with impact sounds, a rising tone",
           "two blue squares bouncing, a falling tone over low noise")


def median_seconds(model_dir: Path, n: int, steps: int, cfg: float) -> float:
    from avgen.deploy.generate import Generator

    gen = Generator(model_dir)
    gen.generate(PROMPTS[0], 0, steps, cfg)  # warm-up
    return statistics.median(gen.generate(PROMPTS[i % len(PROMPTS)], i, steps, cfg).seconds for i in range(n))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=3.0)
    a = ap.parse_args(argv)
    fp32 = median_seconds(a.artifacts / "avgen_stage3", a.samples, a.steps, a.cfg)
    int8 = median_seconds(a.artifacts / "avgen_int8", a.samples, a.steps, a.cfg)
    print(f"{a.samples} samples, {a.steps} steps, CFG {a.cfg}: stage3 {fp32:.4f} s, int8 {int8:.4f} s", file=sys.stderr)
    print(f"int8_over_fp32={int8 / fp32:.3f}")
    print(f"seconds_per_sample={fp32:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
