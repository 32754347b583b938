"""Training: the GRPO loss and loop, the SFT warm start, checkpoints."""
