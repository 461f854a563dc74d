"""Semi-supervised VAE, M2 of Kingma et al. 2014: a classifier q(y|x) inside a conditional VAE.

Generative model p(y) p(z) p(x | y, z) with p(y) uniform over K classes and p(z) = N(0, I);
inference q(y | x) q(z | x, y). For a labelled example the bound is the CVAE's,

    L(x, y) = -E_q(z|x,y)[log p(x | y, z)] + KL(q(z|x,y) || p(z)) - log p(y),

and for an unlabelled one the label is summed out exactly (enumerated over the K classes):

    U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)).

The loss adds `alpha` times the classifier's cross-entropy on labelled examples, since
otherwise q(y|x) learns only from the unlabelled term. Training labels of -1 mark the
unlabelled examples; `prepare_data` picks `model.labeled` class-balanced labelled examples
(seeded by train.seed), hides the other labels and repeats the labelled ones so that
every batch holds some. Evaluation sums the label out (U), so its -ELBO bounds log p(x).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from vaekit.config.schema import ModelConfig, RunConfig
from vaekit.core.errors import ConfigError
from vaekit.core.noise import randn_batch
from vaekit.data.datasets import Dataset, DataSplits
from vaekit.likelihoods import LOG_2PI
from vaekit.models.base import LossTerms, gaussian_kl, reparameterize
from vaekit.models.cvae import ConditionalVAE
from vaekit.nn.mlp import MLPEncoder

UNLABELLED = -1  # the training label of an example whose label is hidden


class M2(ConditionalVAE):
    """Conditional VAE plus a classifier q(y|x); labels are optional (-1: unknown)."""

    needs_labels = False  # evaluation and sampling sum the label out or predict it
    trains_on_labels = True  # ... but the trainer passes the (partly hidden) labels
    one_gaussian_latent = False  # the posterior includes the label
    objective_options = False  # its own bound: no free bits, no IWAE training
    can_classify = True
    has_analogies = True

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        super().__init__(config, shape)
        hidden = config.classifier_hidden or config.hidden
        self.classifier = MLPEncoder(shape, hidden, self.n_classes, heads=1)
        self.alpha = config.alpha

    # --- configuration and data -------------------------------------------------------
    @staticmethod
    def configure(config: ModelConfig, data: DataSplits) -> None:
        """Record the number of known classes (a class named like "unlabelled" is not one)."""
        known = known_labels(data)
        ConditionalVAE.configure(config, known)

    @staticmethod
    def prepare_data(config: RunConfig, data: DataSplits) -> DataSplits:
        """Keep `model.labeled` class-balanced training labels, hide the rest (-1) and
        repeat the labelled examples (`model.label_repeat`, default so that they make up
        about a tenth of the training set). With `model.labeled` 0, the data's own labels
        are kept, examples of a class named "unlabelled" (or "?", "-1") hidden."""
        data = known_labels(data)
        n_labeled, train = config.model.labeled, data.train
        if n_labeled:
            chosen = balanced_choice(train.y, n_labeled, config.model.n_classes, config.train.seed)
            y = torch.full_like(train.y, UNLABELLED)
            y[chosen] = train.y[chosen]
        else:  # the data's own labels, -1 where unknown
            y = train.y
        labeled = (y != UNLABELLED).nonzero().squeeze(1)
        if len(labeled) == 0:
            raise ConfigError(
                f"model {config.model.name} needs some labelled training examples "
                "(--labeled N, or labels in the data)"
            )
        repeat = config.model.label_repeat or max(1, round(0.1 * len(y) / len(labeled)))
        config.model.label_repeat = repeat
        extra = labeled.repeat(repeat - 1)
        data.train = Dataset(
            torch.cat([train.x, train.x[extra]]), torch.cat([y, y[extra]]), train.name
        )
        return data

    # --- classifier -------------------------------------------------------------------
    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """x -> logits of q(y | x), (B, K)."""
        return self.classifier(x)[0]

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """x -> class probabilities q(y | x), (B, K)."""
        return self.class_logits(x).float().softmax(1)

    def _label_or_guess(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.class_logits(x).argmax(1) if y is None else y

    # --- the networks, with the label predicted when not given ------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """(x, y) -> q(z | x, y); without y, the classifier's most likely label."""
        return super().encode(x, self._label_or_guess(x, y))

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().reconstruct(x, self._label_or_guess(x, y))

    # --- objective --------------------------------------------------------------------
    def labelled_terms(self, x: torch.Tensor, y: torch.Tensor, generator=None):
        """Per-example recon (B,), KL per latent dim (B, D) of L(x, y), one z sample."""
        z_mean, z_log_var = ConditionalVAE.encode(self, x, y)
        z = reparameterize(z_mean, z_log_var, generator)
        recon = self.likelihood.nll(ConditionalVAE.decode(self, z, y).float(), x)
        return recon, gaussian_kl(z_mean.float(), z_log_var.float())

    def enumerated_terms(self, x: torch.Tensor, generator=None):
        """recon (B, K), KL per dim (B, K, D) of L(x, y) for every class y, and the
        classifier's log q(y|x) (B, K)."""
        batch, k = len(x), self.n_classes
        labels = torch.arange(k, device=x.device).repeat(batch)  # (B * K,): b-major
        x_rep = x.repeat_interleave(k, dim=0)
        if hasattr(self.encoder, "forward_each_condition"):  # MLP: x's first layer once
            classes = torch.eye(k, device=x.device)
            z_mean, z_log_var = self.encoder.forward_each_condition(x, classes)
            z = reparameterize(z_mean, z_log_var, generator)
            recon = self.likelihood.nll(ConditionalVAE.decode(self, z, labels).float(), x_rep)
            kl_per_dim = gaussian_kl(z_mean.float(), z_log_var.float())
        else:
            recon, kl_per_dim = self.labelled_terms(x_rep, labels, generator)
        log_q = self.class_logits(x).float().log_softmax(1)
        return recon.view(batch, k), kl_per_dim.view(batch, k, -1), log_q

    def loss(self, x: torch.Tensor, beta: float = 1.0, *, y=None, **_) -> LossTerms:
        """Mean over the batch of L(x, y) + alpha * CE (labelled) or U(x) (unlabelled)."""
        if y is None:
            y = torch.full((len(x),), UNLABELLED, device=x.device)
        known = y != UNLABELLED
        log_prior_y = math.log(self.n_classes)  # -log p(y)
        recon_sum = kl_sum = loss_sum = x.new_zeros((), dtype=torch.float32)
        if known.any():
            xl, yl = x[known], y[known]
            recon, kl_per_dim = self.labelled_terms(xl, yl)
            kl = kl_per_dim.sum(1)
            ce = F.cross_entropy(self.class_logits(xl).float(), yl, reduction="none")
            recon_sum, kl_sum = recon.sum(), kl.sum() + log_prior_y * len(xl)
            loss_sum = recon_sum + beta * kl.sum() + log_prior_y * len(xl) + self.alpha * ce.sum()
        if (~known).any():
            recon, kl_per_dim, log_q = self.enumerated_terms(x[~known])
            q = log_q.exp()
            recon_u = (q * recon).sum(1)
            # KL of the label, KL(q(y|x) || p(y)) = sum q log q + log K, plus E_q(y)[KL_z]
            kl_y = (q * log_q).sum(1) + log_prior_y
            kl_z = (q * kl_per_dim.sum(2)).sum(1)
            recon_sum = recon_sum + recon_u.sum()
            kl_sum = kl_sum + (kl_y + kl_z).sum()
            loss_sum = loss_sum + (recon_u + beta * kl_z + kl_y).sum()
        batch = len(x)
        return LossTerms(loss=loss_sum / batch, recon=recon_sum / batch, kl=kl_sum / batch)

    # --- evaluation: the label summed out ---------------------------------------------
    @torch.no_grad()
    def elbo_terms(self, x: torch.Tensor, generator=None, y=None) -> dict[str, torch.Tensor]:
        """Per-example terms of U(x) (the label summed out): recon, kl (of z and y),
        neg_elbo, and kl_per_dim (B, D) of z, averaged over q(y|x)."""
        recon, kl_per_dim, log_q = self.enumerated_terms(x, generator)
        q = log_q.exp()
        recon_u = (q * recon).sum(1)
        kl_z_per_dim = (q.unsqueeze(2) * kl_per_dim).sum(1)
        kl = kl_z_per_dim.sum(1) + (q * log_q).sum(1) + math.log(self.n_classes)
        return {"recon": recon_u, "kl": kl, "neg_elbo": recon_u + kl, "kl_per_dim": kl_z_per_dim}

    def importance_terms(self, x, k, generator=None, y=None):
        """(log p(x|y_i,z_i), log p(y_i) p(z_i) - log q(y_i|x) q(z_i|x,y_i)), each (k, B),
        with y_i ~ q(y|x) and z_i ~ q(z|x, y_i); and q(z|x, y_i)'s mean and log-variance."""
        batch = len(x)
        log_q_y = self.class_logits(x).float().log_softmax(1)  # (B, K)
        labels = torch.multinomial(log_q_y.exp(), k, replacement=True, generator=generator)
        labels = labels.T.reshape(-1)  # (k * B,): sample-major, as the base class orders z
        x_rep = x.repeat(k, *([1] * (x.dim() - 1)))
        z_mean, z_log_var = (t.float() for t in ConditionalVAE.encode(self, x_rep, labels))
        eps = randn_batch(z_mean.shape, 0, generator, x.device, z_mean.dtype)
        z = z_mean + torch.exp(0.5 * z_log_var) * eps
        log_q_z = -0.5 * (eps.square() + z_log_var + LOG_2PI).sum(-1)
        log_prior = -0.5 * (z.square() + LOG_2PI).sum(-1) - math.log(self.n_classes)
        log_q = log_q_z + log_q_y.repeat(k, 1).gather(1, labels[:, None]).squeeze(1)
        recon_params = ConditionalVAE.decode(self, z, labels).float()
        log_px = -self.likelihood.nll(recon_params, x_rep)
        shape = (k, batch)
        return (
            log_px.view(shape),
            (log_prior - log_q).view(shape),
            z_mean[:batch],
            z_log_var[:batch],
        )

    # --- pictures ---------------------------------------------------------------------
    @torch.no_grad()
    def analogies(self, x: torch.Tensor) -> torch.Tensor:
        """Style kept, content varied: for each image (B), its z (posterior mean given the
        predicted label) decoded with every label. (B * K, *shape), row b holds image b's
        style in classes 0..K-1."""
        z_mean, _ = self.encode(x)
        k = self.n_classes
        labels = torch.arange(k, device=x.device).repeat(len(x))
        return self.decode_mean(z_mean.repeat_interleave(k, dim=0), labels)


UNLABELLED_NAMES = ("unlabelled", "unlabeled", "?", "-1", "none")


def known_classes(classes: list[str] | None) -> tuple[list[str] | None, torch.Tensor | None]:
    """(names of the known classes, old index -> new index with -1 for unknown), or
    (classes, None) when no class name marks unlabelled examples."""
    if not classes or not any(c.lower() in UNLABELLED_NAMES for c in classes):
        return classes, None
    known = [c for c in classes if c.lower() not in UNLABELLED_NAMES]
    mapping = torch.tensor([known.index(c) if c in known else UNLABELLED for c in classes])
    return known, mapping


def known_labels(data: DataSplits) -> DataSplits:
    """A copy of the splits whose labels of an "unlabelled" class are -1 (others renumbered)."""
    data = dataclasses.replace(data)  # the caller's splits stay as they were
    names, mapping = known_classes(data.classes)
    if mapping is None or data.train.y is None:
        return data
    data.classes = names
    for split in ("train", "test", "valid"):
        part = getattr(data, split)
        if part is not None and part.y is not None:
            setattr(data, split, Dataset(part.x, mapping[part.y], part.name))
    return data


def balanced_choice(labels: torch.Tensor, n: int, n_classes: int, seed: int) -> torch.Tensor:
    """Indices of n examples, n / n_classes of each class (the remainder to the first
    classes), drawn with a generator seeded by `seed`."""
    if n < n_classes:
        raise ConfigError(f"model.labeled must be at least the number of classes ({n_classes})")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(n_classes):
        members = (labels == c).nonzero().squeeze(1)
        want = n // n_classes + (c < n % n_classes)
        if len(members) < want:
            raise ConfigError(f"model.labeled {n}: class {c} has only {len(members)} examples")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:want]])
    return torch.cat(chosen)
