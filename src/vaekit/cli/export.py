"""`vaekit export`: a run's encoder and decoder as ONNX or TorchScript graphs."""

from __future__ import annotations

import argparse

from vaekit.cli.args import add_output_argument, add_run_argument, seed, wrote


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="the run's encoder and decoder as ONNX or TorchScript graphs, checked against PyTorch",
        description="Write DIR/encoder (x -> z_mean, z_log_var), DIR/decoder (z -> x_mean, "
        "and logits for a Bernoulli likelihood; hierarchical VAEs also DIR/prior, noise -> z) "
        "with a dynamic batch dimension, and DIR/export.json (inputs, outputs, "
        "preprocessing, latent_dim, how to sample). Sampling is: draw z ~ N(0, I) with "
        "numpy and run the decoder. Each graph is compared with the PyTorch model on the "
        "same inputs; a max abs difference above 1e-4 fails and writes nothing. ONNX needs "
        "the export extra: pip install 'vaekit[export]'.",
    )
    add_run_argument(p)
    p.add_argument(
        "--format",
        choices=["onnx", "torchscript"],
        default="onnx",
        help="onnx (.onnx files, run with onnxruntime) or torchscript (.pt, torch.jit.load) "
        "(default onnx)",
    )
    add_output_argument(p, "output folder (default RUN/export)", metavar="DIR")
    p.add_argument("--seed", type=seed, default=0, help="seed of the parity check's inputs (0)")
    p.set_defaults(run_command=cmd_export, sequence_runs=False)  # images and tables only


def cmd_export(args: argparse.Namespace) -> int:
    from vaekit.apps.export import PARITY_TOLERANCE, export_run

    report = export_run(args.run, args.format, args.output, seed=args.seed)
    print(
        f"exported {args.run} as {report['format']} (latent_dim {report['latent_dim']}); "
        f"parity with PyTorch, max abs difference (tolerance {PARITY_TOLERANCE:g}):"
    )
    for name, diff in report["parity"].items():
        print(f"  {name}: {diff:.2e}")
    return wrote(report["files"])
