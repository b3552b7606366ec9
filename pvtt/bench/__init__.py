"""Benchmarks (`make bench-*`): each prints its figure as name=value on its last line."""
