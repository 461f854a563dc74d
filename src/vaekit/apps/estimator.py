"""A VAE as a scikit-learn transformer: `VAETransformer` fits on a feature matrix and sits
in a Pipeline like PCA does.

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    from vaekit.estimator import VAETransformer

    model = make_pipeline(VAETransformer(latent_dim=4), LogisticRegression()).fit(X, y)

fit(X) standardises the columns (unless standardize=False) and trains a VAE on the rows
(vaekit's trainer, no files written); transform(X) gives the posterior means (N,
latent_dim); inverse_transform(Z) decodes codes back to feature space; score_samples(X) is
an importance-weighted estimate of log p(x) per row in nats, in the units of X (the
standardisation's log-Jacobian is included), higher = more typical, as for scikit-learn's
density estimators; score(X) is its mean. Randomness comes from `random_state` only: the
same data and random_state give the same model, and a row gets the same score whatever
other rows are scored with it. Training leaves torch's global random state untouched.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from vaekit.apps.anomaly import anomaly_scores
from vaekit.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data.arrays import check_fits_likelihood
from vaekit.data.datasets import Dataset, DataSplits
from vaekit.models.batched import encode_all
from vaekit.models.registry import build_model
from vaekit.training.trainer import Trainer

EVAL_ROWS = 1024  # rows the trainer evaluates the ELBO on after each epoch


class VAETransformer(TransformerMixin, BaseEstimator):
    """Variational autoencoder on tabular features (rows = examples), scikit-learn style."""

    def __init__(
        self,
        latent_dim: int = 2,
        hidden: tuple[int, ...] = (64,),
        epochs: int = 50,
        batch_size: int = 64,
        lr: float = 1e-3,
        beta: float = 1.0,
        likelihood: str = "gaussian-perdim",
        standardize: bool = True,
        n_importance: int = 10,
        random_state: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta = beta
        self.likelihood = likelihood
        self.standardize = standardize
        self.n_importance = n_importance
        self.random_state = random_state
        self.device = device

    # --- fitting ----------------------------------------------------------------------
    def _config(self, n_features: int, seed: int) -> RunConfig:
        return RunConfig(
            data=DataConfig(name="array", shape=[n_features], kind="table"),
            model=ModelConfig(
                hidden=list(self.hidden), latent_dim=self.latent_dim, likelihood=self.likelihood
            ),
            train=TrainConfig(
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                seed=seed,
                beta=self.beta,
                device=self.device,
            ),
            name="sklearn",
        ).validate()

    def fit(self, X, y=None) -> VAETransformer:
        """Standardise the columns and train the VAE on the rows of X (y is ignored)."""

        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        self.mean_ = X.mean(0) if self.standardize else np.zeros(X.shape[1])
        scale = X.std(0) if self.standardize else np.ones(X.shape[1])
        self.scale_ = np.where(scale > 0, scale, 1.0)
        x = self._tensor(X)
        check_fits_likelihood(x, self.likelihood, "X")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        config = self._config(X.shape[1], seed)
        data = DataSplits(Dataset(x), Dataset(x[:EVAL_ROWS]), "array", "fit(X)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trainer = Trainer(config, build_model(config.model, data.shape), data, progress=False)
            self.history_ = trainer.fit()
        self.model_ = trainer.model.double().eval()  # float64: a row's results do not
        # depend on the batch it is in (float32 matrix products round differently by size)
        self.seed_ = seed
        return self

    # --- using the fitted model -------------------------------------------------------
    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        """Rows -> standardised float32 table rows (N, D)."""
        return torch.from_numpy(((X - self.mean_) / self.scale_).astype(np.float32))

    def _inputs(self, X) -> torch.Tensor:
        """Validated rows of X as float64 examples for the fitted (float64) model."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return torch.from_numpy((X - self.mean_) / self.scale_)

    def transform(self, X) -> np.ndarray:
        """Posterior means E[z | x], shape (N, latent_dim), float64."""

        return encode_all(self.model_, self._inputs(X))[0].numpy()

    def inverse_transform(self, X) -> np.ndarray:
        """Codes (N, latent_dim) decoded to feature space (the likelihood's mean), float64."""
        check_is_fitted(self)
        Z = check_array(X, dtype=np.float64)
        if Z.shape[1] != self.latent_dim:
            raise ValueError(f"X has {Z.shape[1]} features, but codes have {self.latent_dim}")
        device = next(self.model_.parameters()).device
        with torch.no_grad():
            mean = self.model_.decode_mean(torch.from_numpy(Z).to(device)).flatten(1).cpu().numpy()
        return mean * self.scale_ + self.mean_

    def score_samples(self, X) -> np.ndarray:
        """log p(x) per row (nats, units of X), IWAE estimate with n_importance samples."""

        x = self._inputs(X)
        neg = anomaly_scores(self.model_, x, ("iwae",), self.n_importance, self.seed_)["iwae"]
        return -neg.numpy() - np.log(self.scale_).sum()

    def score(self, X, y=None) -> float:
        """Mean log-likelihood estimate per row (nats): higher is better."""
        return float(self.score_samples(X).mean())
