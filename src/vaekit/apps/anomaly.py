"""Anomaly detection with a trained VAE: per-example scores, a threshold calibrated on the
training data, flags, and AUROC / AUPRC where the data has labels.

Scores (higher = more anomalous, nats per example, log-likelihoods summed over the data
dimensions):
  elbo   -ELBO, averaged over S posterior samples
  iwae   -log p(x) estimated by the importance-weighted bound with S samples (Burda et al.
         2015); elbo and iwae come from the same S samples
  recon  -log p(x | z) at the posterior mean (deterministic); the only score of models
         without an ELBO (autoencoder), squared error summed over dimensions for PCA

Calibration: the scores of (up to 10,000 of) the run's training examples are stored in
RUN/anomaly_calibration.safetensors; the threshold is their `quantile` (default 0.99), kept
with the quantile in RUN/anomaly.json. Training examples fit the model better than unseen
normal ones, so expect somewhat more than 1 - quantile of new normal data to be flagged.

Ground truth for AUROC / AUPRC: the labels given as `anomalous`; by default, labels that
never occur in the training data (train on normal classes, score a mix).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from vaekit.apps import ood
from vaekit.apps.encode import Texts, check_shape, data_items, id_columns, open_inputs
from vaekit.config.runs import RunFolder
from vaekit.core.errors import ConfigError, RunError
from vaekit.core.files import atomic_write_text, load_tensors, save_tensors
from vaekit.core.progress import progress_bar
from vaekit.data.binarize import evaluation_view
from vaekit.likelihoods import LOG_2PI
from vaekit.models.batched import map_batches, wide
from vaekit.models.loading import open_run
from vaekit.plots import save_figure

SCORES = ("elbo", "iwae", "recon", "regret", "complexity", "typicality", "ratio")
OOD_SCORES = ("regret", "complexity", "typicality", "ratio")  # apps/ood.py
DESCRIPTIONS = {
    "elbo": "-ELBO, mean over {s} posterior samples",
    "iwae": "-log p(x), importance-weighted bound with {s} samples",
    "recon": "-log p(x | z) at the posterior mean",
    "regret": "likelihood regret: -ELBO gained by optimising the posterior for the input "
    "alone ({s} draws)",
    "complexity": "-log p(x) ({s} samples) minus its PNG code length",
    "typicality": "|-log p(x) - the training data's mean| ({s} samples)",
    "ratio": "-log p(x) minus the background model's -log p(x) ({s} samples)",
}
UNIT = "nats per example (higher = more anomalous)"
CALIBRATION_FILE = "anomaly_calibration.safetensors"
THRESHOLD_FILE = "anomaly.json"
MAX_CALIBRATION = 10_000  # training examples scored for the threshold (a seeded subset)
CHUNK_ROWS = 4096  # decoder evaluations per step (examples x samples)
MOST_ANOMALOUS = 10  # examples listed in summary.json


# --- scores -------------------------------------------------------------------------------
def available_scores(model: nn.Module) -> tuple[str, ...]:
    """The score types `model` supports: all for a VAE with one Gaussian latent, all but
    regret for the other VAEs, recon for models without an ELBO."""
    if not model.has_elbo:
        return ("recon",)
    return SCORES if model.one_gaussian_latent else tuple(s for s in SCORES if s != "regret")


def check_scores(model: nn.Module, scores: tuple[str, ...]) -> None:
    for score in scores:
        if score not in SCORES:
            raise ConfigError(f"unknown score {score!r} (known: {', '.join(SCORES)})")
        if score not in available_scores(model):
            needs = "a VAE with one Gaussian latent" if model.has_elbo else "a model with an ELBO"
            raise ConfigError(f"score {score!r} needs {needs}; use recon or elbo")


def reconstruction_error(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | z = posterior mean) per example; squared error for models without a likelihood."""
    labels = {"y": model.classify(x).argmax(1)} if model.can_classify else {}
    z_mean = model.encode(x, **labels)[0]  # M2: given its classifier's most likely label
    params = wide(model.decode(z_mean, **labels))
    likelihood = getattr(model, "likelihood", None)
    if likelihood is None:
        return (params - x).square().flatten(1).sum(1)
    return likelihood.nll(params, x)


def sampled_log_weights(
    model: nn.Module, x: torch.Tensor, eps: torch.Tensor, samples: int, batch_seed: int
) -> torch.Tensor:
    """(samples, B) importance weights in float64: with the shared draws `eps` for a
    one-Gaussian-latent model; hierarchical and label-enumerating models (hvae, m2) draw
    their own, from a generator seeded per batch."""
    if model.one_gaussian_latent:
        return log_weights(model, x, eps).double()
    generator = torch.Generator(device=x.device).manual_seed(batch_seed)
    return model.log_importance_weights(x, samples, generator).double()


def log_weights(model: nn.Module, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x, z_i) - log q(z_i | x) for z_i = mean + sigma * eps_i: shape (k, B).

    The same k standard-normal draws `eps` (k, D) serve every example (common random
    numbers): an example's estimate does not depend on which others share its batch."""
    z_mean, z_log_var = (wide(t) for t in model.encode(x))
    z = z_mean + torch.exp(0.5 * z_log_var) * eps[:, None, :]  # (k, B, D)
    log_q = -0.5 * (eps.square()[:, None, :] + z_log_var + LOG_2PI).sum(-1)
    log_prior = model.log_prior(z)  # (k, B)
    targets = x.unsqueeze(0).expand(len(eps), *x.shape).flatten(0, 1)
    log_px = -model.likelihood.nll(wide(model.decode(z.flatten(0, 1))), targets)
    return log_px.view(len(eps), -1) + log_prior - log_q


def anomaly_scores(
    model: nn.Module,
    x: torch.Tensor,
    scores: tuple[str, ...] = ("elbo",),
    samples: int = 10,
    seed: int = 0,
    progress: bool = False,
    *,
    typical_nll: float | None = None,
    background: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Each requested score of every example of x: float64 (N,) on the CPU, higher = more
    anomalous; an example gets the same score whatever else is scored with it.

    elbo and iwae share one pass of `samples` posterior draws per example; complexity,
    typicality and ratio build on that pass's iwae. typicality needs `typical_nll`, the
    training data's mean iwae score; ratio needs the `background` model (apps/ood.py)."""
    check_scores(model, scores)
    if "typicality" in scores and typical_nll is None:
        raise ConfigError("the typicality score needs the training data's mean -log p(x)")
    if "ratio" in scores and background is None:
        raise ConfigError("the ratio score needs a background model (--background RUN)")
    model.eval()
    needs_nll = {"complexity", "typicality", "ratio"} & set(scores)
    base = tuple(s for s in ("elbo", "iwae", "recon") if s in scores or (s == "iwae" and needs_nll))
    values = pass_scores(model, x, base, samples, seed, progress) if base else {}
    if "regret" in scores:
        values["regret"] = ood.likelihood_regret(model, x, samples, seed, progress=progress)
    if "complexity" in scores:
        values["complexity"] = ood.complexity(values["iwae"], x, model.likelihood.name, seed)
    if "typicality" in scores:
        values["typicality"] = ood.typicality(values["iwae"], typical_nll)
    if "ratio" in scores:
        background_nll = pass_scores(background, x, ("iwae",), samples, seed, progress)["iwae"]
        values["ratio"] = ood.likelihood_ratio(values["iwae"], background_nll)
    return {score: values[score] for score in scores}


@torch.no_grad()
def pass_scores(
    model: nn.Module,
    x: torch.Tensor,
    scores: tuple[str, ...],
    samples: int,
    seed: int,
    progress: bool,
) -> dict[str, torch.Tensor]:
    """elbo, iwae and recon of every example in one pass of `samples` posterior draws."""
    model.eval()
    device, dtype = next(model.parameters()).device, wide(x[:1]).dtype
    sampled = "elbo" in scores or "iwae" in scores
    if sampled:
        generator = torch.Generator().manual_seed(seed)
        eps = torch.randn(samples, model.latent_dim, generator=generator).to(device, dtype)
    bar = progress_bar(len(x), "scoring", progress)

    def score(xb: torch.Tensor, _) -> tuple[torch.Tensor, ...]:
        start = bar.n  # examples scored before this batch: seeds its own draws
        values = {}
        if sampled:
            log_w = sampled_log_weights(model, xb, eps, samples, seed * 1_000_003 + start)
            values["elbo"] = -log_w.mean(0)
            values["iwae"] = math.log(samples) - torch.logsumexp(log_w, 0)
        if "recon" in scores:
            values["recon"] = reconstruction_error(model, xb).double()
        bar.update(len(xb))
        return tuple(values[s] for s in scores)

    columns = map_batches(score, x, None, max(1, CHUNK_ROWS // samples), device)
    bar.close()
    return dict(zip(scores, columns))


def threshold_at(train_scores: torch.Tensor, quantile: float) -> float:
    """The `quantile` of the training scores (linear interpolation)."""
    return torch.quantile(train_scores.double(), quantile).item()


def detection_metrics(scores: torch.Tensor, anomalous: torch.Tensor) -> dict[str, Any]:
    """AUROC and AUPRC (average precision) of `scores` for the ground truth `anomalous`."""
    # imported here, not at the top: scikit-learn adds 0.6 s to every command's start
    from sklearn.metrics import average_precision_score, roc_auc_score

    n_anomalous = int(anomalous.sum())
    n_normal = len(anomalous) - n_anomalous
    if n_anomalous == 0 or n_normal == 0:
        return {"skipped": "AUROC needs both normal and anomalous examples"}
    truth, values = anomalous.numpy(), np.nan_to_num(scores.double().numpy())
    return {
        "auroc": float(roc_auc_score(truth, values)),
        "auprc": float(average_precision_score(truth, values)),
        "n_anomalous": n_anomalous,
        "n_normal": n_normal,
        "base_rate": n_anomalous / len(anomalous),
    }


def ground_truth(
    labels: list[str] | None, anomalous: list[str] | None, train_labels: list[str] | None
) -> tuple[torch.Tensor | None, list[str], str | None]:
    """(is-anomalous flags, the anomalous labels, why there are none) from the labels."""
    if labels is None:
        return None, [], "the data has no labels"
    if anomalous is None:
        if not train_labels:
            return None, [], "the training data has no labels: give the anomalous labels"
        anomalous = sorted(set(labels) - set(train_labels))
        if not anomalous:
            return None, [], "every label occurs in the training data: give the anomalous labels"
    wanted = set(anomalous)
    return torch.tensor([label in wanted for label in labels]), sorted(wanted), None


# --- calibration stored in the run --------------------------------------------------------
def calibrate(
    run: RunFolder,
    model: nn.Module,
    score: str,
    samples: int,
    seed: int,
    progress: bool,
    again: bool = False,
    background: Background | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Scores of the run's training examples for `score` (and iwae, which typicality needs),
    kept in the run beside those of other scores; recomputed when `again` or when the kept
    ones used other settings (samples, seed, background run)."""
    path = run.file(CALIBRATION_FILE)
    kept, meta = load_tensors(path) if path.exists() and not again else ({}, {})
    same = meta.get("samples") == samples and meta.get("seed") == seed
    if not same:
        kept, meta = {}, {}
    wanted = (score, "iwae") if score == "typicality" else (score,)
    background_path = str(background.path) if background is not None else None
    if score == "ratio" and meta.get("background") != background_path:
        kept.pop("ratio", None)
    missing = tuple(s for s in wanted if s not in kept)
    if not missing:
        return kept, meta
    config = run.load_config()
    items = check_shape(data_items(config.data, None, "train"), model)
    n_train = min(len(items.x), config.data.limit_train or len(items.x))  # what it trained on
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    chosen = order[:MAX_CALIBRATION].sort().values
    x = evaluation_view(items.x[chosen], config.data.binarize)
    computed = tuple(s for s in missing if s != "typicality")
    kept |= anomaly_scores(
        model,
        x,
        computed,
        samples,
        seed,
        progress,
        background=background.model if background is not None else None,
    )
    if "typicality" in missing:  # the training scores' own distance from their mean
        kept["typicality"] = ood.typicality(kept["iwae"], kept["iwae"].mean().item())
    names = items.subset(chosen).label_names()
    meta |= {
        "samples": samples,
        "seed": seed,
        "n": len(chosen),
        "n_train": n_train,
        "source": f"{items.source}, training split",
        "labels": sorted(set(names)) if names is not None else None,
        "unit": UNIT,
    }
    if score == "ratio":
        meta["background"] = background_path
    save_tensors(path, kept, meta)
    return kept, meta


@dataclass
class Background:
    """The background model of the ratio score, and the run it came from."""

    path: Path
    model: nn.Module


def open_background(path: str | Path | None, model: nn.Module, device: str) -> Background | None:
    """The background run's model (None without a path), for inputs shaped like `model`'s."""
    if path is None:
        return None
    opened = open_run(path, device=device)
    if tuple(opened.model.shape) != tuple(model.shape) or not opened.model.has_elbo:
        raise ConfigError(
            f"{path}: the background model must be a VAE for examples shaped "
            f"{tuple(model.shape)} (it takes {tuple(opened.model.shape)})"
        )
    return Background(opened.folder.path, opened.model)


def record_threshold(run: RunFolder, score: str, entry: dict[str, Any]) -> None:
    """Keep the threshold of `score` in RUN/anomaly.json (other scores' entries stay)."""
    path = run.file(THRESHOLD_FILE)
    record: dict[str, Any] = {"unit": UNIT, "thresholds": {}}
    if path.exists():
        try:
            record = json.loads(path.read_text())
            record.setdefault("thresholds", {})
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RunError(f"{path}: not valid JSON (delete it to calibrate again)") from None
    record["thresholds"][score] = entry
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


# --- outputs ------------------------------------------------------------------------------
def scores_csv(
    ids: list[str],
    scores: torch.Tensor,
    flags: torch.Tensor,
    labels: list[str] | None,
    texts: Texts | None = None,
) -> str:
    """id, smiles/text (sequence runs), score, flag (1 = above the threshold), label (when
    the data has labels)."""
    header, firsts = id_columns(ids, texts, None)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header + ["score", "flag"] + (["label"] if labels is not None else []))
    for i, (first, value, flag) in enumerate(zip(firsts, scores.tolist(), flags.tolist())):
        label = [labels[i]] if labels is not None else []
        writer.writerow(first + [f"{value:.4f}", int(flag)] + label)
    return buffer.getvalue()


def most_anomalous(
    ids: list[str], scores: torch.Tensor, texts: Texts | None, n: int = MOST_ANOMALOUS
) -> list[dict[str, Any]]:
    """The `n` highest-scoring examples, highest first: id, score (and the string itself
    for a sequence run), for the summary and the command's output."""
    top = torch.argsort(scores, descending=True)[:n].tolist()
    rows = [{"id": ids[i], "score": round(scores[i].item(), 4)} for i in top]
    if texts is not None:
        for row, i in zip(rows, top):
            row[texts.name] = texts.values[i]
    return rows


def save_histogram(
    scores: torch.Tensor,
    threshold: float,
    path: Path,
    title: str,
    train_scores: torch.Tensor | None = None,
    truth: torch.Tensor | None = None,
    quantile: float | None = None,
) -> Path:
    """Histogram of the scores (normal / anomalous apart when known), the training scores as
    an outline, and the threshold; values beyond the 99.5th percentile go into the last bin."""

    everything = scores if train_scores is None else torch.cat([scores, train_scores])
    low = everything.min().item()
    high = max(torch.quantile(everything, 0.995).item(), threshold)
    high = high if high > low else low + 1.0
    bins = np.linspace(low, high, 61)
    clip = lambda v: v.clamp(max=high).numpy()  # noqa: E731
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if train_scores is not None:
        ax.hist(
            clip(train_scores),
            bins,
            density=True,
            histtype="step",
            color="0.4",
            lw=1.5,
            label=f"training (n={len(train_scores)})",
        )
    if truth is not None:
        for mask, name, colour in ((~truth, "normal", "tab:blue"), (truth, "anomalous", "tab:red")):
            ax.hist(
                clip(scores[mask]),
                bins,
                density=True,
                alpha=0.5,
                color=colour,
                label=f"{name} (n={int(mask.sum())})",
            )
    else:
        ax.hist(
            clip(scores),
            bins,
            density=True,
            alpha=0.6,
            color="tab:blue",
            label=f"scored (n={len(scores)})",
        )
    which = f"{quantile:g} quantile of training" if quantile is not None else "threshold"
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.2f} ({which})")
    beyond = int((scores > high).sum())
    ax.set_title(
        title + (f"\n{beyond} scores beyond the right edge are in the last bin" if beyond else ""),
        fontsize=9,
    )
    ax.set_xlabel(f"score, {UNIT}")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


# --- a run on data ------------------------------------------------------------------------
def detect_anomalies(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    score: str = "elbo",
    quantile: float = 0.99,
    anomalous: list[str] | None = None,
    samples: int = 10,
    seed: int = 0,
    output: str | Path | None = None,
    recalibrate: bool = False,
    background: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Score a run's test split (or every example of `data`), flag those above the calibrated
    threshold and write scores.csv, scores.png and summary.json to `output` (RUN/anomaly)."""

    if not 0 < quantile < 1:
        raise ConfigError(f"the threshold quantile must be between 0 and 1, got {quantile}")
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    inputs = open_inputs(run_dir, data, split, device)
    check_scores(inputs.model, (score,))
    if background is not None and score != "ratio":
        raise ConfigError("--background goes with --score ratio")
    back = open_background(background, inputs.model, device)
    calibration, meta = calibrate(
        inputs.run, inputs.model, score, samples, seed, progress, recalibrate, back
    )
    threshold = threshold_at(calibration[score], quantile)
    x = evaluation_view(inputs.items.x, inputs.config.data.binarize)
    typical = calibration["iwae"].mean().item() if score == "typicality" else None
    values = anomaly_scores(
        inputs.model,
        x,
        (score,),
        samples,
        seed,
        progress,
        typical_nll=typical,
        background=back.model if back is not None else None,
    )[score]
    flags = values > threshold
    labels = inputs.items.label_names()
    truth, anomalous_labels, note = ground_truth(labels, anomalous, meta.get("labels"))
    entry = {
        "quantile": quantile,
        "threshold": threshold,
        "samples": samples,
        "seed": seed,
        "n_train": meta["n"],
    }
    if back is not None:
        entry["background"] = str(back.path)
    record_threshold(inputs.run, score, entry)
    out = Path(output) if output else inputs.run.file("anomaly")
    description = DESCRIPTIONS[score].format(s=samples)
    report: dict[str, Any] = {
        "run": str(inputs.run.path),
        "data": inputs.source,
        "n_examples": len(values),
        "score": score,
        "score_description": description,
        "unit": UNIT,
        "threshold": entry
        | {"calibration": meta["source"], "stored_in": str(inputs.run.file(THRESHOLD_FILE))},
        "n_flagged": int(flags.sum()),
        "flagged_fraction": float(flags.double().mean()),
        "score_mean": values.mean().item(),
        "metrics": detection_metrics(values, truth) if truth is not None else {"skipped": note},
        "anomalous_labels": anomalous_labels,
    }
    texts = inputs.texts()
    report["most_anomalous"] = most_anomalous(inputs.items.ids, values, texts)
    title = f"{score} ({description}) of {inputs.source}"
    csv_text = scores_csv(inputs.items.ids, values, flags, labels, texts)
    atomic_write_text(out / "scores.csv", csv_text)
    save_histogram(
        values, threshold, out / "scores.png", title, calibration[score], truth, quantile
    )
    report["files"] = [str(out / name) for name in ("scores.csv", "scores.png", "summary.json")]
    atomic_write_text(out / "summary.json", json.dumps(report, indent=2) + "\n")
    return report
