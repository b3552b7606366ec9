"""PVTT data stages: sample, ingest, shots, clips, products, index, masks, mask QC, backgrounds, pairs, synth."""
