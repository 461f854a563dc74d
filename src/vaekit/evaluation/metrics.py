from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from torch import nn

from vaekit.core.progress import progress_bar
from vaekit.data.batches import BatchIterator
from vaekit.data.datasets import Dataset
from vaekit.data.sequences import token_counts
from vaekit.models.base import label_args
from vaekit.models.batched import encode_all, map_batches, model_device
from vaekit.models.m2 import UNLABELLED, known_classes

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015: Cov_x(E_q[z_d]) above this is "active"
CHUNK_ROWS = 2048  # decoder evaluations per call of log_importance_weights (memory bound)
KNN_NEIGHBOURS = 5


@torch.no_grad()
def evaluate_elbo(
    model: nn.Module, data: Dataset, batch_size: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """-ELBO, reconstruction and KL (nats per example), bits/dim, KL per latent dimension
    and active units, averaged over all of `data`; for sequences also nats per token (and
    bits/dim is bits per token)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    totals = {"recon": 0.0, "kl": 0.0, "neg_elbo": 0.0}
    kl_per_dim = torch.zeros(model.latent_dim, dtype=torch.float64, device=device)
    z_means = []
    for x, y in BatchIterator(data.x, data.y, batch_size, shuffle=False):
        x, labels = x.to(device, non_blocking=True), label_args(model, y, device)
        terms = model.elbo_terms(x, generator=generator, **labels)
        for key in totals:
            totals[key] += terms[key].double().sum().item()
        kl_per_dim += terms["kl_per_dim"].double().sum(0)
        z_means.append(model.encode(x, **labels)[0].double())
    n = len(data)
    dims = data_dims(data)
    result: dict[str, Any] = {key: value / n for key, value in totals.items()}
    result["bits_per_dim"] = result["neg_elbo"] / (dims * math.log(2))
    if data.kind == "sequence":
        result["nats_per_token"] = result["neg_elbo"] / dims
    result["kl_per_dim"] = (kl_per_dim / n).tolist()
    result["active_units"] = active_units(torch.cat(z_means))
    result["latent_dim"] = model.latent_dim
    result["n_examples"] = n
    model.train(was_training)
    return result


def data_dims(data: Dataset) -> float:
    """Dimensions per example that a log-likelihood is summed over: the pixels or features,
    or for sequences the mean count of tokens (with <eos>), so bits/dim is bits per token."""
    if data.kind == "sequence":
        return token_counts(data.storage).double().mean().item()
    return math.prod(data.shape)


def active_units(z_means: torch.Tensor) -> int:
    """How many latent dimensions' posterior means vary across examples (N, D) by more than
    ACTIVE_UNIT_THRESHOLD; 0 for one example, whose variance is not defined."""
    if len(z_means) < 2:
        return 0
    return int((z_means.var(dim=0) > ACTIVE_UNIT_THRESHOLD).sum().item())


def collapse_warning(metrics: dict[str, Any]) -> str | None:
    """A message when the posterior has (mostly) collapsed onto the prior, else None (with
    one example the active units are not measured: a note says so)."""
    active, total = metrics["active_units"], metrics["latent_dim"]
    if metrics.get("n_examples", 2) < 2:
        collapsed = (
            f"posterior collapse: KL is {metrics['kl']:.3f} nats; " if metrics["kl"] < 0.5 else ""
        )
        return f"{collapsed}active units not measured: they need at least 2 test examples (1 here)"
    advice = "check the loss scaling, beta, warm-up or free bits"
    if active == 0:
        return (
            f"posterior collapse: no latent unit is active (KL {metrics['kl']:.3f} nats); the "
            f"decoder ignores z ({advice})"
        )
    if metrics["kl"] < 0.5:
        return (
            f"posterior nearly collapsed: the codes carry only {metrics['kl']:.3f} nats per "
            f"example (KL), though {active}/{total} units vary; the decoder mostly ignores z "
            f"({advice})"
        )
    if active < total / 2 and total > 2:
        return f"only {active}/{total} latent units are active (KL > 0 in the rest is wasted)"
    return None


def _chunk_ends(ks: Sequence[int], k_chunk: int) -> list[int]:
    """Sample counts after each chunk: every k_chunk samples, and at every requested k."""
    return sorted(set(range(k_chunk, ks[-1], k_chunk)) | set(ks))


@torch.no_grad()
def iwae_log_likelihoods(
    model: nn.Module,
    data: Dataset,
    ks: Sequence[int] = (5000,),
    seed: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = False,
) -> dict[int, torch.Tensor]:
    """Per-example IWAE estimates of log p(x) (nats, float64, shape (N,)) for each k in `ks`.

    The estimate for k uses the first k of the max(ks) importance samples of an example, so
    one pass gives every k. Weights come from `model.log_importance_weights` in chunks of at
    most `chunk_rows` samples and are folded into a running log-sum-exp: memory stays
    bounded whatever k and N are.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"k must be >= 1, got {ks}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    k_chunk = min(ks[-1], chunk_rows)
    ends = _chunk_ends(ks, k_chunk)
    batch_size = max(1, chunk_rows // k_chunk)
    estimates: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    bar = progress_bar(
        len(data) * ks[-1], f"IWAE k={ks[-1]}", progress, unit="sample", unit_scale=True
    )
    for x, y in BatchIterator(data.x, data.y, batch_size, shuffle=False):
        x, labels = x.to(device, non_blocking=True), label_args(model, y, device)
        log_sum = torch.full((len(x),), -math.inf, dtype=torch.float64, device=device)
        done = 0
        for end in ends:
            weights = model.log_importance_weights(x, end - done, generator, **labels).double()
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(weights, dim=0))
            bar.update((end - done) * len(x))
            done = end
            if end in estimates:
                estimates[end].append((log_sum - math.log(end)).cpu())
    bar.close()
    model.train(was_training)
    return {k: torch.cat(parts) for k, parts in estimates.items()}


def iwae_bounds(
    model: nn.Module, data: Dataset, ks: Sequence[int] = (5000,), seed: int = 0, **options: Any
) -> list[dict[str, Any]]:
    """IWAE negative log-likelihood estimates, one row per k: nats per example (mean over
    the examples, with its standard error over examples) and bits/dim. `options`
    (chunk_rows, progress) go to `iwae_log_likelihoods`."""
    started = time.perf_counter()
    per_example = iwae_log_likelihoods(model, data, ks, seed, **options)
    seconds = time.perf_counter() - started
    dims = data_dims(data)
    rows = []
    for k, log_px in per_example.items():
        nll = -log_px.mean().item()
        rows.append(
            {
                "k": k,
                "nll": nll,
                "stderr": log_px.std().item() / math.sqrt(len(log_px)) if len(log_px) > 1 else 0.0,
                "bits_per_dim": nll / (dims * math.log(2)),
                "n_examples": len(log_px),
            }
        )
        if data.kind == "sequence":
            rows[-1]["nats_per_token"] = nll / dims
    rows[-1]["seconds"] = seconds  # one pass computes every k: the time is the largest k's
    return rows


def latent_means(model: nn.Module, data: Dataset, batch_size: int = 1000) -> torch.Tensor:
    """Posterior means E_q[z|x] of every example, shape (N, latent_dim), float32, on the CPU."""
    return encode_all(model, data.x, data.y, batch_size)[0].float()


@torch.no_grad()
def reconstruction_mse(model: nn.Module, data: Dataset, batch_size: int = 1000) -> float:
    """Mean squared error per pixel between x and the decoded posterior mean, on [0,1]."""
    device = next(model.parameters()).device
    total = 0.0
    for x, y in BatchIterator(data.x, data.y, batch_size, shuffle=False):
        x, labels = x.to(device), label_args(model, y, device)
        total += (model.reconstruct(x, **labels) - x).double().square().sum().item()
    return total / data.x.numel()


def class_probabilities(model: nn.Module, data: Dataset, batch_size: int = 1000) -> torch.Tensor:
    """q(y | x) of a model with a classifier (M2) for every example: (N, K), on the CPU."""
    classify = lambda xb, _: model.classify(xb)  # noqa: E731
    return map_batches(classify, data.x, None, batch_size, model_device(model))


def known_label_accuracy(
    predicted: torch.Tensor, y: torch.Tensor, classes: list[str] | None
) -> tuple[float | None, int]:
    """(accuracy, count) of predicted class indices over the examples with a known label:
    with class names, those of an "unlabelled" class are left out (see models.m2)."""

    _, mapping = known_classes(classes)
    if mapping is not None:
        y = mapping[y]
    known = y != UNLABELLED
    count = int(known.sum())
    accuracy = (predicted[known] == y[known]).double().mean().item() if count else None
    return accuracy, count


def classification_accuracy(
    model: nn.Module, data: Dataset, batch_size: int = 1000, classes: list[str] | None = None
) -> dict:
    """Accuracy (fraction) of the model's own classifier q(y|x) on labelled `data`; with the
    data's class names, examples of an "unlabelled" class are left out."""
    predicted = class_probabilities(model, data, batch_size).argmax(1)
    accuracy, count = known_label_accuracy(predicted, data.y, classes)
    return {"accuracy": float("nan") if accuracy is None else accuracy, "n_examples": count}


def probe_accuracy(
    train_z: torch.Tensor,
    train_y: torch.Tensor,
    test_z: torch.Tensor,
    test_y: torch.Tensor,
    neighbours: int = KNN_NEIGHBOURS,
) -> dict[str, Any]:
    """Test accuracy (fraction) of a logistic-regression probe and a k-NN classifier fitted
    on (train_z, train_y), and the majority-class rate for comparison."""
    # imported here, not at the top: scikit-learn adds 0.6 s to every command's start
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_z, test_z = train_z.double().numpy(), test_z.double().numpy()
    train_y, test_y = train_y.numpy(), test_y.numpy()
    # one thread: small problems, reproducible sums, and far faster on shared cores
    with threadpool_limits(limits=1):
        linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        linear.fit(train_z, train_y)
        knn = KNeighborsClassifier(n_neighbors=neighbours).fit(train_z, train_y)
        linear_accuracy, knn_accuracy = linear.score(test_z, test_y), knn.score(test_z, test_y)
    return {
        "linear_accuracy": float(linear_accuracy),
        "knn_accuracy": float(knn_accuracy),
        "knn_neighbours": neighbours,
        "chance_accuracy": float(torch.bincount(torch.from_numpy(test_y)).max()) / len(test_y),
        "n_train": len(train_y),
        "n_test": len(test_y),
    }
