"""Anomaly-detection benchmark: MNIST leave-one-digit-out, Fashion-MNIST vs MNIST
out-of-distribution detection (both ways), and scikit-learn's breast-cancer table.

    python benchmarks/anomaly.py                      # everything (about 15 min on 2 CPU cores)
    python benchmarks/anomaly.py --only table --epochs 3 --samples 20   # a quick look
    python benchmarks/anomaly.py --only ood --json benchmarks/results/ood/ood.json \
        --markdown benchmarks/results/ood/ood.md   # the OOD table (about 15 min)

1. Leave-one-digit-out: for each digit d, a VAE (MLP 784-400-20, Bernoulli) is trained on
   the MNIST training images of the other nine digits; the whole MNIST test set is scored
   and the test images of digit d are the anomalies. AUROC per digit and score type.
2. OOD (`--only ood`): a VAE (and a background VAE trained with --perturb 0.2) per image
   dataset; pairs Fashion-MNIST -> MNIST, MNIST -> Fashion-MNIST, MNIST -> uniform noise,
   Gaussian noise (MNIST's pixel mean and sd, clipped) and its vertical flips (`--n` test
   images per side, default 10,000), and a table: breast cancer, 30% held-out rows against
   the same rows with each feature shuffled across rows. Every score (the semantic ones and
   regret, complexity, typicality, ratio of apps/ood.py): AUROC, AUPRC and FPR at 95% TPR
   from the per-example scores, and seconds per 1,000 examples. An AUROC below 0.5 means
   the model ranks the OOD data as *more* normal (Nalisnick et al. 2019).
3. Table: breast cancer (569 rows, 30 features): a VAE with a per-dimension Gaussian
   likelihood is trained on 70% of the benign rows through vaekit's CSV loader
   (standardised with the training rows' statistics); the rest of the benign rows and all
   malignant rows are scored through `detect_anomalies`. Three split seeds.

Scores (higher = more anomalous, nats per example): elbo (-ELBO, mean over S posterior
samples), iwae (-log p(x), importance-weighted bound with S samples; the same samples),
recon (-log p(x|z) at the posterior mean); part 2 adds the out-of-distribution scores. Prints Markdown tables (and writes them to
--markdown FILE).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import vaekit
from vaekit.apps.anomaly import SCORES, anomaly_scores, detect_anomalies, detection_metrics
from vaekit.apps.ood import fpr_at_tpr
from vaekit.data import Dataset, DataSplits


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def image_config(epochs: int, seed: int = 0) -> vaekit.RunConfig:
    """The reference VAE (MLP 784-400-20, Bernoulli), `epochs` epochs."""
    return vaekit.RunConfig.from_dict(
        {"name": "anomaly-bench", "train": {"epochs": epochs, "seed": seed, "device": "cpu"}}
    )


def table_config(name: str, path: Path, label_column: str, epochs: int, seed: int):
    """The breast-cancer VAE (MLP 30-64-4, Gaussian per feature) on the CSV at `path`."""
    return vaekit.RunConfig.from_dict(
        {
            "name": name,
            "data": {
                "name": "csv",
                "path": str(path),
                "label_column": label_column,
                "id_column": "id",
            },
            "model": {"hidden": [64], "latent_dim": 4, "likelihood": "gaussian-perdim"},
            "train": {"epochs": epochs, "batch_size": 32, "seed": seed, "device": "cpu"},
        }
    )


def train_model(config: vaekit.RunConfig, data: DataSplits, folder: Path) -> torch.nn.Module:
    run = vaekit.train(config, folder, progress=False, outputs=False, data=data)
    return run.model


def subset(data: Dataset, mask: torch.Tensor, name: str) -> Dataset:
    return Dataset(data.x[mask], data.y[mask], name)


BASE_SCORES = ("elbo", "iwae", "recon")  # the semantic-anomaly scores of parts 1 and 3
BACKGROUND_PERTURB = 0.2  # the background models' input perturbation (Ren et al. 2019)
CALIBRATION_N = 10_000  # training images whose mean NLL is typicality's centre


def aurocs(model, x: torch.Tensor, truth: torch.Tensor, samples: int) -> dict[str, float]:
    """AUROC of every semantic score type for `truth` (True = anomalous)."""
    scores = anomaly_scores(model, x, BASE_SCORES, samples)
    return {s: detection_metrics(v, truth)["auroc"] for s, v in scores.items()}


# --- 1. leave one digit out ---------------------------------------------------------------
def leave_one_out(digits, epochs: int, samples: int, root: Path) -> list[dict]:
    mnist = vaekit.load_data(vaekit.DataConfig())
    rows = []
    for digit in digits:
        started = time.perf_counter()
        normal = mnist.train.y != digit
        data = DataSplits(
            subset(mnist.train, normal, f"mnist-without-{digit}/train"),
            subset(mnist.test, mnist.test.y != digit, f"mnist-without-{digit}/test"),
            f"mnist-without-{digit}",
            "built-in MNIST",
        )
        model = train_model(image_config(epochs), data, root / f"loo-{digit}")
        result = aurocs(model, mnist.test.x, mnist.test.y == digit, samples)
        rows.append({"digit": digit, **result, "n_train": int(normal.sum())})
        log(f"digit {digit}: {result} ({time.perf_counter() - started:.0f} s)")
    return rows


def format_loo(rows: list[dict], epochs: int, samples: int) -> str:
    lines = [
        f"Leave-one-digit-out MNIST: AUROC per held-out digit ({epochs} epochs per model, "
        f"{samples} posterior samples per test image; 10,000 test images, about 1,000 anomalous)",
        "",
        "| held-out digit | " + " | ".join(BASE_SCORES) + " |",
        "|---|" + "---|" * len(BASE_SCORES),
    ]
    for row in rows:
        lines.append(
            f"| {row['digit']} | " + " | ".join(f"{row[s]:.3f}" for s in BASE_SCORES) + " |"
        )
    means = {s: statistics.mean(r[s] for r in rows) for s in BASE_SCORES}
    best = max(means, key=means.get)
    lines.append("| **mean** | " + " | ".join(f"**{means[s]:.3f}**" for s in BASE_SCORES) + " |")
    lines += ["", f"Best score type by mean AUROC: **{best}** ({means[best]:.3f})."]
    return "\n".join(lines)


# --- 2. out-of-distribution ---------------------------------------------------------------
@dataclass
class Scored:
    """Per-example scores of one input set under one model, and seconds per 1,000 examples."""

    scores: dict[str, torch.Tensor]
    cost: dict[str, float]


def image_ood_models(name: str, data: DataSplits, epochs: int, root: Path):
    """The VAE of dataset `name` and its background model (trained with --perturb 0.2)."""
    model = train_model(image_config(epochs), data, root / f"ood-{name}")
    background_config = image_config(epochs)
    background_config.train.perturb = BACKGROUND_PERTURB
    background = train_model(background_config, data, root / f"ood-{name}-background")
    return model, background


def score_all(model, x, samples: int, typical_nll: float, background, scores) -> Scored:
    """Every score of x, each computed on its own (so its cost is what a user pays for it)."""
    values, cost = {}, {}
    for score in scores:
        started = time.perf_counter()
        values[score] = anomaly_scores(
            model, x, (score,), samples, typical_nll=typical_nll, background=background
        )[score]
        cost[score] = (time.perf_counter() - started) / len(x) * 1000
        log(f"  {score}: {cost[score]:.2f} s per 1,000 examples")
    return Scored(values, cost)


def pair_metrics(inside: Scored, outside: Scored, scores) -> dict[str, dict[str, float]]:
    """AUROC, AUPRC and FPR at 95% TPR of each score, the OOD inputs as positives."""
    result = {}
    for s in scores:
        values = torch.cat([inside.scores[s], outside.scores[s]])
        truth = torch.cat([torch.zeros(len(inside.scores[s])), torch.ones(len(outside.scores[s]))])
        metrics = detection_metrics(values, truth.bool())
        fpr = fpr_at_tpr(np.nan_to_num(values.numpy()), truth.bool().numpy())
        result[s] = {"auroc": metrics["auroc"], "auprc": metrics["auprc"], "fpr95": fpr}
    return result


def image_ood(epochs: int, samples: int, n: int, root: Path) -> list[dict]:
    """Fashion-MNIST vs MNIST both ways, and MNIST vs uniform noise, Gaussian noise and its
    own vertical flips: every score's AUROC, AUPRC, FPR@95%TPR and cost."""
    sets = {
        name: vaekit.load_data(vaekit.DataConfig(name=name)) for name in ("fashion-mnist", "mnist")
    }
    mnist_test = sets["mnist"].test.x[:n]
    generator = torch.Generator().manual_seed(0)
    mean, std = mnist_test.mean().item(), mnist_test.std().item()
    others = {
        "fashion-mnist": [("mnist", mnist_test)],
        "mnist": [
            ("fashion-mnist", sets["fashion-mnist"].test.x[:n]),
            ("uniform noise", torch.rand(n, 1, 28, 28, generator=generator)),
            (
                "Gaussian noise",
                (mean + std * torch.randn(n, 1, 28, 28, generator=generator)).clamp(0, 1),
            ),
            ("vertical flips", mnist_test.flip(-2)),
        ],
    }
    rows = []
    for name in ("fashion-mnist", "mnist"):
        started = time.perf_counter()
        model, background = image_ood_models(name, sets[name], epochs, root)
        train_nll = anomaly_scores(model, sets[name].train.x[:CALIBRATION_N], ("iwae",), samples)
        typical_nll = train_nll["iwae"].mean().item()
        log(f"OOD: {name} models trained, scoring its test set")
        inside = score_all(model, sets[name].test.x[:n], samples, typical_nll, background, SCORES)
        for other, x in others[name]:
            log(f"OOD: {name} -> {other}")
            outside = score_all(model, x, samples, typical_nll, background, SCORES)
            rows.append(
                {
                    "trained": name,
                    "ood": other,
                    "n": n,
                    "metrics": pair_metrics(inside, outside, SCORES),
                    "cost": inside.cost,
                }
            )
        log(f"OOD {name}: {time.perf_counter() - started:.0f} s")
    return rows


TABLE_SCORES = ("elbo", "iwae", "recon", "regret", "typicality")  # complexity, ratio: images


def table_ood(epochs: int, samples: int, root: Path, seed: int = 0) -> dict:
    """Breast cancer: a VAE on 70% of the rows; in-distribution = the other 30%, OOD = the
    same rows with each feature shuffled across rows (marginals kept, correlations broken)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    order = np.random.default_rng(seed).permutation(len(data.target))
    cut = round(0.7 * len(order))
    train_rows, test_rows = np.sort(order[:cut]), np.sort(order[cut:])
    rng = np.random.default_rng(seed + 1)
    shuffled = np.column_stack(
        [rng.permutation(data.data[test_rows, j]) for j in range(data.data.shape[1])]
    )
    folder = root / "table-ood"
    folder.mkdir(parents=True)
    header = ["id", *data.feature_names, "kind"]
    with (folder / "train.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([f"row{i}", *data.data[i], "in"] for i in train_rows)
    with (folder / "test.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([f"row{i}", *data.data[i], "in"] for i in test_rows)
        writer.writerows([f"shuffled{k}", *row, "out"] for k, row in enumerate(shuffled))
    config = table_config("table-ood", folder / "train.csv", "kind", epochs, seed)
    vaekit.train(config, folder / "run", progress=False, outputs=False)
    metrics, cost = {}, {}
    for s in TABLE_SCORES:
        started = time.perf_counter()
        report = detect_anomalies(
            folder / "run",
            folder / "test.csv",
            score=s,
            samples=samples,
            anomalous=["out"],
            output=folder / s,
            progress=False,
        )
        cost[s] = (time.perf_counter() - started) / report["n_examples"] * 1000
        with (folder / s / "scores.csv").open() as f:
            rows = list(csv.DictReader(f))
        values = np.array([float(r["score"]) for r in rows])
        truth = np.array([r["label"] == "out" for r in rows])
        m = report["metrics"]
        metrics[s] = {"auroc": m["auroc"], "auprc": m["auprc"], "fpr95": fpr_at_tpr(values, truth)}
    return {
        "trained": "breast cancer (70% of rows)",
        "ood": "rows with shuffled features",
        "n": len(test_rows),
        "metrics": metrics,
        "cost": cost,
    }


def format_ood(rows: list[dict], epochs: int, samples: int) -> str:
    lines = [
        f"Out-of-distribution detection ({epochs} epochs per image model, MLP 784-400-20, "
        f"Bernoulli; background models trained with --perturb {BACKGROUND_PERTURB}; "
        f"{samples} posterior samples; typicality's mean NLL from {CALIBRATION_N} training "
        "images). OOD inputs are the positives. Each cell: AUROC / AUPRC / FPR at 95% TPR; "
        "n.a.: the score needs images.",
        "",
        "| trained on | OOD data | n per side | " + " | ".join(SCORES) + " |",
        "|---|---|---|" + "---|" * len(SCORES),
    ]
    for r in rows:
        cells = []
        for s in SCORES:
            m = r["metrics"].get(s)
            cells.append(
                "n.a." if m is None else f"{m['auroc']:.3f} / {m['auprc']:.3f} / {m['fpr95']:.3f}"
            )
        lines.append(f"| {r['trained']} | {r['ood']} | {r['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cost: seconds per 1,000 in-distribution examples, each score on its own "
        "(these 2 CPU cores):",
        "",
        "| trained on | " + " | ".join(SCORES) + " |",
        "|---|" + "---|" * len(SCORES),
    ]
    seen = set()
    for r in rows:
        if r["trained"] in seen:
            continue
        seen.add(r["trained"])
        cells = [f"{r['cost'][s]:.2f}" if s in r["cost"] else "n.a." for s in SCORES]
        lines.append(f"| {r['trained']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- 3. breast cancer ---------------------------------------------------------------------
def write_table(path: Path, data, rows: np.ndarray) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *data.feature_names, "diagnosis"])
        for i in rows:
            label = "benign" if data.target[i] == 1 else "malignant"
            writer.writerow([f"row{i}", *data.data[i], label])


def breast_cancer(epochs: int, samples: int, root: Path, seeds=(0, 1, 2)) -> list[dict]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    benign, malignant = np.flatnonzero(data.target == 1), np.flatnonzero(data.target == 0)
    rows = []
    for seed in seeds:
        shuffled = np.random.default_rng(seed).permutation(benign)
        cut = round(0.7 * len(benign))
        folder = root / f"bc-{seed}"
        folder.mkdir(parents=True)
        write_table(folder / "train.csv", data, np.sort(shuffled[:cut]))
        write_table(folder / "test.csv", data, np.sort(np.concatenate([shuffled[cut:], malignant])))
        config = table_config("bc", folder / "train.csv", "diagnosis", epochs, seed)
        vaekit.train(config, folder / "run", progress=False, outputs=False)
        row = {"seed": seed, "n_train": cut}
        for s in BASE_SCORES:
            report = detect_anomalies(
                folder / "run", folder / "test.csv", score=s, samples=samples, progress=False
            )
            row[s] = report["metrics"]["auroc"]
            row[f"{s}_auprc"] = report["metrics"]["auprc"]
        row["n_normal"], row["n_anomalous"] = (
            report["metrics"]["n_normal"],
            report["metrics"]["n_anomalous"],
        )
        rows.append(row)
        log(f"breast cancer, seed {seed}: {row}")
    return rows


def format_table(rows: list[dict], epochs: int, samples: int) -> str:
    r0 = rows[0]
    lines = [
        f"Breast cancer (scikit-learn): trained on {r0['n_train']} benign rows ({epochs} epochs, "
        f"MLP 30-64-4, Gaussian likelihood per feature), scored {r0['n_normal']} held-out "
        f"benign and {r0['n_anomalous']} malignant rows; {samples} posterior samples; "
        f"{len(rows)} split seeds, mean ± sd.",
        "",
        "| score | AUROC | AUPRC |",
        "|---|---|---|",
    ]
    for s in BASE_SCORES:
        auroc = [r[s] for r in rows]
        auprc = [r[f"{s}_auprc"] for r in rows]
        lines.append(
            f"| {s} | {statistics.mean(auroc):.3f} ± {statistics.pstdev(auroc):.3f} | "
            f"{statistics.mean(auprc):.3f} ± {statistics.pstdev(auprc):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="loo,ood,table", help="parts: loo, ood, table")
    parser.add_argument("--n", type=int, default=10_000, help="OOD: examples per side")
    parser.add_argument("--ood-epochs", type=int, default=10, help="OOD: epochs per model")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the image models")
    parser.add_argument("--table-epochs", type=int, default=100, help="epochs of the table model")
    parser.add_argument("--samples", type=int, default=50, help="posterior samples per example")
    parser.add_argument("--ood-samples", type=int, default=10, help="OOD: posterior samples")
    parser.add_argument("--json", type=Path, help="OOD: also write the rows (all metrics) here")
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = set(args.only.split(","))
    sections = []
    with tempfile.TemporaryDirectory(prefix="vaekit-anomaly-") as tmp:
        root = Path(tmp)
        if "loo" in parts:
            digits = [int(d) for d in args.digits.split(",")]
            rows = leave_one_out(digits, args.epochs, args.samples, root)
            sections.append(format_loo(rows, args.epochs, args.samples))
        if "ood" in parts:
            rows = image_ood(args.ood_epochs, args.ood_samples, args.n, root)
            rows.append(table_ood(args.table_epochs, args.ood_samples, root))
            sections.append(format_ood(rows, args.ood_epochs, args.ood_samples))
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2) + "\n")
        if "table" in parts:
            rows = breast_cancer(args.table_epochs, args.samples, root)
            sections.append(format_table(rows, args.table_epochs, args.samples))
    text = "\n\n".join(sections) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
