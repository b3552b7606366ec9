"""The build kit: what any pipeline of this build uses (workflow tables, params, manifests,
io, shards, the trainer, metrics). It imports no pipeline package (tests/kit/test_layering.py)."""
