"""Fine-tuning: batches, optimization, the training loop, checkpoints."""
