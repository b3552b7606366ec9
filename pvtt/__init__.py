"""PVTT build library: every stage's logic lives here; Snakemake rules only call it."""

__version__ = "0.1.0"
