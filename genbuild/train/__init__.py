"""The training framework: one trainer, methods that own their losses, checkpoints, DDP/DeepSpeed, LoRA, logs."""
