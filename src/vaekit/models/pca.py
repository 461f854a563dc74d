"""PCA baseline: a linear code fitted in one step by scikit-learn, under the models' interface.

encode(x) = (x - mean) W^T with the K principal directions W (K, D) as rows; decode(z) =
z W + mean; samples decode z ~ N(0, diag(variances)), the variances of the training data
along the components. Not gradient-trained: `vaekit.train` calls `fit(train_x)` instead of
the training loop. components, mean and variances are (frozen) parameters, so they are
saved to and loaded from model.safetensors like any weights (no pickle).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaekit.config.schema import ModelConfig
from vaekit.core.errors import ConfigError
from vaekit.models.base import Model


class PCAModel(Model):
    """K = latent_dim principal components of the flattened images."""

    gradient_trained = False

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = config
        self.shape = tuple(shape)
        self.latent_dim = config.latent_dim
        dims = math.prod(self.shape)
        if self.latent_dim > dims:
            raise ConfigError(
                f"model pca: latent_dim {self.latent_dim} exceeds the {dims} data dimensions"
            )
        frozen = {"requires_grad": False}
        self.components = nn.Parameter(torch.zeros(self.latent_dim, dims), **frozen)
        self.mean = nn.Parameter(torch.zeros(dims), **frozen)
        self.variances = nn.Parameter(torch.zeros(self.latent_dim), **frozen)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor | None = None, seed: int = 0) -> PCAModel:
        """Fit the components to images x (N, *shape) with scikit-learn's PCA."""
        # imported here, not at the top: scikit-learn adds 0.6 s to every command's start
        from sklearn.decomposition import PCA

        flat = x.flatten(1).float().cpu().numpy()
        if self.latent_dim > min(flat.shape):
            raise ConfigError(
                f"model pca: latent_dim {self.latent_dim} exceeds min(examples, dimensions) "
                f"= {min(flat.shape)}"
            )
        pca = PCA(n_components=self.latent_dim, random_state=seed).fit(flat)
        for name, value in (
            ("components", pca.components_),
            ("mean", pca.mean_),
            ("variances", pca.explained_variance_),
        ):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))
        self.explained_variance_ratio = float(pca.explained_variance_ratio_.sum())
        return self

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """x -> (coordinates along the components (B, K), None)."""
        return (x.flatten(1) - self.mean) @ self.components.T, None

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Coordinates (B, K) -> images (B, *shape) (not clipped to the data's range)."""
        return (z @ self.components + self.mean).view(-1, *self.shape)

    decode_mean = decode

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Projection of x onto the components' affine subspace."""
        return self.decode(self.encode(x)[0])

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes z ~ N(0, diag(variances)): (n, latent_dim)."""
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.mean.device)
        return eps * self.variances.sqrt()

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images decoded from z ~ N(0, diag(variances))."""
        return self.decode(self.sample_prior(n, generator))
