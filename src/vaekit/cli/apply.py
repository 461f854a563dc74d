"""`vaekit anomaly`, `denoise`, `encode` and `classify`: apply a trained run to its test split or to
your own data (`--data PATH`: a folder of images, .npy/.npz, or a CSV table)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit.cli.args import (
    add_device_argument,
    add_run_argument,
    file_times,
    sample_count,
    seed,
    unit_fraction,
    wrote,
)


def label_list(text: str) -> list[str]:
    labels = [part.strip() for part in text.split(",") if part.strip()]
    if not labels:
        raise argparse.ArgumentTypeError(f"expected labels like 7 or cat,dog, got {text!r}")
    return labels


def add_inputs(p: argparse.ArgumentParser) -> None:
    """RUN, --data, --split, --device: what every application reads."""
    add_run_argument(p)
    p.add_argument(
        "--data",
        metavar="PATH",
        help="every example of PATH (image folder, .npy/.npz, .csv) instead of the run's test split",
    )
    p.add_argument(
        "--split", default="test", help="without --data: the split of the run's dataset (test)"
    )
    add_device_argument(p)


def add_anomaly(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "anomaly",
        help="anomaly scores, flags above a threshold calibrated on training data, AUROC",
        description="Score every example (higher = more anomalous, nats), flag those above "
        "the threshold (a quantile of the training examples' scores, stored in the run), and "
        "write scores.csv (id, score, flag, label), scores.png (histogram with the threshold) "
        "and summary.json; with labels, also AUROC and AUPRC.",
    )
    add_inputs(p)
    p.add_argument(
        "--score",
        choices=["elbo", "iwae", "recon", "regret", "complexity", "typicality", "ratio"],
        default="elbo",
        help="unusual examples of the training data's kind (semantic anomalies): elbo "
        "(-ELBO), iwae (importance-weighted -log p(x)), recon (-log p(x|z) at the posterior "
        "mean); inputs from another distribution (out-of-distribution): regret (likelihood "
        "regret), complexity (-log p(x) minus its PNG code length), typicality (distance "
        "from the training data's mean -log p(x)), ratio (-log p(x) minus a background "
        "model's, see --background). docs/own-data.md says which to use (default elbo)",
    )
    p.add_argument(
        "--background",
        type=Path,
        metavar="RUN",
        help="--score ratio: the background model's run, e.g. trained with --perturb 0.2",
    )
    p.add_argument(
        "--threshold-quantile",
        type=unit_fraction,
        default=0.99,
        metavar="Q",
        help="threshold = this quantile of the training scores (default 0.99)",
    )
    p.add_argument(
        "--samples", type=sample_count, default=10, help="posterior samples per example (10)"
    )
    p.add_argument(
        "--anomalous",
        type=label_list,
        metavar="LABELS",
        help="labels that are anomalies, e.g. 7 or malignant (default: labels absent from "
        "the training data)",
    )
    p.add_argument("-o", "--output", type=Path, metavar="DIR", help="default RUN/anomaly")
    p.add_argument("--recalibrate", action="store_true", help="score the training data again")
    p.add_argument("--seed", type=seed, default=0, help="seed of the posterior samples")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run_command=cmd_anomaly)


def cmd_anomaly(args: argparse.Namespace) -> int:
    from vaekit.apps.anomaly import detect_anomalies

    before = file_times(args.run)  # calibrating writes the threshold and scores in RUN
    report = detect_anomalies(
        args.run,
        args.data,
        split=args.split,
        score=args.score,
        quantile=args.threshold_quantile,
        anomalous=args.anomalous,
        samples=args.samples,
        seed=args.seed,
        output=args.output,
        recalibrate=args.recalibrate,
        background=args.background,
        device=args.device,
        progress=not args.quiet,
    )
    t = report["threshold"]
    print(
        f"scored {report['n_examples']} examples of {report['data']}: {report['score']} = "
        f"{report['score_description']}, {report['unit']}"
    )
    print(
        f"threshold {t['threshold']:.3f} nats = {t['quantile']:g} quantile of {t['n_train']} "
        f"training examples (stored in {t['stored_in']})"
    )
    print(
        f"flagged {report['n_flagged']} of {report['n_examples']} "
        f"({100 * report['flagged_fraction']:.1f}%)"
    )
    metrics = report["metrics"]
    if "auroc" in metrics:
        print(
            f"AUROC {metrics['auroc']:.4f}  AUPRC {metrics['auprc']:.4f}  "
            f"({metrics['n_anomalous']} anomalous [labels {', '.join(report['anomalous_labels'])}] "
            f"vs {metrics['n_normal']} normal)"
        )
    else:
        print(f"no AUROC: {metrics['skipped']}")
    top = report["most_anomalous"][:3]
    shown = lambda row: row.get("smiles", row.get("text", row["id"]))  # noqa: E731
    print("highest scores: " + ", ".join(f"{shown(row)} ({row['score']:.2f})" for row in top))
    calibration = [p for p, t in file_times(args.run).items() if before.get(p) != t]
    return wrote(list(dict.fromkeys(report["files"] + [str(p) for p in calibration])))


def add_denoise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "denoise",
        help="corrupt inputs with noise, reconstruct them, report PSNR before and after",
        description="Add noise to every example, reconstruct it through the model, and write "
        "denoised.npz, denoise.png (noisy / denoised / clean) and denoise.json with the PSNR "
        "(dB, peak 1) of the noisy and the denoised images against the clean ones.",
    )
    add_inputs(p)
    p.add_argument(
        "--noise",
        default="gaussian:0.3",
        metavar="KIND:LEVEL",
        help="gaussian:SIGMA or saltpepper:FRACTION (default gaussian:0.3)",
    )
    p.add_argument("-o", "--output", type=Path, metavar="DIR", help="default RUN/denoise")
    p.add_argument("--png", action="store_true", help="also one PNG per image in DIR/denoised/")
    p.add_argument("--seed", type=seed, default=0, help="seed of the noise")
    p.set_defaults(run_command=cmd_denoise, sequence_runs=False)  # images and tables only


def cmd_denoise(args: argparse.Namespace) -> int:
    from vaekit.apps.denoise import denoise_run

    report = denoise_run(
        args.run,
        args.data,
        args.noise,
        split=args.split,
        output=args.output,
        seed=args.seed,
        pngs=args.png,
        device=args.device,
    )
    print(f"{report['noise']} noise on {report['n_examples']} examples of {report['data']}")
    if "psnr" in report:
        p = report["psnr"]
        print(
            f"PSNR noisy {p['noisy']:.2f} dB -> denoised {p['denoised']:.2f} dB "
            f"(gain {report['gain_db']:+.2f} dB; clean input reconstructed: "
            f"{p['reconstructed_clean']:.2f} dB), mean over examples"
        )
    else:
        m = report["mse"]
        print(
            f"MSE noisy {m['noisy']:.4f} -> denoised {m['denoised']:.4f} "
            f"(clean input reconstructed: {m['reconstructed_clean']:.4f}), {report['unit']}"
        )
    return wrote(report["files"])


def add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="export latent means and log-variances (with ids and labels) to .npy or .csv",
        description="Encode every example and write its posterior mean and log-variance with "
        "its id and label: a structured .npy (fields id, label, z_mean, z_log_var) or a CSV.",
    )
    add_inputs(p)
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="FILE", help="FILE.npy or FILE.csv"
    )
    p.set_defaults(run_command=cmd_encode)


def cmd_encode(args: argparse.Namespace) -> int:
    from vaekit.apps.encode import encode_run

    report = encode_run(args.run, args.output, args.data, split=args.split, device=args.device)
    what = "means and log-variances" if report["log_variances"] else "codes"
    kl = f"; mean KL {report['mean_kl']:.2f} nats" if report["mean_kl"] is not None else ""
    print(
        f"encoded {report['n_examples']} examples of {report['source']}: {what} of "
        f"{report['latent_dim']} latent dims{kl}"
    )
    return wrote([report["output"]])


def add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="predict labels with a semi-supervised (m2) run's classifier",
        description="Predict the class of every example with the run's classifier q(y|x) and "
        "write id, label (if known), predicted label and class probabilities to a CSV; "
        "prints the accuracy when the examples have labels.",
    )
    add_inputs(p)
    p.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="FILE.csv (default RUN/predictions.csv)"
    )
    p.set_defaults(run_command=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    from vaekit.apps.encode import classify_run

    report = classify_run(args.run, args.output, args.data, split=args.split, device=args.device)
    accuracy = "" if report["accuracy"] is None else f": accuracy {report['accuracy']:.2%}"
    print(f"classified {report['n_examples']} examples of {report['source']}{accuracy}")
    return wrote([report["output"]])


COMMANDS = [add_anomaly, add_denoise, add_encode, add_classify]
