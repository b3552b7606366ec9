"""PVTT evaluation: benchmark metrics and the HTML report."""
