"""VAE models, baselines and their registry."""

from .ae import Autoencoder
from .base import GaussianVAE, LossTerms, Model, gaussian_kl, label_args, reparameterize
from .cvae import ConditionalVAE
from .m2 import M2
from .pca import PCAModel
from .registry import MODELS, build_model, configure_model, prepare_data

__all__ = [
    "MODELS",
    "Autoencoder",
    "ConditionalVAE",
    "GaussianVAE",
    "LossTerms",
    "M2",
    "Model",
    "PCAModel",
    "build_model",
    "configure_model",
    "prepare_data",
    "gaussian_kl",
    "label_args",
    "reparameterize",
]
