"""`vaekit sample`, `reconstruct` and `info`: look at a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vaekit.cli.args import (
    add_device_argument,
    add_output_argument,
    add_run_argument,
    check_output,
    image_count,
    non_negative_float,
    non_negative_int,
    seed,
)


def add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="draw images (or sequences) from the prior of a trained run",
        description="Decode n draws from the model's prior (N(0, I) unless it has its own: "
        "a VampPrior, an autoencoder's fitted Gaussian, PCA) into a PNG grid; a sequence "
        "run writes one sampled string per line (and, for molecules, reports the share "
        "RDKit reads as valid SMILES).",
    )
    add_run_argument(p)
    p.add_argument("-n", type=image_count, default=64, help="number of samples (default 64)")
    add_output_argument(
        p,
        "PNG file (default RUN/samples-N.png); sequence runs: a text file (RUN/samples-N.txt "
        "or .smi)",
    )
    p.add_argument("--seed", type=seed, default=0)
    add_device_argument(p, help=None)
    p.add_argument(
        "--label",
        metavar="L",
        help="conditional (cvae) runs: draw class L only, or 'all' for a grid with one row "
        "per class of N images each",
    )
    p.add_argument(
        "--temperature",
        type=non_negative_float,
        metavar="T",
        help="sequence runs: sample each token from softmax(logits / T) (default 1, the "
        "model's own distribution; 0: greedy)",
    )
    p.add_argument(
        "--top-k",
        type=non_negative_int,
        metavar="K",
        help="sequence runs: sample among the K most likely tokens only (default 0: all)",
    )
    p.set_defaults(run_command=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from vaekit.apps.explore import is_table_model, save_samples
    from vaekit.core.errors import ConfigError
    from vaekit.data import load_data
    from vaekit.models.loading import open_run

    run = open_run(args.run, device=args.device)
    if run.config.data.kind == "sequence":
        return sample_sequences(run, args)
    if args.temperature is not None or args.top_k is not None:
        raise ConfigError("--temperature and --top-k apply to sequence runs only")
    model = run.model
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if args.label is not None:
        return sample_by_label(model, args, generator)
    output = args.output or args.run / f"samples-{args.n}.png"
    check_output(output, args.run)
    table = is_table_model(model)  # a table's samples are compared with its test rows
    test = load_data(run.config.data).test if table else None
    save_samples(model, output, args.n, args.seed, test, run.config.data.columns)
    print(f"wrote {output}")
    return 0


def sample_sequences(run, args: argparse.Namespace) -> int:
    """`sample` for a sequence run: n strings, one per line, drawn at --temperature."""
    from vaekit.core.errors import ConfigError
    from vaekit.core.files import atomic_write_text
    from vaekit.data.sequences import is_molecules, vocabulary_of
    from vaekit.evaluation.sequences import sample_strings, smiles_validity

    if args.label is not None:
        raise ConfigError(f"{args.run}: --label needs a conditional model (cvae run)")
    molecules = is_molecules(run.config.data)
    output = args.output or run.path / f"samples-{args.n}{'.smi' if molecules else '.txt'}"
    temperature = 1.0 if args.temperature is None else args.temperature
    strings = sample_strings(
        run.model,
        vocabulary_of(run.config.data),
        args.n,
        temperature=temperature,
        top_k=args.top_k or 0,
        seed=args.seed,
    )
    atomic_write_text(output, "".join(f"{s}\n" for s in strings))
    how = "greedy" if temperature == 0 else f"temperature {temperature:g}"
    print(f"{args.n} sequences sampled ({how}{f', top-{args.top_k}' if args.top_k else ''})")
    if molecules:
        try:
            validity = smiles_validity(strings)
            print(
                f"valid SMILES (RDKit): {validity['valid']:.2%} of {args.n}, "
                f"{validity['unique_valid']} distinct valid molecules"
            )
        except ConfigError as missing:  # RDKit is optional: say what it would tell
            print(f"validity not measured: {missing}")
    print(f"wrote {output}")
    return 0


def sample_by_label(model, args: argparse.Namespace, generator) -> int:
    """`sample --label L` (N images of class L) and `--label all` (one row per class)."""
    import torch

    from vaekit import plots
    from vaekit.core.errors import ConfigError

    if not getattr(model, "needs_labels", False):
        raise ConfigError(f"{args.run}: --label needs a conditional model (cvae run)")
    if args.label == "all":
        output = args.output or args.run / f"samples-by-class-{args.n}.png"
        check_output(output, args.run)
        images, _ = model.class_grid(args.n, generator)
        rows = [str(k) for k in range(model.n_classes)]
        title = f"{args.n} prior samples per class (rows: label y)"
        plots.save_image_figure(images, args.n, output, title, row_labels=rows)
    else:
        try:
            label = int(args.label)
        except ValueError:
            raise ConfigError(
                f"--label must be a class number or 'all', got {args.label!r}"
            ) from None
        output = args.output or args.run / f"samples-label{label}-{args.n}.png"
        check_output(output, args.run)
        labels = torch.full((args.n,), label, device=next(model.parameters()).device)
        plots.save_grid(model.sample(args.n, generator=generator, y=labels), output)
    print(f"wrote {output}")
    return 0


def add_reconstruct(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct test images (or sequences) with a trained run",
        description="Encode test images, decode their posterior means, and "
        "write originals above reconstructions (a table: each feature's original against "
        "its reconstructed value); prints the reconstruction error. A sequence run writes "
        "'original -> greedy decoding' lines and prints the exact-match rate of greedy "
        "decoding over the whole test split.",
    )
    add_run_argument(p)
    p.add_argument(
        "-n", type=image_count, default=32, help="images (sequences) written (default 32)"
    )
    add_output_argument(
        p,
        "PNG file (default RUN/reconstructions-N.png, a table's "
        "RUN/feature_reconstructions-N.png: beside training's own picture); sequence runs: "
        "a text file (RUN/reconstructions-N.txt)",
    )
    add_device_argument(p, help=None)
    p.set_defaults(run_command=cmd_reconstruct)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from vaekit.apps.explore import is_table_model, save_reconstructions
    from vaekit.data import load_data
    from vaekit.evaluation.metrics import reconstruction_mse
    from vaekit.models.loading import open_run

    run = open_run(args.run, device=args.device)
    if run.config.data.kind == "sequence":
        return reconstruct_sequences(run, args)
    model = run.model
    table = is_table_model(model)
    test = load_data(run.config.data).test
    name = "feature_reconstructions" if table else "reconstructions"
    output = args.output or args.run / f"{name}-{args.n}.png"
    check_output(output, args.run)
    save_reconstructions(model, test, output, args.n, run.config.data.columns)
    mse = reconstruction_mse(model, test)
    if table:
        print(
            f"reconstruction MSE {mse:.5f} per feature, in the data's units ({len(test)} test rows)"
        )
    else:
        print(
            f"reconstruction MSE {mse:.5f} per pixel on [0,1] intensities ({len(test)} test images)"
        )
    print(f"wrote {output}")
    return 0


def reconstruct_sequences(run, args: argparse.Namespace) -> int:
    """`reconstruct` for a sequence run: the first n test sequences and their greedy
    decodings as lines, and the exact-match rate over the whole test split."""
    from vaekit.core.files import atomic_write_text
    from vaekit.data import load_data
    from vaekit.data.sequences import vocabulary_of
    from vaekit.evaluation.sequences import exact_match_rate, reconstruction_pairs, sequence_lines

    test = load_data(run.config.data).test
    output = args.output or run.path / f"reconstructions-{args.n}.txt"
    pairs, _ = reconstruction_pairs(run.model, test.head(args.n), vocabulary_of(run.config.data))
    rate = exact_match_rate(run.model, test)
    summary = (
        f"exact match of greedy decoding: {rate['exact_match']:.2%} of "
        f"{rate['n_examples']} test sequences"
    )
    lines = "".join(f"{line}\n" for line in sequence_lines(pairs))
    atomic_write_text(output, f"# {summary} (= exact, x differs)\n{lines}")
    print(summary)
    print(f"wrote {output}")
    return 0


def add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="summarise a run folder",
        description="Print a run's configuration, size, progress and final metrics.",
    )
    add_run_argument(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run_command=cmd_info)


def run_summary(path: Path) -> dict[str, Any]:
    from vaekit.models.loading import open_run
    from vaekit.training.fit import final_row

    run = open_run(path)
    config, model = run.config, run.model
    metrics = run.folder.read_metrics()
    arch = "gru" if config.model.name == "seqvae" else config.model.arch  # seqvae: recurrent
    return {
        "run": str(path),
        "preset": config.preset,
        "dataset": config.data.name,
        "model": f"{config.model.name} ({arch} {config.model.hidden}, z={config.model.latent_dim})",
        "latent_dim": model.latent_dim,
        "likelihood": config.model.likelihood,
        "kind": config.data.kind or ("table" if len(model.shape) != 3 else "image"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_done": metrics[-1]["epoch"] if metrics else 0,
        "epochs_planned": config.train.epochs,
        "time_budget_seconds": config.train.time_budget or None,
        "train_seconds": metrics[-1].get("train_seconds") if metrics else None,
        "stopped": metrics[-1].get("stopped") if metrics else None,
        "final": final_row(metrics) or None,  # the kept weights' row (best validation epoch)
        "files": sorted(p.name for p in run.path.iterdir() if not p.name.startswith(".")),
    }


def cmd_info(args: argparse.Namespace) -> int:
    summary = run_summary(args.run)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for key in ("run", "preset", "dataset", "model", "likelihood"):
        print(f"{key:12} {summary[key]}")
    print(f"{'parameters':12} {summary['parameters']:,} numbers")
    print(f"{'epochs':12} {summary['epochs_done']}/{summary['epochs_planned']}")
    if summary["train_seconds"] is not None:
        budget = summary["time_budget_seconds"]
        of = f" of a {budget / 60:g}-minute budget" if budget else ""
        stopped = f" ({summary['stopped']})" if summary["stopped"] else ""
        print(f"{'training':12} {summary['train_seconds'] / 60:.1f} minutes{of}{stopped}")
    final = summary["final"]
    image = summary["kind"] == "image"
    nats = "nats/image" if image else "nats/example"
    if final and final.get("best"):
        print(
            f"{'kept':12} weights of epoch {final['epoch']} (best validation -ELBO "
            f"{final['valid_neg_elbo']:.2f} {nats})"
        )
    if final and "test_neg_elbo" not in final:  # autoencoder, PCA: no ELBO
        unit = "per pixel (reconstruction, [0,1] intensities)" if image else "per feature"
        print(f"{'test MSE':12} {final['test_mse']:.5f} {unit}")
    elif final:
        per_token = "test_nats_per_token" in final  # a sequence run
        if per_token:
            nats, density = "nats/sequence", f", {final['test_nats_per_token']:.4f} nats/token"
        else:
            density = f", {final['test_bits_per_dim']:.4f} bits/dim" if image else ""
        print(
            f"{'test -ELBO':12} {final['test_neg_elbo']:.2f} {nats} (recon "
            f"{final['test_recon']:.2f}, KL {final['test_kl']:.2f}){density}, active units "
            f"{final['active_units']}/{summary['latent_dim']} latent dims"
        )
        if "warning" in final:
            print(f"{'warning':12} {final['warning']}")
    print(f"{'files':12} {', '.join(summary['files'])}")
    return 0
