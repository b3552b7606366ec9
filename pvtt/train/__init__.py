"""Training: data loading from the packed shards, the teacher's flow-matching trainer, DMD2 distillation."""
