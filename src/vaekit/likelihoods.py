"""Observation models p(x | z): negative log-likelihoods summed over data dimensions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Bernoulli:
    """Bernoulli likelihood on intensities in [0, 1], parameterised by logits.

    For non-binary targets this is the cross-entropy that the VAE literature reports
    for "continuous" MNIST; with binarised data it is an exact log-likelihood.
    """

    name = "bernoulli"

    @staticmethod
    def nll(recon_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per example, shape (B,), summed over all data dimensions."""
        bce = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none")
        return bce.flatten(1).sum(1)

    @staticmethod
    def nll_sum(recon_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) summed over examples and dimensions (one fused kernel)."""
        return F.binary_cross_entropy_with_logits(recon_logits, x, reduction="sum")

    @staticmethod
    def mean(recon_logits: torch.Tensor) -> torch.Tensor:
        """E[x | z]: pixel intensities in [0, 1]."""
        return torch.sigmoid(recon_logits)


LIKELIHOODS = {"bernoulli": Bernoulli}
