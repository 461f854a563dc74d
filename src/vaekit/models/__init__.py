"""VAE models, baselines and their registry."""

from .ae import Autoencoder
from .base import GaussianVAE, LossTerms, gaussian_kl, label_args, reparameterize
from .cvae import ConditionalVAE
from .pca import PCAModel
from .registry import MODELS, build_model, configure_model

__all__ = [
    "MODELS",
    "Autoencoder",
    "ConditionalVAE",
    "GaussianVAE",
    "LossTerms",
    "PCAModel",
    "build_model",
    "configure_model",
    "gaussian_kl",
    "label_args",
    "reparameterize",
]
