"""M1 + M2 (Kingma et al. 2014): the semi-supervised M2 trained on the latent space of a VAE
(M1) that was trained on all the images without labels, then frozen.

M1's posterior q(h | x) turns an image into a feature vector h (its latent code); M2 models
those features: p(y) p(z) p(h | y, z) with a Gaussian (learned per-dimension variance), and
q(y | h) q(z | h, y). Digits separate far better in h than in pixels, so the classifier
learns much more from the unlabelled images (Kingma et al.: 96.7% with 100 labels against
88.0% for M2 alone). The model as a whole is the generative model p(x | h) p(h | y, z) p(y)
p(z) with inference q(h | x) q(y | h) q(z | h, y), so its -ELBO and IWAE bound are bounds on
-log p(x) like any other model's.

Training: `vaekit train --model m1m2 --features RUN_OF_M1 --labeled 100`. The M1 run's model
config and weights are copied into this run (`model.features_model`, and the `m1.` weights
of model.safetensors), so the run stands alone afterwards. M2 is trained on samples of
q(h | x) (as Kingma et al.) or, with `model.feature_samples` false, on its means.
"""

from __future__ import annotations

import dataclasses

import torch

from vaekit.config.runs import RunFolder, load_weights_into
from vaekit.config.schema import ModelConfig, RunConfig, build_dataclass
from vaekit.core.errors import ConfigError
from vaekit.core.files import load_tensors
from vaekit.core.noise import randn_batch
from vaekit.data.datasets import DataSplits
from vaekit.likelihoods import LOG_2PI
from vaekit.models.base import GaussianVAE, Model
from vaekit.models.m2 import M2


def features_config(config: ModelConfig) -> ModelConfig:
    """The M1's ModelConfig recorded in `config.features_model`."""
    if config.features_model is None:
        raise ConfigError(
            "model m1m2 needs the run of a trained VAE as its features (--features RUN)"
        )
    return build_dataclass(ModelConfig, config.features_model, "model.features_model")


class StackedM2(Model):
    """A frozen VAE's latent means/samples as the data of an M2."""

    has_elbo = True  # ELBO only: no free bits, no IWAE training
    trains_on_labels = True
    can_classify = True
    has_analogies = True

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config, self.shape = config, tuple(shape)
        self.m1 = GaussianVAE(features_config(config), self.shape)
        self.m1.requires_grad_(False)
        inner = dataclasses.replace(
            config, name="m2", likelihood="gaussian-perdim", features=None, features_model=None
        )
        self.feature_shape = (1, 1, self.m1.latent_dim)
        self.m2 = M2(inner, self.feature_shape)
        self.latent_dim = self.m2.latent_dim
        self.n_classes = self.m2.n_classes
        self.likelihood = self.m1.likelihood  # p(x | h): reconstructions are M1's

    # --- configuration ------------------------------------------------------------------
    @staticmethod
    def configure(config: ModelConfig, data: DataSplits) -> None:
        """Record the M1 run's model config (from `model.features`) and the classes."""
        if config.features_model is None:
            if not config.features:
                raise ConfigError("model m1m2 needs --features RUN (a trained VAE run)")
            m1 = RunFolder(config.features).load_config()
            if m1.model.name != "vae":
                raise ConfigError(f"{config.features}: the features must come from a vae run")
            if m1.data.shape and tuple(m1.data.shape) != tuple(data.shape):
                raise ConfigError(
                    f"{config.features}: its model takes {tuple(m1.data.shape)}, "
                    f"the data is {tuple(data.shape)}"
                )
            config.features_model = dataclasses.asdict(m1.model)
        M2.configure(config, data)

    @staticmethod
    def prepare_data(config: RunConfig, data: DataSplits) -> DataSplits:
        return M2.prepare_data(config, data)

    def initialise(self) -> None:
        """Copy the trained M1's weights from its run (a new run, before training)."""

        path = RunFolder(self.config.features).require().weights_path
        tensors, _ = load_tensors(path)
        load_weights_into(self.m1, tensors, path)

    # --- features -------------------------------------------------------------------------
    def features(self, x: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        """h: the M1 posterior mean of x (or a sample of q(h | x)), shaped (B, 1, 1, D)."""
        h_mean, h_log_var = self.m1.encode(x)
        if sample:
            eps = randn_batch(h_mean.shape, 0, generator, x.device, h_mean.dtype)
            h_mean = h_mean + torch.exp(0.5 * h_log_var) * eps
        return h_mean.view(-1, *self.feature_shape)

    def to_image(self, h: torch.Tensor) -> torch.Tensor:
        """Features (B, 1, 1, D) -> E[x | h], M1's decoded image."""
        return self.m1.decode_mean(h.flatten(1))

    # --- training -------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, beta: float = 1.0, *, y=None, **_):
        with torch.no_grad():
            h = self.features(x, sample=self.config.feature_samples)
        return self.m2.loss(h, beta, y=y)

    # --- classifier and the VAE interface -------------------------------------------------
    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.m2.class_logits(self.features(x))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.m2.classify(self.features(x))

    def _label(self, h: torch.Tensor, y) -> torch.Tensor:
        return self.m2.class_logits(h).argmax(1) if y is None else y

    def encode(self, x: torch.Tensor, y=None):
        """q(z | h, y) of M2 (y: the classifier's guess when not given)."""
        h = self.features(x)
        return self.m2.encode(h, self._label(h, y))

    def decode(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """(z, y) -> M2's mean features -> M1's decoder output (logits for Bernoulli)."""
        if y is None:
            raise ConfigError("the m1m2 model needs class labels (y) to decode")
        return self.m1.decode(self.m2.decode_mean(z, y).flatten(1))

    def decode_mean(self, z: torch.Tensor, y=None) -> torch.Tensor:
        return self.likelihood.mean(self.decode(z, y))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        h = self.features(x)
        y = self._label(h, y)
        return self.decode_mean(self.m2.encode(h, y)[0], y)

    @torch.no_grad()
    def sample(self, n: int, generator=None, y=None) -> torch.Tensor:
        return self.to_image(self.m2.sample(n, generator, y))

    @torch.no_grad()
    def analogies(self, x: torch.Tensor) -> torch.Tensor:
        """Each image's style (z) decoded with every label: (B * K, *shape)."""
        return self.to_image(self.m2.analogies(self.features(x)))

    # --- bounds on log p(x) ---------------------------------------------------------------
    def _log_q_features(self, x: torch.Tensor, k: int, generator):
        """k samples h ~ q(h | x) as (k, B, D), with log q(h | x) (k, B)."""
        h_mean, h_log_var = (t.float() for t in self.m1.encode(x))
        eps = randn_batch((k, *h_mean.shape), 1, generator, x.device, h_mean.dtype)
        h = h_mean + torch.exp(0.5 * h_log_var) * eps
        log_q = -0.5 * (eps.square() + h_log_var + LOG_2PI).sum(-1)
        return h, log_q

    @torch.no_grad()
    def elbo_terms(self, x: torch.Tensor, generator=None, y=None) -> dict[str, torch.Tensor]:
        """recon = -log p(x | h) and kl = log q(h|x) - (M2's bound on log p(h)), one h sample;
        kl_per_dim is M2's KL per dimension of z."""
        h, log_q = self._log_q_features(x, 1, generator)
        h, log_q = h[0], log_q[0]
        recon = self.likelihood.nll(self.m1.decode(h).float(), x)
        inner = self.m2.elbo_terms(h.view(-1, *self.feature_shape), generator)
        kl = log_q + inner["neg_elbo"]
        return {"recon": recon, "kl": kl, "neg_elbo": recon + kl, "kl_per_dim": inner["kl_per_dim"]}

    @torch.no_grad()
    def log_importance_weights(self, x: torch.Tensor, k: int, generator=None, y=None):
        """log p(x, h, y, z) - log q(h, y, z | x) for k samples per example: (k, B)."""
        h, log_q = self._log_q_features(x, k, generator)  # (k, B, D), (k, B)
        flat = h.flatten(0, 1)  # row i * B + b
        targets = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        log_px = -self.likelihood.nll(self.m1.decode(flat).float(), targets)
        log_ph, ratio, _, _ = self.m2.importance_terms(
            flat.view(-1, *self.feature_shape), 1, generator
        )
        return (log_px + log_ph[0] + ratio[0]).view(k, -1) - log_q
