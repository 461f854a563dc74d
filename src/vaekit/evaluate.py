"""Evaluation of a trained model on a dataset: ELBO terms in nats per example.

Deterministic: the posterior samples come from a generator with a fixed seed, so the same
weights always give the same numbers (and training's own random stream is untouched).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .data import BatchIterator, Dataset

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015: Cov_x(E_q[z_d]) above this is "active"


@torch.no_grad()
def evaluate_elbo(
    model: nn.Module, data: Dataset, batch_size: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """-ELBO, reconstruction and KL (nats per example), bits/dim, KL per latent dimension
    and active units, averaged over all of `data`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    totals = {"recon": 0.0, "kl": 0.0, "neg_elbo": 0.0}
    kl_per_dim = torch.zeros(model.latent_dim, dtype=torch.float64, device=device)
    z_means = []
    for x, _ in BatchIterator(data.x, None, batch_size, shuffle=False):
        x = x.to(device, non_blocking=True)
        terms = model.elbo_terms(x, generator=generator)
        for key in totals:
            totals[key] += terms[key].double().sum().item()
        kl_per_dim += terms["kl_per_dim"].double().sum(0)
        z_means.append(model.encode(x)[0].double())
    n = len(data)
    dims = math.prod(data.shape)
    result: dict[str, Any] = {key: value / n for key, value in totals.items()}
    result["bits_per_dim"] = result["neg_elbo"] / (dims * math.log(2))
    result["kl_per_dim"] = (kl_per_dim / n).tolist()
    unit_variance = torch.cat(z_means).var(dim=0)
    result["active_units"] = int((unit_variance > ACTIVE_UNIT_THRESHOLD).sum().item())
    result["latent_dim"] = model.latent_dim
    result["n_examples"] = n
    model.train(was_training)
    return result


def collapse_warning(metrics: dict[str, Any]) -> str | None:
    """A message when the posterior has (mostly) collapsed onto the prior, else None."""
    active, total = metrics["active_units"], metrics["latent_dim"]
    if metrics["kl"] < 0.5 or active == 0:
        return (
            f"posterior collapse: KL is {metrics['kl']:.3f} nats and {active}/{total} latent "
            "units are active; the decoder ignores z (check the loss scaling, beta, warm-up)"
        )
    if active < total / 2 and total > 2:
        return f"only {active}/{total} latent units are active (KL > 0 in the rest is wasted)"
    return None
