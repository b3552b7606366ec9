"""Dataset containers: WebDataset shard writing and the worker-decoding loader."""
