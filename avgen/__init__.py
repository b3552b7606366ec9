"""AVGen-DiT: joint audio-video generation from a text prompt, built by the same DAG as PVTT.

Grouped by role: ``data`` (sample, ingest, probe, filters, format), ``pack`` (WebDataset shards),
``features`` (CLIP/CLAP embeddings), ``models`` (the unified DiT and its decoders, Diffusers
classes), ``train`` (the three stages on the kit's trainer), ``eval``, ``deploy`` (INT8, generate).
"""
