"""Evaluation of a trained model: numbers a paper could quote, each with its unit and sample count.

- `evaluate_elbo`: -ELBO, reconstruction and KL (nats per example), bits/dim, KL per latent
  dimension, active units. Training calls it at the end of every epoch.
- `iwae_bounds`: the importance-weighted bound (Burda et al. 2015) as a negative
  log-likelihood estimate, for several k at once, in bounded memory.
- `evaluate_run`: everything above plus reconstruction MSE, linear-probe and k-NN accuracy
  of the latent means, and sample quality (`quality.py`); writes `evaluation.json`.

Deterministic: posterior samples come from generators with fixed seeds, so the same weights
always give the same numbers (and training's own random stream is untouched).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .data import BatchIterator, Dataset, DataSplits
from .models.base import label_args  # {"y": labels} for conditional models, else {}

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015: Cov_x(E_q[z_d]) above this is "active"
BINARIZE_TEST_SEED = 12345  # the seed train.Trainer binarises the test set with (tests check)
CHUNK_ROWS = 2048  # decoder evaluations per call of log_importance_weights (memory bound)
KNN_NEIGHBOURS = 5
MAX_QUALITY_SAMPLES = 10_000
EVALUATION_FILE = "evaluation.json"
UNITS = {
    "elbo, iwae.nll": "nats per example (log-likelihoods summed over the data dimensions)",
    "bits_per_dim": "nats / (data_dims * ln 2)",
    "reconstruction_mse": "squared error per pixel, intensities in [0, 1]",
    "accuracies, precision, recall": "fractions of the examples counted in n_*",
    "frechet_distance": "squared units of the feature classifier's 128-d feature space",
}
MIN_QUALITY_SAMPLES = 10  # fewer images give no meaningful covariance or k-NN radii
# unlabelled datasets whose sample quality is measured with a labelled relative's classifier
FEATURE_DATASETS = {"binarized-mnist": "mnist"}


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
    for x, y in BatchIterator(data.x, data.y, batch_size, shuffle=False):
        x, labels = x.to(device, non_blocking=True), label_args(model, y, device)
        terms = model.elbo_terms(x, generator=generator, **labels)
        for key in totals:
            totals[key] += terms[key].double().sum().item()
        kl_per_dim += terms["kl_per_dim"].double().sum(0)
        z_means.append(model.encode(x, **labels)[0].double())
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


# --- importance-weighted bound ----------------------------------------------------------
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
    bar = tqdm(
        total=len(data) * ks[-1],
        desc=f"IWAE k={ks[-1]}",
        unit="sample",
        unit_scale=True,
        disable=not progress,
        leave=False,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        file=sys.stderr,
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
    model: nn.Module,
    data: Dataset,
    ks: Sequence[int] = (5000,),
    seed: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """IWAE negative log-likelihood estimates, one row per k: nats per example (mean over
    the examples, with its standard error over examples) and bits/dim."""
    started = time.perf_counter()
    per_example = iwae_log_likelihoods(model, data, ks, seed, chunk_rows, progress)
    seconds = time.perf_counter() - started
    dims = math.prod(data.shape)
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
    rows[-1]["seconds"] = seconds  # one pass computes every k: the time is the largest k's
    return rows


# --- reconstructions and latent probes --------------------------------------------------
@torch.no_grad()
def latent_means(model: nn.Module, data: Dataset, batch_size: int = 1000) -> torch.Tensor:
    """Posterior means E_q[z|x] of every example, shape (N, latent_dim), on the CPU."""
    device = next(model.parameters()).device
    return torch.cat(
        [
            model.encode(x.to(device), **label_args(model, y, device))[0].float().cpu()
            for x, y in BatchIterator(data.x, data.y, batch_size, shuffle=False)
        ]
    )


@torch.no_grad()
def reconstruction_mse(model: nn.Module, data: Dataset, batch_size: int = 1000) -> float:
    """Mean squared error per pixel between x and the decoded posterior mean, on [0,1]."""
    device = next(model.parameters()).device
    total = 0.0
    for x, y in BatchIterator(data.x, data.y, batch_size, shuffle=False):
        x, labels = x.to(device), label_args(model, y, device)
        total += (model.reconstruct(x, **labels) - x).double().square().sum().item()
    return total / data.x.numel()


@torch.no_grad()
def class_probabilities(model: nn.Module, data: Dataset, batch_size: int = 1000) -> torch.Tensor:
    """q(y | x) of a model with a classifier (M2) for every example: (N, K), on the CPU."""
    device = next(model.parameters()).device
    return torch.cat(
        [
            model.classify(x.to(device)).cpu()
            for x, _ in BatchIterator(data.x, None, batch_size, shuffle=False)
        ]
    )


def known_label_accuracy(
    predicted: torch.Tensor, y: torch.Tensor, classes: list[str] | None
) -> tuple[float | None, int]:
    """(accuracy, count) of predicted class indices over the examples with a known label:
    with class names, those of an "unlabelled" class are left out (see models.m2)."""
    from .models.m2 import UNLABELLED, known_classes

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
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

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


# --- the whole evaluation ---------------------------------------------------------------
def binarization_note(dataset: str, binarize: str, likelihood: str = "bernoulli") -> str:
    """Which binarisation the likelihood numbers refer to, in words."""
    if dataset == "binarized-mnist":
        return "static (the fixed binarisation of Larochelle & Murray)"
    if binarize == "dynamic":
        return f"dynamic (evaluation images binarised once, Bernoulli draws with seed {BINARIZE_TEST_SEED})"
    if likelihood == "bernoulli":
        return (
            "none (grey levels in [0,1]; the Bernoulli term is a cross-entropy, not a likelihood)"
        )
    return f"none (grey levels in [0,1]; {likelihood} densities, comparable only with densities)"


def evaluation_set(data: Dataset, binarize: str) -> Dataset:
    """The images likelihoods are computed on: binarised once with a fixed seed under
    dynamic binarisation (the same set training reports its test numbers on)."""
    if binarize != "dynamic":
        return data
    from .train import binarize_fixed

    return binarize_fixed(data, seed=BINARIZE_TEST_SEED)


def _resolve(run_or_model, data, binarize, device):
    """(model, run folder or None, DataConfig or None, DataSplits, binarize)."""
    from .config import DataConfig
    from .data import load_data
    from .errors import RunError
    from .runs import RunFolder
    from .train import load

    run = None
    if isinstance(run_or_model, nn.Module):
        model = run_or_model.to(device).eval()
        config = data if isinstance(data, DataConfig) else None
    else:
        run = RunFolder(run_or_model).require()
        if not run.weights_path.exists():
            raise RunError(
                f"{run.weights_path}: weights file not found (training unfinished? "
                f"continue it with: vaekit train --resume {run.path})"
            )
        model = load(run.path, device=device)
        config = data if isinstance(data, DataConfig) else run.load_config().data
    if not isinstance(data, DataSplits):
        config = config or DataConfig()
        data = load_data(replace(config, limit_train=None, limit_test=None))
    if binarize is None:
        binarize = config.binarize if config is not None else "none"
    return model, run, config, data, binarize


def _split(data: DataSplits, split: str) -> Dataset:
    from .errors import ConfigError

    chosen = {"train": data.train, "test": data.test, "valid": data.valid}.get(split)
    if chosen is None:
        known = "train, test" + (", valid" if data.valid is not None else "")
        raise ConfigError(f"{data.name} has no split {split!r} (known: {known})")
    return chosen


def _quality_classifier(data: DataSplits, config, binary: bool, progress: bool):
    """The feature classifier for `data` (a labelled relative's for unlabelled data)."""
    from .config import DataConfig
    from .data import load_data
    from .quality import feature_classifier

    if data.train.y is None:
        relative = FEATURE_DATASETS.get(data.name)
        if relative is None:
            return None
        data = load_data(DataConfig(name=relative))
        binary = True
    return feature_classifier(data, binary, progress=progress)


def evaluate_run(
    run_or_model: str | Path | nn.Module,
    *,
    data: DataSplits | Any = None,
    split: str = "test",
    k: int | Sequence[int] = 5000,
    limit: int | None = None,
    n_samples: int | None = None,
    probes: bool = True,
    quality: bool = True,
    binarize: str | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    device: str = "cpu",
    json_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run folder (or a model) and return the report as a dict.

    `data`: a DataConfig or DataSplits (default: the run's dataset); the limits of a
    DataConfig are dropped (whole splits), use `limit` to evaluate fewer examples.
    `k`: one or several importance-sample counts for the IWAE bound. `limit`: evaluate the
    first N examples of `split` only. `n_samples`: generated images for sample quality
    (default: as many as evaluated images, at most 10,000). `binarize`: "none" or "dynamic"
    (default: the run's setting). The report goes to RUN/evaluation.json and `json_path`.
    """
    from .errors import ConfigError
    from .runs import atomic_write_text

    ks = [k] if isinstance(k, int) else list(k)
    if not ks or min(ks) < 1:
        raise ConfigError(f"k must be one or more sample counts >= 1, got {k!r}")
    model, run, config, splits, binarize = _resolve(run_or_model, data, binarize, device)
    evaluated = evaluation_set(_split(splits, split), binarize).head(limit)
    binary = binarize == "dynamic" or splits.name == "binarized-mnist"
    report: dict[str, Any] = {
        "run": str(run.path) if run else None,
        "dataset": splits.name,
        "split": split,
        "n_examples": len(evaluated),
        "data_dims": math.prod(evaluated.shape),
        "binarization": binarization_note(
            splits.name, binarize, getattr(model.likelihood, "name", "bernoulli")
        ),
        "units": UNITS,
        "seed": seed,
    }
    report["elbo"] = report["latent"] = report["iwae"] = None  # models without an ELBO
    if getattr(model, "has_elbo", True):
        report |= _likelihoods(model, evaluated, ks, seed, batch_size, progress)
    report["reconstruction_mse"] = reconstruction_mse(model, evaluated, batch_size)
    report["classification"] = None  # models with a classifier (M2) report its accuracy
    if hasattr(model, "classify") and evaluated.y is not None:
        report["classification"] = classification_accuracy(
            model, evaluated, batch_size, splits.classes
        )
    report["probes"] = _probes(model, splits, evaluated, binarize, batch_size) if probes else None
    report["sample_quality"] = None
    if quality:
        report["sample_quality"] = _sample_quality(
            model, splits, evaluated, config, binary, n_samples, seed, progress
        )
    text = json.dumps(report, indent=2) + "\n"
    if run is not None:
        atomic_write_text(run.file(EVALUATION_FILE), text)
    if json_path is not None:
        atomic_write_text(Path(json_path), text)
    return report


def _likelihoods(model, data: Dataset, ks, seed: int, batch_size: int, progress: bool):
    """The report's ELBO, latent-usage and IWAE sections."""
    elbo = evaluate_elbo(model, data, batch_size, seed)
    latent = {
        "kl_per_dim": elbo["kl_per_dim"],
        "active_units": elbo["active_units"],
        "latent_dim": elbo["latent_dim"],
        "threshold": ACTIVE_UNIT_THRESHOLD,
        "warning": collapse_warning(elbo),
    }
    return {
        "elbo": {key: elbo[key] for key in ("neg_elbo", "recon", "kl", "bits_per_dim")},
        "latent": latent,
        "iwae": iwae_bounds(model, data, ks, seed, progress=progress),
    }


def _probes(model, splits: DataSplits, evaluated: Dataset, binarize: str, batch_size: int):
    if splits.train.y is None or evaluated.y is None:
        return {"skipped": f"{splits.name} has no labels"}
    train = evaluation_set(splits.train, binarize)
    return probe_accuracy(
        latent_means(model, train, batch_size),
        train.y,
        latent_means(model, evaluated, batch_size),
        evaluated.y,
    )


def _sample_quality(model, splits, evaluated, config, binary, n_samples, seed, progress):
    from .quality import sample_quality

    classifier = _quality_classifier(splits, config, binary, progress)
    if classifier is None:
        return {"skipped": f"{splits.name} has no labels to train a feature classifier on"}
    n = n_samples or min(len(evaluated), MAX_QUALITY_SAMPLES)
    real = evaluated.head(MAX_QUALITY_SAMPLES)
    if min(n, len(real)) < MIN_QUALITY_SAMPLES:
        return {"skipped": f"needs at least {MIN_QUALITY_SAMPLES} real and generated images"}
    return sample_quality(model, real, classifier, n, binary, seed)


# --- the table --------------------------------------------------------------------------
Row = tuple[str, str, str, str]  # quantity, value, unit, what it is computed from


def format_report(report: dict[str, Any]) -> str:
    """The report as a table: quantity, value, unit, and the samples behind each number."""
    images = f"{report['n_examples']} {report['split']} images"
    rows = _elbo_rows(report, images) + _iwae_rows(report, images) + _other_rows(report, images)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{report['dataset']}, {report['split']} split: {report['n_examples']} images of "
        f"{report['data_dims']} dims; binarisation: {report['binarization']}",
        "",
    ]
    for quantity, value, unit, basis in rows:
        line = f"{quantity:<{widths[0]}}  {value:>{widths[1]}}  {unit:<{widths[2]}}  {basis}"
        lines.append(line.rstrip())
    latent = report["latent"]
    if latent:
        kl = " ".join(f"{v:.2f}" for v in latent["kl_per_dim"])
        lines += ["", f"KL per latent dimension (nats/example, {images}): {kl}"]
    if latent and latent["warning"]:
        lines.append(f"warning: {latent['warning']}")
    return "\n".join(lines)


def _elbo_rows(report: dict[str, Any], images: str) -> list[Row]:
    elbo, latent = report["elbo"], report["latent"]
    if elbo is None:
        return [("-ELBO, IWAE bound, KL", "skipped", "", "the model defines no likelihood bound")]
    basis = f"{images}, 1 posterior sample each"
    return [
        ("-ELBO", f"{elbo['neg_elbo']:.2f}", "nats/example", basis),
        ("  reconstruction -E_q[log p(x|z)]", f"{elbo['recon']:.2f}", "nats/example", basis),
        ("  KL(q(z|x) || p(z))", f"{elbo['kl']:.2f}", "nats/example", f"{images}, closed form"),
        ("-ELBO", f"{elbo['bits_per_dim']:.4f}", "bits/dim", basis),
        (
            f"active units (Cov_x E_q[z_d] > {latent['threshold']})",
            f"{latent['active_units']}/{latent['latent_dim']}",
            "latent dims",
            images,
        ),
    ]


def _iwae_rows(report: dict[str, Any], images: str) -> list[Row]:
    rows = []
    for row in report["iwae"] or []:
        basis = f"{images} x {row['k']} importance sample{'s' if row['k'] > 1 else ''}"
        basis += f", +-{row['stderr']:.2f} s.e. over images"
        if "seconds" in row:
            basis += f" ({row['seconds']:.0f} s for all k)"
        quantity = f"NLL, IWAE bound k={row['k']}"
        rows.append((quantity, f"{row['nll']:.2f}", "nats/example", basis))
        rows.append((quantity, f"{row['bits_per_dim']:.4f}", "bits/dim", ""))
    return rows


def _other_rows(report: dict[str, Any], images: str) -> list[Row]:
    mse = f"{report['reconstruction_mse']:.5f}"
    rows = [("reconstruction MSE (posterior mean)", mse, "per pixel, [0,1]", images)]
    if report.get("classification"):
        accuracy = f"{report['classification']['accuracy']:.2%}"
        rows.append(("classifier q(y|x) accuracy", accuracy, "of images", images))
    probes = report["probes"]
    if probes and "skipped" in probes:
        rows.append(("latent probes", "skipped", "", probes["skipped"]))
    elif probes:
        fit = f"fit on {probes['n_train']} train latent means, scored on {probes['n_test']}"
        rows += [
            ("linear probe accuracy", f"{probes['linear_accuracy']:.2%}", "of images", fit),
            (
                f"{probes['knn_neighbours']}-NN accuracy",
                f"{probes['knn_accuracy']:.2%}",
                "of images",
                fit,
            ),
            (
                "majority-class rate",
                f"{probes['chance_accuracy']:.2%}",
                "of images",
                f"{probes['n_test']} images",
            ),
        ]
    return rows + _quality_rows(report["sample_quality"])


def _quality_rows(quality: dict[str, Any] | None) -> list[Row]:
    if not quality:
        return []
    if "skipped" in quality:
        return [("sample quality", "skipped", "", quality["skipped"])]
    clf = quality["classifier"]
    basis = (
        f"{quality['n_generated']} generated ({quality['generated']}) vs "
        f"{quality['n_real']} real images"
    )
    return [
        (
            "Frechet distance (not Inception FID)",
            f"{quality['frechet_distance']:.2f}",
            "feature units^2",
            basis,
        ),
        ("precision (k=3)", f"{quality['precision']:.2%}", "of generated", basis),
        ("recall (k=3)", f"{quality['recall']:.2%}", "of real", basis),
        (
            "  feature classifier accuracy",
            f"{clf['test_accuracy']:.2%}",
            "of images",
            f"{clf['n_test']} {clf['dataset']} test images{' (binarised)' if clf['binary'] else ''}",
        ),
    ]
