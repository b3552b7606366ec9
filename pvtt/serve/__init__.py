"""The inference service (``python -m pvtt serve``)."""
