"""Named configurations. Each tutorial preset keeps that tutorial's network and budget but
uses vaekit's objective (reconstruction summed over pixels, so the KL keeps its weight)."""

from __future__ import annotations

import copy
from typing import Any

from vaekit.config.schema import RunConfig
from vaekit.core.errors import ConfigError

# the log-likelihood benchmarks (docs/likelihood.md): dynamically binarised MNIST with the
# last 10,000 training images held out for validation; one hour of training
LIKELIHOOD_DATA = {"binarize": "dynamic", "valid_size": 10000}
LIKELIHOOD_TRAIN = {
    "epochs": 100000,  # the time budget ends the run
    "time_budget": 3600.0,
    "batch_size": 256,  # 1.47x the epochs of 128 on two cores (benchmarks/RESULTS.md)
    "lr": 2e-3,
    "weight_decay": 0.01,  # AdamW
    "lr_schedule": "cosine",
    "lr_min": 1e-5,
    "kl_warmup_epochs": 10,
    "eval_every": 2,
}

# M2 of Kingma et al. 2014: MLP 500, z = 50, 100 labelled examples
M2_MODEL = {"name": "m2", "hidden": [500], "latent_dim": 50, "labeled": 100}


def _preset(
    about: str, model: dict[str, Any], epochs: int = 10, lr: float | None = None, **extra: Any
) -> dict[str, Any]:
    """A preset trained with batch 128 for `epochs` (Adam at `lr`, or the default rate)."""
    train: dict[str, Any] = {"epochs": epochs, "batch_size": 128}
    if lr is not None:
        train["lr"] = lr
    return {"_about": about, "model": model, "train": train, **extra}


PRESETS: dict[str, dict[str, Any]] = {
    "reference": {
        "_about": "MLP 784-400-20, batch 128, Adam 1e-3, 10 epochs (the PyTorch example's VAE)",
        "model": {"hidden": [400], "latent_dim": 20},
        "train": {"epochs": 10, "batch_size": 128, "lr": 1e-3},
    },
    "conv": {
        "_about": "convolutional VAE: 3x3 stride-2 convolutions with 32 and 64 filters (the Keras "
        "example's encoder, mirrored by transposed convolutions), a 256-unit dense layer, "
        "20-D latent; the reference's budget (10 epochs, batch 128, Adam 1e-3)",
        "model": {"arch": "conv", "channels": [32, 64], "hidden": [256], "latent_dim": 20},
        "train": {"epochs": 10, "batch_size": 128, "lr": 1e-3},
    },
    "color": {
        "_about": "colour images of any size (the --data folder's own): 3x3 stride-2 "
        "convolutions with 32, 64 and 128 filters, a 256-unit dense layer, 64-D latent, "
        "discretised logistic likelihood (the probability of the 8-bit pixels: test -ELBO "
        "in true bits/dim); 20 epochs, batch 64, Adam 1e-3",
        "name": "vae-color",
        "model": {
            "arch": "conv",
            "channels": [32, 64, 128],
            "hidden": [256],
            "latent_dim": 64,
            "likelihood": "discretized-logistic",
        },
        "train": {"epochs": 20, "batch_size": 64, "lr": 1e-3},
    },
    "cvae": {
        "_about": "conditional VAE: the reference MLP 784-400 with a 2-D latent, so the label "
        "carries the digit and z only the style (samples of label d read as d)",
        "model": {"name": "cvae", "hidden": [400], "latent_dim": 2},
        "train": {"epochs": 10, "batch_size": 128, "lr": 1e-3},
    },
    "likelihood-mlp": {
        "_about": "log-likelihood benchmark, one stochastic layer: MLP 784-512-256, z = 32, "
        "VampPrior with 100 pseudo-inputs, dynamically binarised MNIST with 10k training "
        "images held out for validation, batch 256, AdamW 2e-3 (weight decay 0.01) with "
        "cosine decay to 1e-5, KL warm-up over 10 epochs, 60 minutes",
        "data": LIKELIHOOD_DATA,
        # the learned prior gains 1.6 nats over N(0, I) at 0.63x the epochs (benchmarks/RESULTS.md)
        "model": {"hidden": [512, 256], "latent_dim": 32, "prior": "vamp", "prior_components": 100},
        "train": LIKELIHOOD_TRAIN,
    },
    "likelihood-hvae": {
        "_about": "log-likelihood benchmark, two stochastic layers (top-down hierarchical "
        "VAE): MLP 784-512-256 to z1 = 32, 256-unit networks to z2 = 16, VampPrior with 100 "
        "pseudo-inputs on z2; same data, optimiser and budget as likelihood-mlp; bf16 "
        "autocast where the hardware has native bf16 (precision auto), else fp32",
        "data": LIKELIHOOD_DATA,
        "model": {
            "name": "hvae",
            "hidden": [512, 256],
            "latent_layers": [32, 16],
            "upper_hidden": [256],
            "prior": "vamp",
            "prior_components": 100,
        },
        # native bf16 (AVX512-BF16 here) trains 1.9x the epochs of fp32 in the hour and gained
        # 0.40 nats over the fp32 seeds' mean (benchmarks/RESULTS.md)
        "train": {**LIKELIHOOD_TRAIN, "precision": "auto"},
    },
    "m2-mnist": _preset(
        "semi-supervised M2 (Kingma et al. 2014) on MNIST: MLP 500, z = 50, "
        "classifier MLP 500; set the labelled count with --labeled N",
        M2_MODEL,
        epochs=30,
        lr=1e-3,
    ),
    "m1-mnist": _preset(
        "M1 of Kingma et al. 2014: a VAE (MLP 784-600-600, z = 50) trained on all "
        "MNIST images without labels; its latent space is the data of m1m2-mnist",
        {"hidden": [600, 600], "latent_dim": 50},
        epochs=30,
        lr=1e-3,
    ),
    "m1m2-mnist": _preset(
        "M1 + M2 (Kingma et al. 2014): M2 (MLP 500, z = 50) on the latent space of "
        "an m1-mnist run given with --features RUN; --labeled N labels (100)",
        {**M2_MODEL, "name": "m1m2"},  # M2's network on M1's latent space
        epochs=40,
        lr=1e-3,
    ),
    "tutorial-mlp128-z2": _preset(
        "tutorial: MLP 128, 2-D latent space", {"hidden": [128], "latent_dim": 2}
    ),
    "tutorial-mlp256-128-z2": _preset(
        "tutorial: MLP 256-128, 2-D latent, 20 epochs, batch 128, 10 samples",
        {"hidden": [256, 128], "latent_dim": 2},
        epochs=20,
        n_samples=10,
    ),
    "tutorial-mlp256-z2": _preset(
        "tutorial: MLP 256, 2-D latent space", {"hidden": [256], "latent_dim": 2}
    ),
    "tutorial-mlp512-z128": _preset(
        "tutorial: MLP 512, 128-D latent space, 5 samples",
        {"hidden": [512], "latent_dim": 128},
        n_samples=5,
    ),
}


def preset(name: str) -> RunConfig:
    """The RunConfig of a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    raw = {k: copy.deepcopy(v) for k, v in PRESETS[name].items() if not k.startswith("_")}
    raw.setdefault("name", f"{name}-mnist")
    raw["preset"] = name
    return RunConfig.from_dict(raw)


def underfit_hint(config: RunConfig) -> str | None:
    """A one-line hint when `config` trains colour images with the defaults that underfit
    them (an MLP with a Bernoulli likelihood: grey, blurred samples), else None; reads the
    data shape recorded when training starts."""
    shape, model = config.data.shape, config.model
    colour = config.data.kind == "image" and bool(shape) and shape[0] == 3
    if not colour or model.arch != "mlp" or model.likelihood != "bernoulli":
        return None
    return (
        "hint: colour images with an MLP and a Bernoulli likelihood underfit (grey samples); "
        "try --preset color (conv network, discretised logistic likelihood, bits/dim)"
    )
