"""Test layout: tests/kit/ mirrors genbuild/, tests/pvtt/<role>/ mirrors pvtt/, tests/e2e/ holds the
whole-build runs (marked e2e), tests_slurm/ the SLURM run (`make test-slurm`).

Test modules share builders of tiny inputs (e.g. test_checkpoint.make_tiny_latents): every test
folder is importable by module name, and e2e_helpers (a repo copy driven by real Snakemake/DVC)
sits here at the top.
"""
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS)] + sorted(str(d) for d in TESTS.rglob("*") if d.is_dir() and d.name != "__pycache__")
