"""Out-of-distribution scores that survive the likelihood pitfall.

A VAE trained on Fashion-MNIST gives MNIST digits a *higher* likelihood than its own test
images (Nalisnick et al. 2019): simple inputs are likely under any image model. These
scores correct for that (higher = more out-of-distribution, nats per example):

  regret      likelihood regret (Xiao, Yan and Amit 2020): how much the ELBO of x improves
              when its posterior is optimised for x alone, starting from the encoder's.
              The encoder was fitted to the training data, so on in-distribution inputs
              little is left to gain. Xiao et al. fine-tune the encoder's weights per input;
              here the posterior's parameters (z_mean, z_log_var) are optimised directly,
              which reaches the same per-input optimum of a Gaussian posterior, batched over
              inputs. Both ELBOs use the same `draws` fixed noise draws.
  complexity  NLL(x) minus the code length of x under a lossless compressor (Serra et al.
              2020), both in nats of the same discrete object: for a Bernoulli likelihood
              the binarised image (the Bernoulli NLL is the expected code length of a
              binarisation of x; the compressor codes such binarisations, PNG, averaged over
              `draws`), for a Gaussian one the 8-bit image (its density NLL + D ln 256
              against the 8-bit PNG's length).
  typicality  |NLL(x) - mean NLL of the training data| (Nalisnick et al. 2019b): the
              per-example form of the typicality test; `batch` M > 1 scores each group of M
              consecutive inputs by |mean NLL of the group - mean training NLL|.
  ratio       NLL(x) - NLL_background(x) (Ren et al. 2019): the likelihood ratio against a
              background model, e.g. a run trained with `--perturb 0.2` on the same data.

NLL here is the IWAE bound with the run's `samples` posterior draws.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image
from torch import nn

from vaekit.core.errors import ConfigError
from vaekit.core.progress import progress_bar
from vaekit.models.batched import map_batches

REGRET_STEPS = 100  # Adam steps on each input's posterior
REGRET_LR = 0.05
REGRET_ROWS = 8192  # decoder evaluations per batch (inputs x draws)
LOG_256 = math.log(256.0)


# --- likelihood regret ----------------------------------------------------------------------
def likelihood_regret(
    model: nn.Module,
    x: torch.Tensor,
    draws: int = 10,
    seed: int = 0,
    steps: int = REGRET_STEPS,
    lr: float = REGRET_LR,
    progress: bool = False,
) -> torch.Tensor:
    """-ELBO(x) with the encoder's posterior minus -ELBO(x) with the posterior optimised for
    x alone (Adam, `steps` steps), both with the same `draws` noise draws: (N,) float64, >= 0
    up to the optimiser's noise. An input's score does not depend on its batch."""
    if not model.one_gaussian_latent:
        raise ConfigError("the regret score needs a VAE with one Gaussian latent (vae, cvae)")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(draws, model.latent_dim, generator=generator).to(device)  # (k, D)

    bar = progress_bar(len(x), "regret", progress)

    def regret_of_batch(xb: torch.Tensor, _) -> torch.Tensor:
        with torch.no_grad():
            z_mean, z_log_var = (t.float() for t in model.encode(xb))
            before = posterior_neg_elbo(model, xb, z_mean, z_log_var, eps)
        after = optimised_neg_elbo(model, xb, z_mean, z_log_var, eps, steps, lr)
        bar.update(len(xb))
        return (before - after).double()

    batch = max(1, REGRET_ROWS // draws)
    try:
        return map_batches(regret_of_batch, x, None, batch, device)
    finally:
        bar.close()


def posterior_neg_elbo(
    model: nn.Module,
    x: torch.Tensor,
    z_mean: torch.Tensor,
    z_log_var: torch.Tensor,
    eps: torch.Tensor,
) -> torch.Tensor:
    """-ELBO of each input (B,) for the posterior N(z_mean, exp(z_log_var)), the
    reconstruction averaged over the shared draws eps (k, D), the KL in closed form."""
    k = len(eps)
    z = z_mean + torch.exp(0.5 * z_log_var) * eps[:, None, :]  # (k, B, D)
    targets = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
    recon = model.likelihood.nll(model.decode(z.flatten(0, 1)).float(), targets)
    kl = 0.5 * (z_log_var.exp() + z_mean.square() - 1.0 - z_log_var).sum(1)
    return recon.view(k, -1).mean(0) + kl


def optimised_neg_elbo(
    model: nn.Module,
    x: torch.Tensor,
    z_mean: torch.Tensor,
    z_log_var: torch.Tensor,
    eps: torch.Tensor,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """-ELBO of each input (B,) after `steps` Adam steps on its own posterior parameters
    (the inputs' losses are summed, so each input's gradient is its own)."""
    mean = z_mean.clone().requires_grad_(True)
    log_var = z_log_var.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mean, log_var], lr=lr)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:  # the decoder stays as trained
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                posterior_neg_elbo(model, x, mean, log_var, eps).sum().backward()
                optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():
        return posterior_neg_elbo(model, x, mean, log_var, eps)


# --- input complexity -----------------------------------------------------------------------
def code_length(x: torch.Tensor, likelihood: str, draws: int = 4, seed: int = 0) -> torch.Tensor:
    """Nats a lossless compressor (PNG) needs for each image of x (N, C, H, W) in [0, 1],
    as the likelihood sees it: binarisations (Bernoulli; mean over `draws`) or 8 bits per
    value (Gaussian likelihoods). (N,) float64."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ConfigError("the complexity score needs images with 1 or 3 channels")
    if likelihood == "bernoulli":
        generator = torch.Generator().manual_seed(seed)
        total = torch.zeros(len(x), dtype=torch.float64)
        for _ in range(draws):
            binary = torch.bernoulli(x.float().cpu(), generator=generator)
            total += png_nats(binary.mul(255).to(torch.uint8))
        return total / draws
    return png_nats(x.float().cpu().mul(255).round().clamp(0, 255).to(torch.uint8))


def png_nats(pixels: torch.Tensor) -> torch.Tensor:
    """PNG size of each uint8 image (N, C, H, W), in nats (bytes * 8 * ln 2)."""
    sizes = []
    for image in pixels.permute(0, 2, 3, 1).numpy():  # (H, W, C)
        picture = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
        sizes.append(len(buffer.getvalue()))
    return torch.tensor(sizes, dtype=torch.float64) * (8 * math.log(2))


def complexity(nll: torch.Tensor, x: torch.Tensor, likelihood: str, seed: int = 0) -> torch.Tensor:
    """NLL minus the compressor's code length, in nats of the same discrete object (see the
    module's docstring)."""
    discrete_nll = nll if likelihood == "bernoulli" else nll + x[0].numel() * LOG_256
    return discrete_nll - code_length(x, likelihood, seed=seed)


# --- typicality and likelihood ratio --------------------------------------------------------
def typicality(nll: torch.Tensor, typical_nll: float, batch: int = 1) -> torch.Tensor:
    """|NLL - the training data's mean NLL| of each input, or of the mean NLL of each group of
    `batch` consecutive inputs (every input of a group gets the group's score)."""
    if batch < 1:
        raise ConfigError(f"the typicality batch must be >= 1, got {batch}")
    groups = torch.arange(len(nll)) // batch
    sums = torch.zeros(int(groups[-1]) + 1, dtype=nll.dtype).index_add_(0, groups, nll)
    counts = torch.bincount(groups).to(nll.dtype)
    return (sums / counts - typical_nll).abs()[groups]


def likelihood_ratio(nll: torch.Tensor, background_nll: torch.Tensor) -> torch.Tensor:
    """NLL under the model minus NLL under the background model: -log of the likelihood
    ratio (Ren et al. 2019)."""
    return nll - background_nll


def fpr_at_tpr(scores: np.ndarray, anomalous: np.ndarray, tpr: float = 0.95) -> float:
    """The share of normal inputs flagged when the threshold flags `tpr` of the anomalous."""
    threshold = np.quantile(scores[anomalous], 1.0 - tpr)
    return float((scores[~anomalous] >= threshold).mean())
