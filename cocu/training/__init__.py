"""Pre-training: the data stream, prompts from concept archives, one loop for CPU, GPU and DDP,
checkpoints (docs/architecture.md).
"""
