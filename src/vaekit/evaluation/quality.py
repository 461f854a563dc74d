"""Sample quality: Frechet distance and precision/recall in a small classifier's feature space.

vaekit trains a small CNN classifier once per dataset (and per input type: grey levels or
binary images) and caches it in `$VAEKIT_CACHE/classifiers/` (default ~/.cache/vaekit),
keyed by the dataset's name and a fingerprint of its contents. Generated images and real
test images are mapped to the classifier's 128-dimensional penultimate layer; there

- the Frechet distance fits a Gaussian to each set and measures
  |mu_r - mu_g|^2 + tr(C_r + C_g - 2 (C_r C_g)^(1/2)) (the formula of FID);
- precision is the share of generated images inside the real images' manifold (the
  union of balls around each real feature reaching its k-th nearest real neighbour),
  recall the share of real images inside the generated manifold (Kynkaanniemi et al. 2019).

The same three numbers are also measured in a fixed space that no training can bend: the
first principal components of the real training images' pixels (`pixel_pca`), so a verdict
can be checked in two feature spaces.

The numbers are withheld, with one line saying why (`quality_withheld`), when the
classifier's features cannot be trusted (its test accuracy is not at least halfway from
the majority-class rate to 100%) or when there are fewer than MIN_QUALITY_SAMPLES real or
generated images (no full-rank covariance of 128 features, no meaningful k-NN radii).

These values compare vaekit runs with each other on the same dataset; they are not the
Inception-network FIDs that papers quote.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.core.errors import DataError, RunError
from vaekit.core.files import cache_dir, load_tensors, save_tensors
from vaekit.core.progress import progress_bar
from vaekit.data.batches import BatchIterator
from vaekit.data.binarize import binarize_fixed
from vaekit.data.datasets import Dataset, DataSplits
from vaekit.models.batched import map_batches, model_device

FEATURE_DIM = 128
CLASSIFIER_VERSION = 1  # bump when the network or its training changes: old caches are ignored
CLASSIFIER_EPOCHS = 2
PR_NEIGHBOURS = 3  # k of the k-NN radii in precision/recall (Kynkaanniemi et al. 2019)
DISTANCE_ROWS = 1024  # rows of the pairwise-distance blocks (bounded memory)
# fewer images than twice the feature dimensions give a rank-deficient covariance (the
# Frechet distance of 20 images is noise) and k-NN radii that cover everything
MIN_QUALITY_SAMPLES = 2 * FEATURE_DIM
CLASSIFIER_MARGIN = 0.5  # trusted: accuracy >= majority + CLASSIFIER_MARGIN * (1 - majority)
PCA_COMPONENTS = 64  # dimensions of the pixel-PCA feature space
PCA_ROWS = 2000  # training images the principal components are fitted on (the first ones)


class FeatureNet(nn.Module):
    """Two strided 5x5 convolutions and a 128-unit layer whose activations are the features."""

    def __init__(self, shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        channels, height, width = shape
        flat = 32 * math.ceil(height / 4) * math.ceil(width / 4)
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(flat, FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class FeatureClassifier:
    """A trained FeatureNet and its record (dataset, fingerprint, test accuracy, cache path)."""

    net: FeatureNet
    info: dict[str, Any]

    def features(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Images (N, C, H, W) -> penultimate-layer features (N, 128), float64."""
        self.net.eval()
        body = lambda batch, _: self.net.body(batch).double()  # noqa: E731
        return map_batches(body, x, None, batch_size, model_device(self.net))


# --- the cached classifier ------------------------------------------------------------
def data_fingerprint(splits: DataSplits) -> str:
    """SHA-256 of the images (quantised to 8 bits) and labels of both splits."""
    digest = hashlib.sha256()
    for part in (splits.train, splits.test):
        digest.update(str(tuple(part.x.shape)).encode())
        digest.update((part.x * 255).round().to(torch.uint8).numpy().tobytes())
        if part.y is not None:
            digest.update(part.y.numpy().tobytes())
    return digest.hexdigest()


def classifier_path(name: str, binary: bool, fingerprint: str, folder: Path | None = None) -> Path:
    """Where the classifier of a dataset is cached."""
    folder = folder if folder is not None else cache_dir() / "classifiers"
    kind = "binary" if binary else "grey"
    return folder / f"{name}-{kind}-{fingerprint[:16]}-v{CLASSIFIER_VERSION}.safetensors"


def feature_classifier(
    splits: DataSplits,
    binary: bool = False,
    *,
    folder: Path | None = None,
    progress: bool = True,
    seed: int = 0,
) -> FeatureClassifier:
    """The dataset's feature classifier: loaded from the cache, or trained once and cached.

    `binary`: train on Bernoulli draws of the images (for binarised data and samples)."""
    for part in (splits.train, splits.test):
        if part.y is None:
            raise DataError(f"{part.name}: no labels to train the feature classifier on")
    if len(splits.shape) != 3:
        raise DataError(f"{splits.name}: the feature classifier is a CNN; it needs images")
    fingerprint = data_fingerprint(splits)
    path = classifier_path(splits.name, binary, fingerprint, folder)
    majority = {"majority_rate": majority_rate(splits.test.y)}  # what chance scores
    n_classes = int(max(splits.train.y.max(), splits.test.y.max())) + 1
    net = FeatureNet(splits.shape, n_classes)
    if path.exists():
        try:
            tensors, info = load_tensors(path)
            net.load_state_dict(tensors)
            if info.get("fingerprint") == fingerprint:
                return FeatureClassifier(net.eval(), {**info, **majority, "path": str(path)})
        except (RunError, RuntimeError):
            pass  # a damaged cache entry: train again and replace it
        if progress:
            print(f"vaekit: replacing the unusable cached classifier {path}", file=sys.stderr)
    accuracy = train_classifier(net, splits, binary, seed=seed, progress=progress)
    info = {
        "kind": "feature-classifier",
        "dataset": splits.name,
        "fingerprint": fingerprint,
        "binary": binary,
        "test_accuracy": accuracy,
        "n_train": len(splits.train),
        "n_test": len(splits.test),
        "epochs": CLASSIFIER_EPOCHS,
        "feature_dim": FEATURE_DIM,
        "version": CLASSIFIER_VERSION,
    }
    save_tensors(path, net.state_dict(), info)
    return FeatureClassifier(net.eval(), {**info, **majority, "path": str(path)})


def train_classifier(
    net: FeatureNet, splits: DataSplits, binary: bool, seed: int = 0, progress: bool = True
) -> float:
    """Adam, batch 128, CLASSIFIER_EPOCHS epochs; returns the test accuracy (a fraction)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = BatchIterator(splits.train.storage, splits.train.y, 128, seed=seed)  # per batch
    net.train()
    bar = progress_bar(
        CLASSIFIER_EPOCHS * len(batches),
        f"feature classifier for {splits.name} (trained once, then cached)",
        progress,
    )
    for epoch in range(CLASSIFIER_EPOCHS):
        for x, y in batches.epoch(epoch):
            if binary:
                x = torch.bernoulli(x, generator=generator)
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
    bar.close()
    net.eval()
    test = binarize_fixed(splits.test, seed) if binary else splits.test
    return classifier_accuracy(net, test)


def majority_rate(labels: torch.Tensor) -> float:
    """Share of the most common label: the accuracy of always guessing it."""
    labels = labels[labels >= 0]
    return float(torch.bincount(labels).max()) / len(labels) if len(labels) else 0.0


def trusted_accuracy(majority: float) -> float:
    """The least test accuracy whose features are trusted: halfway from the majority-class
    rate to 100% (55.7% on MNIST, whose majority class is 11.35%)."""
    return majority + CLASSIFIER_MARGIN * (1 - majority)


def too_few(n_real: int, n_generated: int) -> str | None:
    """Why `n_real` real and `n_generated` generated images are too few, or None."""
    if min(n_real, n_generated) >= MIN_QUALITY_SAMPLES:
        return None
    return (
        f"{n_real} real and {n_generated} generated images; the {FEATURE_DIM}-d "
        f"covariance and k-NN radii need at least {MIN_QUALITY_SAMPLES} of each"
    )


def quality_withheld(info: dict[str, Any], n_real: int, n_generated: int) -> str | None:
    """One line saying why sample quality measured with the classifier `info` describes
    cannot be trusted (too few images, or a classifier no better than guessing), or None."""
    short = too_few(n_real, n_generated)
    if short:
        return short
    accuracy, majority = info["test_accuracy"], info["majority_rate"]
    if info["n_test"] < MIN_QUALITY_SAMPLES:
        return (
            f"the feature classifier's accuracy comes from {info['n_test']} test "
            f"images; trusting its features needs at least {MIN_QUALITY_SAMPLES}"
        )
    if accuracy < trusted_accuracy(majority):
        return (
            f"the feature classifier scores {accuracy:.1%} on {info['n_test']} test "
            f"images, below {trusted_accuracy(majority):.1%} (halfway from the majority-class "
            f"rate {majority:.1%} to 100%): its features do not tell the classes apart"
        )
    return None


@torch.no_grad()
def classifier_accuracy(net: FeatureNet, data: Dataset, batch_size: int = 1000) -> float:
    """Share of `data` the classifier labels correctly."""
    correct = sum(
        (net(x).argmax(1) == y).sum().item()
        for x, y in BatchIterator(data.x, data.y, batch_size, shuffle=False)
    )
    return correct / len(data)


# --- distances between feature sets -------------------------------------------------------
def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, F), in float64."""
    real, fake = real.double(), fake.double()
    mean_r, mean_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = torch.cov(real.T), torch.cov(fake.T)
    root_r = psd_sqrt(cov_r)
    # tr((C_r C_f)^(1/2)) = tr((C_r^(1/2) C_f C_r^(1/2))^(1/2)), a symmetric PSD matrix
    cross = torch.linalg.eigvalsh(root_r @ cov_f @ root_r).clamp(min=0).sqrt().sum()
    value = (mean_r - mean_f).square().sum() + cov_r.trace() + cov_f.trace() - 2 * cross
    return max(float(value), 0.0)


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clamped at 0)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def knn_radii(points: torch.Tensor, k: int = PR_NEIGHBOURS) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point, shape (N,)."""
    if len(points) <= k:
        raise ValueError(f"need more than {k} points for {k}-nearest-neighbour radii")
    radii = [
        torch.cdist(block, points).topk(k + 1, dim=1, largest=False).values[:, k]
        for block in points.split(DISTANCE_ROWS)
    ]  # column 0 is the point itself
    return torch.cat(radii)


def coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of `points` inside at least one ball (centres[i], radii[i])."""
    inside = sum(
        (torch.cdist(block, centres) <= radii).any(dim=1).sum().item()
        for block in points.split(DISTANCE_ROWS)
    )
    return inside / len(points)


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = PR_NEIGHBOURS
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of `fake` against `real`."""
    real, fake = real.float(), fake.float()
    precision = coverage(fake, real, knn_radii(real, k))
    recall = coverage(real, fake, knn_radii(fake, k))
    return precision, recall


# --- a fixed second feature space: pixel PCA -------------------------------------------
@dataclass
class PixelPCA:
    """The first principal components of real training images' pixels: a feature space
    fixed by the data alone, to check what the classifier's features say."""

    mean: torch.Tensor  # (D,) float64
    components: torch.Tensor  # (K, D) float64, orthonormal rows
    info: dict[str, Any]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Examples (N, ...) -> their coordinates (N, K) on the components, float64."""
        return (x.flatten(1).double() - self.mean) @ self.components.T


def pixel_pca(train: Dataset, components: int = PCA_COMPONENTS, rows: int = PCA_ROWS) -> PixelPCA:
    """PCA of the first `rows` training images' pixels, exact and deterministic (float64):
    the eigenvectors of the smaller of the D x D covariance and the N x N Gram matrix."""
    x = train.x[:rows].flatten(1).double()
    mean = x.mean(0)
    centred = x - mean
    count = min(components, *centred.shape)
    if centred.shape[1] <= centred.shape[0]:
        _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        axes = vectors[:, -count:].flip(1).T
    else:  # more pixels than images: v = X^T u / |X^T u| for the Gram matrix's u
        _, vectors = torch.linalg.eigh(centred @ centred.T)
        axes = (centred.T @ vectors[:, -count:].flip(1)).T
        axes = axes / axes.norm(dim=1, keepdim=True).clamp_min(1e-12)
    info = {"components": count, "n_fit": len(x), "dataset": train.name}
    return PixelPCA(mean, axes.contiguous(), info)


def distances(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Frechet distance, precision and recall of feature sets `fake` against `real`."""
    precision, recall = precision_recall(real, fake)
    return {
        "frechet_distance": frechet_distance(real, fake),
        "precision": precision,
        "recall": recall,
    }


# --- a model's samples ----------------------------------------------------------------
@torch.no_grad()
def generate(
    model: nn.Module, n: int, binary: bool, seed: int = 0, batch_size: int = 1000
) -> torch.Tensor:
    """n images from the model's prior (means of p(x|z), or Bernoulli draws if `binary`)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for start in range(0, n, batch_size):
        images = model.sample(min(batch_size, n - start), generator=generator)
        if binary:
            images = torch.bernoulli(images, generator=generator)
        parts.append(images.cpu())
    return torch.cat(parts)


CLASSIFIER_KEYS = ("dataset", "binary", "test_accuracy", "majority_rate", "n_test")


def classifier_summary(classifier: FeatureClassifier) -> dict[str, Any]:
    """What a report says about the feature classifier."""
    keys = (*CLASSIFIER_KEYS, "feature_dim", "path")
    return {key: classifier.info[key] for key in keys}


def sample_quality(
    model: nn.Module,
    real: Dataset,
    classifier: FeatureClassifier,
    n_samples: int,
    binary: bool = False,
    seed: int = 0,
    pca: PixelPCA | None = None,
) -> dict[str, Any]:
    """Frechet distance, precision and recall of n_samples generated images against `real`
    in the classifier's features, and in `pca`'s (under "pixel_pca") when given; or
    {"skipped": why} when `quality_withheld` finds them untrustworthy."""
    summary = classifier_summary(classifier)
    reason = quality_withheld(summary, len(real), n_samples)
    if reason:
        return {"skipped": reason, "classifier": summary}
    generated = generate(model, n_samples, binary, seed)
    report = distances(classifier.features(real.x), classifier.features(generated))
    report |= {
        "n_generated": n_samples,
        "n_real": len(real),
        "neighbours": PR_NEIGHBOURS,
        "generated": "Bernoulli draws from p(x|z)" if binary else "means of p(x|z)",
        "classifier": summary,
    }
    if pca is not None:
        report["pixel_pca"] = distances(pca.features(real.x), pca.features(generated)) | pca.info
    return report
