"""Model registry: a name -> a constructor taking (ModelConfig, data shape).

A new model is one module in this package plus one entry in MODELS (see docs/models.md).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vaekit.config.schema import ModelConfig
from vaekit.core.errors import ConfigError
from vaekit.models.ae import Autoencoder
from vaekit.models.base import GaussianVAE
from vaekit.models.cvae import ConditionalVAE
from vaekit.models.hvae import HierarchicalVAE
from vaekit.models.m1m2 import StackedM2
from vaekit.models.m2 import M2
from vaekit.models.pca import PCAModel
from vaekit.models.seqvae import SequenceVAE
from vaekit.models.vamp import VampPriorVAE

MODELS: dict[str, Callable[[ModelConfig, tuple[int, ...]], nn.Module]] = {
    "vae": GaussianVAE,
    "cvae": ConditionalVAE,
    "ae": Autoencoder,
    "pca": PCAModel,
    "m2": M2,
    "hvae": HierarchicalVAE,
    "m1m2": StackedM2,
    "vamp": VampPriorVAE,
    "seqvae": SequenceVAE,
}


def model_class(config: ModelConfig) -> Callable[[ModelConfig, tuple[int, ...]], nn.Module]:
    """The constructor `config` names (a vae with prior vamp is model vamp)."""
    name = "vamp" if config.name == "vae" and config.prior == "vamp" else config.name
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def configure_model(config: ModelConfig, data) -> None:
    """Let the model record what it learns from the data before it is built (the CVAE's
    number of classes); a no-op for models without a `configure` hook. A model refuses
    data of a kind it does not declare (images and tables: every model but seqvae)."""
    cls = model_class(config)
    kinds = getattr(cls, "data_kinds", ("image", "table"))
    if data.kind not in kinds:
        hint = "use --model seqvae" if data.kind == "sequence" else "use another model"
        raise ConfigError(
            f"model {config.name} trains on {' or '.join(kinds)} data, and {data.name} holds "
            f"{data.kind}s: {hint}"
        )
    cls.configure(config, data)


def prepare_data(config, data):
    """The model's own view of the training data (M2 hides labels), else `data` itself."""
    return model_class(config.model).prepare_data(config, data)


def build_model(config: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    """The model `config` names, for examples of `shape`."""
    return model_class(config)(config, tuple(shape))
