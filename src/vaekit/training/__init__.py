"""Training: the Trainer and its steps, checkpoints, callbacks and the `train` function."""
