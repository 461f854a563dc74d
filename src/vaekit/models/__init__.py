"""VAE models and their registry."""

from .base import GaussianVAE, LossTerms, gaussian_kl, reparameterize
from .registry import MODELS, build_model

__all__ = ["MODELS", "GaussianVAE", "LossTerms", "build_model", "gaussian_kl", "reparameterize"]
