"""Semi-supervised MNIST: M1 + M2 (or M2 alone) with N labels against the same classifier
network trained on the N labelled images alone.

For each label count and seed: with the m1m2-mnist preset (default), first an m1-mnist VAE
on all 60,000 training images without labels (seed S), then `vaekit train --preset
m1m2-mnist --features M1 --labeled N --seed S` (the labelled images: N/10 per digit, chosen
with the seed); with --preset m2-mnist, M2 on the pixels alone. Reported: test accuracy,
training time (M1's included), and two baselines trained by cross-entropy on the same N
images only (Adam, the same seed): the M2 classifier's network on the pixels (MLP 500), and
the same network on the frozen M1 features. Also checks the analogy figure: the share of
its cells (style of a test image, content from a label) that the evaluation's feature
classifier reads as the label given.

    python benchmarks/semisupervised.py --labels 100 --seeds 0,1,2
    python benchmarks/semisupervised.py --labels 600,1000,3000 --seeds 0
    python benchmarks/semisupervised.py --preset m2-mnist --labels 100 --seeds 0
    python benchmarks/semisupervised.py --summary bench-runs/semisupervised
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

import common
import vaekit
from vaekit.config.runs import RunFolder
from vaekit.core.files import atomic_write_text
from vaekit.data import BatchIterator, load_data
from vaekit.evaluation.metrics import classification_accuracy
from vaekit.evaluation.quality import feature_classifier
from vaekit.models.m2 import balanced_choice
from vaekit.nn.mlp import MLPEncoder

RESULT_FILE = "semisupervised.json"


def supervised_only(
    config: vaekit.RunConfig, data, n_labeled: int, seed: int, epochs: int, features=None
) -> float:
    """Test accuracy of the M2 classifier's network (MLP `model.hidden` -> 10) trained on the
    labelled images alone: on the pixels, or on `features(x)` (frozen M1 means) if given."""
    torch.manual_seed(seed)
    chosen = balanced_choice(data.train.y, n_labeled, 10, seed)
    encode = features or (lambda x: x)
    with torch.no_grad():
        x, test_x = encode(data.train.x[chosen]), encode(data.test.x)
    y = data.train.y[chosen]
    hidden = config.model.classifier_hidden or config.model.hidden
    net = MLPEncoder(tuple(x.shape[1:]), hidden, 10, heads=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = BatchIterator(x, y, min(128, n_labeled), seed=seed)
    for epoch in range(epochs):
        for xb, yb in batches.epoch(epoch):
            loss = F.cross_entropy(net(xb)[0], yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = net(test_x)[0].argmax(1)
    return (predicted == data.test.y).double().mean().item()


def train_once(config: vaekit.RunConfig, path: Path, quiet: bool) -> float:
    """Train `config` into `path` unless it is there (resuming a stopped run); its training
    seconds."""
    common.train_once(config, path, progress=not quiet)
    return RunFolder(path).read_metrics()[-1]["train_seconds"]


def analogy_accuracy(model, data, n_images: int = 100) -> float:
    """Share of analogy cells (test image style x label content) that the evaluation's
    feature classifier labels as the label the decoder was given."""
    classifier = feature_classifier(data, binary=False)
    images = model.analogies(data.test.x[:n_images])
    wanted = torch.arange(10).repeat(n_images)
    with torch.no_grad():
        read = torch.cat(
            [
                classifier.net(b).argmax(1)
                for b, _ in BatchIterator(images, None, 1000, shuffle=False)
            ]
        )
    return (read == wanted).double().mean().item()


def run_one(args, n_labeled: int, seed: int) -> dict:
    config = vaekit.preset(args.preset)
    config.model.labeled = n_labeled
    config.train.seed = seed
    config.train.num_threads = args.threads
    if args.epochs:
        config.train.epochs = args.epochs
    m1_seconds, m1_model = 0.0, None
    if config.model.name == "m1m2":  # the unsupervised M1 first (one per seed, no labels)
        m1 = vaekit.preset("m1-mnist")
        m1.train.seed, m1.train.num_threads = seed, args.threads
        m1_path = args.out / f"m1-s{seed}"
        m1_seconds = train_once(m1, m1_path, args.quiet)
        m1_model = vaekit.load(m1_path)
        config.model.features = str(m1_path.resolve())
    config.name = f"{config.model.name}-{n_labeled}-s{seed}"
    path = args.out / config.name
    seconds = train_once(config, path, args.quiet) + m1_seconds
    history = RunFolder(path).read_metrics()
    model = vaekit.load(path)
    data = load_data(vaekit.DataConfig())
    result = {
        "model": config.model.name,
        "labeled": n_labeled,
        "seed": seed,
        "accuracy": classification_accuracy(model, data.test)["accuracy"],
        "supervised_only_accuracy": supervised_only(
            config, data, n_labeled, seed, args.baseline_epochs
        ),
        "analogy_accuracy": analogy_accuracy(model, data),
        "train_seconds": seconds,
        "m1_seconds": m1_seconds,
        "epochs": history[-1]["epoch"],
        "test_neg_elbo": history[-1]["test_neg_elbo"],
        "threads": args.threads or torch.get_num_threads(),
    }
    if m1_model is not None:
        result["m1_features_supervised_accuracy"] = supervised_only(
            config, data, n_labeled, seed, args.baseline_epochs, lambda x: m1_model.encode(x)[0]
        )
    atomic_write_text(path / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    print(
        f"{config.name}: {result['accuracy']:.2%} (supervised only: "
        f"{result['supervised_only_accuracy']:.2%}), analogies {result['analogy_accuracy']:.1%}, "
        f"{seconds / 60:.1f} min training",
        flush=True,
    )
    return result


def mean_spread(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.2%}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2%}{spread}"


def summary(folder: Path) -> None:
    results = [json.loads(p.read_text()) for p in sorted(folder.glob(f"*/{RESULT_FILE}"))]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["model"], r["labeled"]), []).append(r)
    print(
        "| model | labels | seeds | test accuracy | supervised only (pixels) | "
        "supervised only (M1 features) | analogy cells right | training |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (model, n), rows in sorted(groups.items()):
        cells = [
            mean_spread([r[key] for r in rows]) if key in rows[0] else "-"
            for key in (
                "accuracy",
                "supervised_only_accuracy",
                "m1_features_supervised_accuracy",
                "analogy_accuracy",
            )
        ]
        minutes = [r["train_seconds"] / 60 for r in rows]
        print(
            f"| {model} | {n} | {len(rows)} | **{cells[0]}** | {cells[1]} | {cells[2]} | "
            f"{cells[3]} | {statistics.mean(minutes):.1f} min (max {max(minutes):.1f}), "
            f"{rows[0]['threads']} thread(s) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="m1m2-mnist", help="m1m2-mnist or m2-mnist")
    parser.add_argument("--labels", default="100", help="comma-separated label counts")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=0, help="override the preset's epochs")
    parser.add_argument("--baseline-epochs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-runs/semisupervised"))
    parser.add_argument("--summary", type=Path, metavar="FOLDER")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    for n in (int(v) for v in args.labels.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            run_one(args, n, seed)


if __name__ == "__main__":
    main()
