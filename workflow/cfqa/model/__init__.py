"""The model runtime beneath every method: the model families, pinned hub models, the device a
job runs on, and what a training step costs in memory."""
