"""Metrics: weight-free (classical) and learned from local weights (learned, i3d)."""
