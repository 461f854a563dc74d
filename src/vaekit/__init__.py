"""vaekit: train, evaluate, explore and apply Variational Autoencoders, built on PyTorch.

import vaekit
run = vaekit.train()                      # reference VAE on built-in MNIST
model = vaekit.load(run.path)
z_mean, z_log_var = model.encode(x)       # x: (B, 1, 28, 28) in [0, 1]
images = model.sample(16)
"""

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import load_data
from .errors import VaekitError
from .evaluate import evaluate_elbo, evaluate_run
from .presets import PRESETS, preset
from .train import Run, load, train

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "DataConfig",
    "ModelConfig",
    "Run",
    "RunConfig",
    "TrainConfig",
    "VaekitError",
    "evaluate_elbo",
    "evaluate_run",
    "load",
    "load_data",
    "preset",
    "train",
]
