"""`vaekit optimize`: search a molecule run's latent space for better molecules."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit.cli.args import (
    add_device_argument,
    add_run_argument,
    non_negative_int,
    positive_int,
    seed,
    wrote,
)

PROPERTY_NAMES = ("qed", "logp", "sa")  # apps/optimize.py PROPERTIES (not imported: start-up)


def add_optimize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "optimize",
        help="find new molecules with a better property in a molecule run's latent space",
        description="Score the training molecules with RDKit (qed, logp or sa), fit a small "
        "regressor from their latent codes to the property (its held-out R^2 is printed), "
        "climb it by gradient ascent from the codes of the best training molecules (a "
        "penalty keeps the codes where the training codes lie), decode the codes along the "
        "way (greedily and by sampling), and score every valid decoded molecule with its "
        "true property. Prints the best novel ones (not in the training set) against the "
        "training set's best and 99th percentile, and writes every distinct valid molecule "
        "found to a CSV (smiles, property, is_novel), best first. Needs the molecules "
        'extra: pip install "vaekit[molecules]".',
    )
    add_run_argument(p)
    p.add_argument(
        "--property",
        dest="prop",
        required=True,
        choices=PROPERTY_NAMES,
        help="qed (drug-likeness, 0-1, higher is better), logp (Wildman-Crippen logP, "
        "higher is better) or sa (synthetic accessibility, 1-10, lower is better)",
    )
    p.add_argument("--steps", type=positive_int, default=100, help="gradient steps (100)")
    p.add_argument(
        "--starts",
        type=positive_int,
        default=50,
        help="codes of the best training molecules the search starts from (50)",
    )
    p.add_argument("--top", type=positive_int, default=10, help="novel molecules printed (10)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="FILE.csv (default RUN/optimize-PROPERTY.csv)",
    )
    p.add_argument(
        "--train-molecules",
        type=non_negative_int,
        default=50_000,
        metavar="N",
        help="training molecules scored and encoded to fit the regressor and rank the starts: "
        "a seeded sample of N when there are more (default 50000; 0: all); novelty is always "
        "checked against the whole training split",
    )
    p.add_argument("--seed", type=seed, default=0, help="the regressor's and the sampling's seed")
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run_command=cmd_optimize)


def cmd_optimize(args: argparse.Namespace) -> int:
    from vaekit.apps.optimize import optimize_run

    report = optimize_run(
        args.run,
        args.prop,
        steps=args.steps,
        starts=args.starts,
        top=args.top,
        output=args.output,
        train_molecules=args.train_molecules,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    prop, fit = report.prop, report.fit
    name = prop.name
    sample = "all" if report.n_scored == report.n_train else "a seeded sample"
    print(f"{name}: {prop.description}, computed by RDKit")
    print(
        f"training molecules scored: {report.n_scored} ({sample} of {report.n_train}); "
        f"{name} mean {report.train_mean:.4f}, {prop.top_percentile} {report.train_top:.4f}, "
        f"best {report.train_best:.4f}"
    )
    print(
        f"regressor z -> {name}: MLP on posterior means, held-out R^2 {fit.r2:.3f} "
        f"({fit.n_held_out} molecules; fitted on {fit.n_fit})"
    )
    share = report.n_valid / report.n_decoded if report.n_decoded else 0.0
    print(
        f"search: {report.starts} starts x {report.steps} steps; {report.n_decoded} decoded "
        f"strings, {report.n_valid} valid SMILES ({share:.1%}), {len(report.candidates)} "
        f"distinct molecules, {report.n_novel} novel"
    )
    means = report.path_means
    shown = sorted({min(means), sorted(means)[len(means) // 2], max(means)})
    print(
        f"mean {name} of the valid decodings along the search: "
        + ", ".join(f"step {step} {means[step]:.4f}" for step in shown)
    )
    if not report.top:
        print("no novel valid molecule was found (try more --starts or --steps)")
        return wrote([report.output])
    print(f"top {len(report.top)} novel molecules by {name} (RDKit):")
    print(f"{'rank':>4}  {name:>8}  smiles")
    for rank, candidate in enumerate(report.top, start=1):
        print(f"{rank:>4}  {candidate.value:>8.4f}  {candidate.smiles}")
    over_top = sum(report.beats(c.value, report.train_top) for c in report.top)
    over_best = sum(report.beats(c.value, report.train_best) for c in report.top)
    print(
        f"{over_top} of {len(report.top)} beat the training {prop.top_percentile} "
        f"({report.train_top:.4f}); {over_best} beat its best ({report.train_best:.4f})"
    )
    return wrote([report.output])
