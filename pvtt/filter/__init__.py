"""PVTT filters: L1/L2 measurements (filter), learned L2 gates, the L3 VLM score and the human review sheet."""
