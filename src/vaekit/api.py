"""vaekit's public Python API: the functions `import vaekit` gives, one line each."""

from vaekit.apps.shortcut import VAE
from vaekit.config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig, preset
from vaekit.core.errors import VaekitError
from vaekit.data import load_data
from vaekit.evaluation.metrics import evaluate_elbo
from vaekit.evaluation.run import evaluate_run
from vaekit.models.loading import load
from vaekit.nn import register_network
from vaekit.training.fit import Run, train

__all__ = [
    "PRESETS",
    "DataConfig",
    "ModelConfig",
    "Run",
    "RunConfig",
    "TrainConfig",
    "VAE",
    "VaekitError",
    "evaluate_elbo",
    "evaluate_run",
    "load",
    "load_data",
    "preset",
    "register_network",
    "train",
]
