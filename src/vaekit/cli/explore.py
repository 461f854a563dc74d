"""`vaekit latent`, `manifold`, `interpolate`, `traverse` and `report`: look inside a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit.cli.args import (
    add_device_argument,
    add_output_argument,
    add_run_argument,
    check_output,
    comma_ints,
    grid_side,
    positive_float,
    positive_int,
    seed,
    step_count,
    wrote,
)


def _common(p: argparse.ArgumentParser, default_name: str) -> None:
    add_run_argument(p)
    add_output_argument(p, f"PNG file (default RUN/{default_name})")
    add_device_argument(p)
    p.add_argument(
        "--label",
        type=int,
        help="conditional models (cvae, m2, m1m2): decode with this class (default: the "
        "label of test image 0)",
    )


def _output(args: argparse.Namespace, default_name: str) -> Path:
    output = args.output or args.run / default_name
    check_output(output, args.run)
    return output


def _open(args: argparse.Namespace):
    from vaekit.apps.explore import open_run

    return open_run(args.run, device=args.device, label=args.label)


# --- latent -----------------------------------------------------------------------------
def add_latent(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latent",
        help="scatter plot of test latents coloured by label",
        description="Encode test images and plot their posterior means coloured by label: "
        "2-D latents directly, larger ones through PCA or t-SNE of a random subsample.",
    )
    _common(p, "latent-METHOD.png, beside training's latent.png")
    p.add_argument(
        "--method",
        choices=["auto", "pca", "tsne"],
        default="auto",
        help="auto (default): direct for 2-D, t-SNE otherwise",
    )
    p.add_argument(
        "--n",
        type=positive_int,
        help="test images in the plot (default 5000; 2000 for t-SNE, which is slower)",
    )
    p.add_argument("--seed", type=seed, default=0, help="subsample and t-SNE seed")
    p.set_defaults(run_command=cmd_latent)


def cmd_latent(args: argparse.Namespace) -> int:
    from vaekit.apps.explore import latent_method, save_latent

    run = _open(args)
    output = _output(args, f"latent-{latent_method(run.model, args.method)}.png")
    codes = save_latent(run, output, args.method, args.n, args.seed)
    print(f"{len(codes.points)} test latents ({codes.method})")
    return wrote([output])


# --- manifold ---------------------------------------------------------------------------
def add_manifold(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "manifold",
        help="decode a grid over the latent plane",
        description="Decode a GRID x GRID lattice over the two latent dimensions with the "
        "highest KL, spaced by quantiles of the prior (N(0, 1), or the model's own: VampPrior, "
        "an autoencoder's fitted Gaussian, PCA), others at the prior's median (0 for N(0, 1)).",
    )
    _common(p, "manifold.png")
    p.add_argument("--grid", type=grid_side, default=20, help="images per side (default 20)")
    p.set_defaults(run_command=cmd_manifold, sequence_runs=False)  # images and tables only


def cmd_manifold(args: argparse.Namespace) -> int:
    from vaekit.apps.explore import save_manifold

    output = _output(args, "manifold.png")
    result = save_manifold(_open(args), output, args.grid)
    dims = ", ".join(f"z[{d}]" for d in result.dims)
    print(f"{len(result.images)} decoded points over {dims}")
    return wrote([output])


# --- interpolate ------------------------------------------------------------------------
def add_interpolate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate",
        help="decode the path between two inputs' latent codes",
        description="Encode A and B (test-set indices or image files of the model's size), "
        "decode STEPS codes on the path between their posterior means, and write a strip "
        "(A, the path, B) and an animated GIF beside it (a table: each feature along the "
        "path, no GIF). A sequence run takes two strings (SMILES or text), decodes each "
        "step greedily, prints the strings (molecules: marked valid or not by RDKit) and "
        "writes them one per line.",
    )
    _common(
        p,
        "interpolation.png; sequence runs: a text file, RUN/interpolation.smi for molecules, "
        "else RUN/interpolation.txt",
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="A",
        help="index or image; sequences: a string",
    )
    p.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="B",
        help="index or image; sequences: a string",
    )
    p.add_argument("--steps", type=step_count, default=10, help="decoded steps (default 10)")
    p.add_argument(
        "--method", choices=["lerp", "slerp"], default="lerp", help="straight or spherical path"
    )
    p.set_defaults(run_command=cmd_interpolate)


def cmd_interpolate(args: argparse.Namespace) -> int:
    from vaekit.apps.explore import save_interpolation
    from vaekit.config.runs import RunFolder

    if RunFolder(args.run).load_config().data.kind == "sequence":
        return interpolate_sequences(args)
    output = _output(args, "interpolation.png")
    run = _open(args)
    gif = None if run.is_table else output.with_suffix(".gif")  # a table's path is no film
    save_interpolation(run, output, args.source, args.target, args.steps, args.method, gif=gif)
    return wrote([output] + ([gif] if gif else []))


def interpolate_sequences(args: argparse.Namespace) -> int:
    """`interpolate` for a sequence run: the strings decoded between strings A and B."""
    from vaekit.apps.explore import (
        check_beside_training,
        interpolation_file,
        save_sequence_interpolation,
    )
    from vaekit.core.errors import ConfigError
    from vaekit.models.loading import open_run

    if args.label is not None:
        raise ConfigError(f"{args.run}: --label needs a conditional model (cvae, m2, m1m2 run)")
    run = open_run(args.run, device=args.device)
    output = args.output or interpolation_file(run.path, run.config.data)
    check_beside_training(output, args.run)
    path = save_sequence_interpolation(
        run.model, run.config.data, output, args.source, args.target, args.steps, args.method
    )
    print(
        f"{path.method} from A {path.source!r} to B {path.target!r}: {len(path.strings)} "
        "codes decoded greedily"
    )
    width = max(len(s) for s in path.strings)
    for i, (t, text) in enumerate(zip(path.t, path.strings)):
        mark = "" if path.valid is None else ("  valid" if path.valid[i] else "  invalid")
        print(f"t={t:.2f}  {text:<{width}}{mark}".rstrip())
    if path.valid is not None:
        print(f"valid SMILES (RDKit): {sum(path.valid)} of {len(path.valid)}")
    elif path.note:
        print(f"validity not marked: {path.note}")
    return wrote([output])


# --- traverse ---------------------------------------------------------------------------
def add_traverse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "traverse",
        help="vary one latent dimension at a time around an input's code",
        description="One row per latent dimension (highest KL first, at most 16 unless --dims "
        "is given): the dimension runs from -RANGE to +RANGE while the others keep the "
        "posterior mean of test image --index. A sequence run writes the greedy decodings as "
        "text (RUN/traversal.txt; molecules marked valid or not) and prints them.",
    )
    _common(p, "traversal.png; sequence runs RUN/traversal.txt")
    p.add_argument("--dims", type=_dims, metavar="D,D,...", help="dimensions to vary, e.g. 0,3,5")
    p.add_argument("--range", type=positive_float, default=3.0, help="largest |value| (default 3)")
    p.add_argument("--steps", type=step_count, default=11, help="images per row (default 11)")
    p.add_argument("--index", type=int, default=0, help="test image whose code is used")
    p.set_defaults(run_command=cmd_traverse)


def _dims(text: str) -> list[int]:
    """Latent dimensions such as "0,3,5" (0-based)."""
    return comma_ints(
        text,
        0,
        f"expected dimensions like 0,3,5, got {text!r}",
        f"dimensions must be >= 0, got {text!r}",
    )


def cmd_traverse(args: argparse.Namespace) -> int:
    from vaekit.apps.explore import save_traversal
    from vaekit.config.runs import RunFolder

    if RunFolder(args.run).load_config().data.kind == "sequence":
        return traverse_sequences(args)
    output = _output(args, "traversal.png")
    dims = save_traversal(_open(args), output, args.index, args.dims, args.range, args.steps)
    print(f"traversed {len(dims)} dims ({', '.join(map(str, dims))})")
    return wrote([output])


def traverse_sequences(args: argparse.Namespace) -> int:
    """`traverse` for a sequence run: the strings decoded along each dimension, as text."""
    from vaekit.apps.explore import check_beside_training, save_sequence_traversal

    output = args.output or args.run / "traversal.txt"
    check_beside_training(output, args.run)
    rows = save_sequence_traversal(
        _open(args), output, args.index, args.dims, args.range, args.steps
    )
    for label, values, strings, valid in rows:
        print(label)
        width = max(len(s) for s in strings)
        for i, (value, text) in enumerate(zip(values, strings)):
            mark = "" if valid is None else ("  valid" if valid[i] else "  invalid")
            print(f"  {value:+.2f}  {text:<{width}}{mark}".rstrip())
    print(f"traversed {len(rows)} dims")
    return wrote([output])


# --- report -----------------------------------------------------------------------------
def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run",
        description="Write RUN/report.html: config, metrics, evaluation (if evaluated), "
        "loss curves, samples, reconstructions, latent plot, manifold, interpolation, "
        "traversal and KL per dimension, with every image inlined (opens offline).",
    )
    add_run_argument(p)
    add_output_argument(p, "HTML file (default RUN/report.html)")
    add_device_argument(p, help=None)
    p.set_defaults(run_command=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from vaekit.apps.report import write_report

    return wrote([write_report(args.run, args.output, device=args.device)])


COMMANDS = [add_latent, add_manifold, add_interpolate, add_traverse, add_report]
