"""Acceptance figures of the model family, measured on finished MNIST run folders.

    python benchmarks/model_family.py labels RUN      # CVAE: samples of label d classified as d
    python benchmarks/model_family.py kl RUN [RUN..]  # test KL per latent dim, recon, -ELBO

`labels` draws N samples per digit from a conditional run (means of p(x|z, y)) and labels
them with the evaluation's feature classifier (`vaekit.quality`, trained once and cached);
it prints the share classified as the requested digit, per digit. `kl` prints each run's
test -ELBO, reconstruction and KL (nats per image, 10,000 test images, one posterior sample
each) and the smallest and largest KL of a latent dimension (to check a free-bits floor).
"""

from __future__ import annotations

import argparse

import torch

import vaekit
from vaekit.config.runs import RunFolder
from vaekit.data import BatchIterator, load_data
from vaekit.evaluation.metrics import evaluate_elbo
from vaekit.evaluation.quality import feature_classifier


def label_accuracy(run: str, per_class: int, seed: int) -> None:
    model = vaekit.load(run)
    data = load_data(RunFolder(run).load_config().data)
    classifier = feature_classifier(data, binary=False)
    images, labels = model.class_grid(per_class, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        predicted = torch.cat(
            [
                classifier.net(x).argmax(1)
                for x, _ in BatchIterator(images, None, 1000, shuffle=False)
            ]
        )
    print(
        f"{run}: {per_class} samples per label, classified by the feature classifier "
        f"(test accuracy {classifier.info['test_accuracy']:.2%})"
    )
    for digit in range(model.n_classes):
        share = (predicted[labels == digit] == digit).float().mean().item()
        print(f"  label {digit}: {share:.1%} classified as {digit}")
    print(f"  all: {(predicted == labels).float().mean().item():.1%}")


def kl_table(runs: list[str]) -> None:
    print("run | beta | free bits | test -ELBO | recon | KL | min KL_d | max KL_d | active")
    for run in runs:
        config = RunFolder(run).load_config()
        test = load_data(config.data).test
        result = evaluate_elbo(vaekit.load(run), test)
        kl = result["kl_per_dim"]
        print(
            f"{run} | {config.train.beta:g} | {config.train.free_bits:g} | "
            f"{result['neg_elbo']:.2f} | {result['recon']:.2f} | {result['kl']:.2f} | "
            f"{min(kl):.3f} | {max(kl):.3f} | {result['active_units']}/{result['latent_dim']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("labels")
    p.add_argument("run")
    p.add_argument("-n", type=int, default=1000, help="samples per label")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("kl")
    p.add_argument("runs", nargs="+")
    args = parser.parse_args()
    if args.what == "labels":
        label_accuracy(args.run, args.n, args.seed)
    else:
        kl_table(args.runs)


if __name__ == "__main__":
    main()
