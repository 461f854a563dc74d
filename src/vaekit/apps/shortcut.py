"""A VAE in three lines, Keras/scikit-learn style:

    vae = vaekit.VAE(latent_dim=2, epochs=10).fit(X)    # X: array, tensor or torch Dataset
    codes = vae.encode(X)                                 # (N, 2) posterior means
    vae.history[-1]["test_neg_elbo"]                      # nats per example

`fit` is `vaekit.train` with the data given from Python (docs/own-data.md): it writes a run
folder (`vae.path`, default runs/<name>) that every `vaekit` command reads, and the methods
here take and return NumPy arrays, in the data's own layout ((N, D) rows, (N, C, H, W)
images; uint8 pixels are read as x / 255). `VAE.load(path)` reopens a run.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.apps.anomaly import anomaly_scores
from vaekit.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.core.errors import ConfigError, RunError
from vaekit.core.noise import in_unit_range
from vaekit.data.datasets import as_float
from vaekit.data.memory import examples_as_storage, items_from_memory
from vaekit.models.batched import encode_all, map_batches, model_device, reconstruct_all
from vaekit.models.loading import open_run
from vaekit.training.fit import train


class VAE:
    """A Gaussian-posterior VAE trained with `fit(X)`; `history` holds the metrics rows."""

    def __init__(
        self,
        latent_dim: int = 2,
        *,
        model: str = "vae",
        arch: str = "mlp",
        hidden: tuple[int, ...] = (400,),
        likelihood: str = "auto",
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-3,
        beta: float = 1.0,
        seed: int = 0,
        name: str = "vae",
        progress: bool = True,
        **train_options: Any,
    ) -> None:
        """`likelihood` "auto": bernoulli for data in [0, 1] (images), gaussian-perdim for
        anything else (tables); `train_options`: any other TrainConfig field."""
        self.settings = dict(
            latent_dim=latent_dim,
            model=model,
            arch=arch,
            hidden=list(hidden),
            likelihood=likelihood,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            beta=beta,
            seed=seed,
            name=name,
        )
        self.train_options, self.progress = train_options, progress
        self.model: torch.nn.Module | None = None
        self.config: RunConfig | None = None
        self.history: list[dict[str, Any]] = []
        self.path: Path | None = None

    def fit(self, X: Any, y: Any = None, *, run_dir: str | Path | None = None) -> VAE:
        """Train on X (labels y, if given, are kept for the pictures and later jobs)."""
        data = X if y is None else (X, y)
        items = items_from_memory(data)
        config = self._config(items.storage)
        run = train(config, run_dir, data=data, progress=self.progress)
        self.model, self.config, self.history, self.path = (
            run.model,
            run.config,
            run.history,
            run.path,
        )
        return self

    @classmethod
    def load(cls, path: str | Path) -> VAE:
        """The VAE of a run folder (any vaekit run of a model with an encoder)."""
        opened = open_run(path)
        vae = cls(opened.config.model.latent_dim, progress=False)
        vae.model, vae.config, vae.path = opened.model, opened.config, opened.folder.path
        vae.history = opened.folder.read_metrics()
        return vae

    # --- using the trained model ----------------------------------------------------
    def encode(self, X: Any) -> np.ndarray:
        """Posterior means E[z | x]: (N, latent_dim)."""
        return encode_all(self._model(), self._examples(X))[0].numpy()

    def encode_with_variance(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means and log-variances, each (N, latent_dim)."""
        z_mean, z_log_var = encode_all(self._model(), self._examples(X))
        if z_log_var is None:
            raise RunError(f"model {self.config.model.name} has no posterior variance")
        return z_mean.numpy(), z_log_var.numpy()

    def decode(self, Z: Any) -> np.ndarray:
        """Codes (N, latent_dim) decoded to data space (the likelihood's mean)."""
        model = self._model()
        z = torch.as_tensor(np.asarray(Z, dtype=np.float32))
        if z.ndim != 2 or z.shape[1] != self.config.model.latent_dim:
            raise ConfigError(
                f"codes must be (N, {self.config.model.latent_dim}), got {tuple(z.shape)}"
            )
        return map_batches(
            lambda zb, _: model.decode_mean(zb), z, None, 1000, model_device(model)
        ).numpy()

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n draws from the model, decoded (the likelihood's mean)."""
        model = self._model()
        generator = torch.Generator(model_device(model)).manual_seed(seed)
        return model.sample(n, generator).cpu().numpy()

    def reconstruct(self, X: Any) -> np.ndarray:
        """Each example decoded from its posterior mean."""
        return reconstruct_all(self._model(), self._examples(X)).numpy()

    def score(self, X: Any, samples: int = 10, seed: int = 0) -> np.ndarray:
        """-ELBO of each example in nats (higher = more unusual): the anomaly score."""
        scores = anomaly_scores(self._model(), self._examples(X), ("elbo",), samples, seed)
        return scores["elbo"].numpy()

    # --- helpers --------------------------------------------------------------------
    def _config(self, storage: torch.Tensor) -> RunConfig:
        s = dict(self.settings)
        if s["likelihood"] == "auto":
            s["likelihood"] = "bernoulli" if in_unit_range(storage) else "gaussian-perdim"
        model = ModelConfig(
            name=s["model"],
            arch=s["arch"],
            hidden=s["hidden"],
            latent_dim=s["latent_dim"],
            likelihood=s["likelihood"],
        )
        known = [f.name for f in fields(TrainConfig)]
        unknown = sorted(set(self.train_options) - set(known))
        if unknown:
            raise ConfigError(f"unknown training option {unknown[0]!r} (known: {', '.join(known)})")
        options = {k: s[k] for k in ("epochs", "batch_size", "lr", "beta", "seed")}
        train_config = TrainConfig(**options | self.train_options)
        return RunConfig(DataConfig(), model, train_config, name=s["name"]).validate()

    def _model(self) -> torch.nn.Module:
        if self.model is None:
            raise RunError("this VAE is not trained yet: call fit(X) first")
        return self.model

    def _examples(self, X: Any) -> torch.Tensor:
        """X in the training data's layout, as float32 examples."""
        storage = examples_as_storage(X, self.config.data.kind)
        if tuple(storage.shape[1:]) != tuple(self.config.data.shape):
            raise ConfigError(
                f"examples of shape {tuple(storage.shape[1:])}; this VAE was trained on "
                f"{tuple(self.config.data.shape)}"
            )
        return as_float(storage)
