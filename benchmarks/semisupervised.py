"""Semi-supervised MNIST: M2 with N labels against the same classifier trained on the N
labelled images alone.

For each label count and seed: one `vaekit train --preset m2-mnist --labeled N --seed S` run
(the labelled images: N/10 per digit, chosen with the seed), its test accuracy, its
training time; and the supervised-only baseline, the M2 classifier's network q(y|x) trained
by cross-entropy on the same N images (Adam, the same seed). Also checks the analogy figure:
the share of its cells (style of a test image, content from a label) that the evaluation's
feature classifier reads as the label given.

    python benchmarks/semisupervised.py --labels 100 --seeds 0,1,2
    python benchmarks/semisupervised.py --labels 600,1000,3000 --seeds 0
    python benchmarks/semisupervised.py --summary bench-runs/semisupervised
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vaekit
from vaekit.data import BatchIterator, load_data
from vaekit.evaluate import classification_accuracy
from vaekit.models.m2 import balanced_choice
from vaekit.nn.mlp import MLPEncoder
from vaekit.quality import feature_classifier
from vaekit.runs import RunFolder, atomic_write_text

RESULT_FILE = "semisupervised.json"


def supervised_only(
    config: vaekit.RunConfig, data, n_labeled: int, seed: int, epochs: int
) -> float:
    """Test accuracy of the M2 classifier's network trained on the labelled images alone."""
    torch.manual_seed(seed)
    chosen = balanced_choice(data.train.y, n_labeled, 10, seed)
    x, y = data.train.x[chosen], data.train.y[chosen]
    hidden = config.model.classifier_hidden or config.model.hidden
    net = MLPEncoder(data.shape, hidden, 10, heads=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = BatchIterator(x, y, min(128, n_labeled), seed=seed)
    for epoch in range(epochs):
        for xb, yb in batches.epoch(epoch):
            loss = F.cross_entropy(net(xb)[0], yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = net(data.test.x)[0].argmax(1)
    return (predicted == data.test.y).double().mean().item()


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
    config.name = f"m2-{n_labeled}-s{seed}"
    path = args.out / config.name
    if not (path / "model.safetensors").exists():
        started = time.perf_counter()
        vaekit.train(config, path, progress=not args.quiet)
        print(f"{config.name}: {time.perf_counter() - started:.0f} s wall", flush=True)
    history = RunFolder(path).read_metrics()
    model = vaekit.load(path)
    data = load_data(vaekit.DataConfig())
    result = {
        "labeled": n_labeled,
        "seed": seed,
        "m2_accuracy": classification_accuracy(model, data.test)["accuracy"],
        "supervised_only_accuracy": supervised_only(
            config, data, n_labeled, seed, args.baseline_epochs
        ),
        "analogy_accuracy": analogy_accuracy(model, data),
        "train_seconds": history[-1]["train_seconds"],
        "epochs": history[-1]["epoch"],
        "test_neg_elbo": history[-1]["test_neg_elbo"],
        "threads": args.threads or torch.get_num_threads(),
    }
    atomic_write_text(path / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    print(
        f"{config.name}: M2 {result['m2_accuracy']:.2%}, supervised only "
        f"{result['supervised_only_accuracy']:.2%}, analogies {result['analogy_accuracy']:.1%}, "
        f"{result['train_seconds'] / 60:.1f} min training",
        flush=True,
    )
    return result


def mean_spread(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.2%}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2%}{spread}"


def summary(folder: Path) -> None:
    results = [json.loads(p.read_text()) for p in sorted(folder.glob(f"*/{RESULT_FILE}"))]
    by_labels: dict[int, list[dict]] = {}
    for r in results:
        by_labels.setdefault(r["labeled"], []).append(r)
    print(
        "| labels | seeds | M2 test accuracy | supervised only | analogy cells right | training |"
    )
    print("|---|---|---|---|---|---|")
    for n, rows in sorted(by_labels.items()):
        m2, alone, analogies = (
            mean_spread([r[key] for r in rows])
            for key in ("m2_accuracy", "supervised_only_accuracy", "analogy_accuracy")
        )
        minutes = statistics.mean(r["train_seconds"] for r in rows) / 60
        print(
            f"| {n} | {len(rows)} | **{m2}** | {alone} | {analogies} | "
            f"{minutes:.1f} min, {rows[0]['threads']} thread(s) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="m2-mnist")
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
