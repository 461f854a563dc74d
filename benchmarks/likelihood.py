"""Test log-likelihood against training time: train a preset for a wall-clock budget, then
evaluate it with the IWAE bound (k=5000 on the full 10,000 test images by default).

Each seed is one run folder OUT/<preset>-<dataset>-s<seed>; while it trains, the weights are
saved at the curve's time points (the first epoch end past each), and afterwards the kept
weights (best validation -ELBO) get the full evaluation and each snapshot a cheaper one
(--curve-k samples on --curve-n test images drawn at random, the same ones each time).
Results go to likelihood.json in the run folder; `--summary` gathers run folders, and
result files copied out of them (benchmarks/results/likelihood/ keeps the recorded runs),
into a table and a curve PNG.

    python benchmarks/likelihood.py --preset likelihood-mlp --seeds 0 --budget 60m
    python benchmarks/likelihood.py --preset likelihood-mlp --seeds 1 --threads 1 &  # in parallel
    python benchmarks/likelihood.py --summary bench-runs/likelihood other-runs --png curve.png
    python benchmarks/likelihood.py --summary benchmarks/results/likelihood  # recorded runs
    python benchmarks/likelihood.py --preset likelihood-mlp --seeds 1 --record benchmarks/results/likelihood
    python benchmarks/likelihood.py --preset likelihood-mlp --dataset binarized-mnist --seeds 0
    python benchmarks/likelihood.py --preset likelihood-mlp --seeds 0 --curve-only  # redo curve
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import common
import vaekit
from vaekit.cli.args import duration
from vaekit.config.runs import RunFolder
from vaekit.core.device import pick_device, resolve_precision
from vaekit.core.files import atomic_write_text, load_tensors, save_tensors
from vaekit.data import load_data
from vaekit.data.binarize import evaluation_set
from vaekit.evaluation.metrics import iwae_bounds
from vaekit.models.loading import load

RESULT_FILE = "likelihood.json"


def snapshot_saver(folder: Path, minutes: list[float]):
    """A training callback saving the weights at the first metrics row past each time."""
    pending = [m for m in sorted(minutes) if not (folder / f"{m:g}m.safetensors").exists()]

    def save(trainer, row) -> None:
        while pending and row["train_seconds"] >= pending[0] * 60:
            folder.mkdir(parents=True, exist_ok=True)
            meta = {"kind": "weights", "train_seconds": row["train_seconds"], "epoch": row["epoch"]}
            save_tensors(
                folder / f"{pending.pop(0):g}m.safetensors", trainer.model.state_dict(), meta
            )

    return save


def configure(args: argparse.Namespace, seed: int) -> vaekit.RunConfig:
    config = vaekit.preset(args.preset)
    config.train.seed = seed
    config.train.time_budget = args.budget
    config.train.num_threads = args.threads
    if args.dataset == "binarized-mnist":  # static binarisation, its own 10k validation split
        config.data.name, config.data.binarize, config.data.valid_size = args.dataset, "none", 0
    for assignment in args.set:
        key, value = assignment.split("=", 1)
        section, field = key.split(".")
        setattr(getattr(config, section), field, json.loads(value))
    config.validate()
    config.name = f"{args.preset}{args.tag}-{config.data.name}-s{seed}"
    return config


def evaluate_weights(model, test, k: int, limit: int | None, seed: int = 0) -> dict:
    rows = iwae_bounds(model, test.spread(limit), (k,), seed=seed, progress=True)
    return rows[-1]


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    config = configure(args, seed)
    path = args.out / config.name
    if args.curve_only and not (path / RESULT_FILE).exists():
        raise SystemExit(f"{path}: no {RESULT_FILE} (a finished run) to update")
    saver = snapshot_saver(path / "snapshots", args.curve)
    common.train_once(config, path, progress=not args.quiet, callbacks=[saver])
    if args.threads:
        torch.set_num_threads(args.threads)
    config = RunFolder(path).load_config()
    splits = load_data(config.data)
    test = evaluation_set(splits.test, config.data.binarize)
    history = RunFolder(path).read_metrics()
    kept = [row for row in history if row.get("best")] or history
    model = load(path)
    if args.curve_only:  # the final figure stands; only the snapshots are evaluated again
        result = json.loads((path / RESULT_FILE).read_text())
        result["curve"] = curve_points(model, path, test, args)
        write_result(result, path, args.record)
        return result
    started = time.perf_counter()
    final = evaluate_weights(model, test, args.k, None)
    final["eval_seconds"] = time.perf_counter() - started
    curve = curve_points(model, path, test, args)
    result = {
        "preset": args.preset + args.tag,
        "changes": args.set,
        "dataset": config.data.name,
        "binarize": config.data.binarize,
        "seed": seed,
        "train_seconds": history[-1]["train_seconds"],
        "epochs": history[-1]["epoch"],
        "best_epoch": kept[-1]["epoch"],
        "valid_neg_elbo": kept[-1].get("valid_neg_elbo"),
        "test_neg_elbo": kept[-1]["test_neg_elbo"],
        "final": final,
        "curve": curve,
        "elbo_curve": [
            {"minutes": r["train_seconds"] / 60, "test_neg_elbo": r["test_neg_elbo"]}
            for r in history
        ],
        "threads": args.threads or torch.get_num_threads(),
        "precision": resolve_precision(config.train.precision, pick_device(config.train.device)),
        "cpu": cpu_description(),
    }
    write_result(result, path, args.record)
    print(
        f"{config.name}: test NLL {final['nll']:.2f} +- {final['stderr']:.2f} nats (IWAE k={args.k}, "
        f"{final['n_examples']} images, {final['eval_seconds']:.0f} s); -ELBO {result['test_neg_elbo']:.2f}; "
        f"{result['epochs']} epochs in {result['train_seconds'] / 60:.1f} min",
        flush=True,
    )
    return result


def cpu_description() -> str:
    """The CPU's model name and its vector extensions that matter here (speeds differ)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), ""
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
    return ", ".join([model or platform.processor()] + [f for f in wanted if f in flags])


def write_result(result: dict, path: Path, record: Path | None) -> None:
    """likelihood.json in the run folder, and a copy named after the run in `record`."""
    text = json.dumps(result, indent=2) + "\n"
    atomic_write_text(path / RESULT_FILE, text)
    if record is not None:
        record.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record / f"{path.name}.json", text)


def curve_points(model, path: Path, test, args: argparse.Namespace) -> list[dict]:
    """The cheaper evaluation of each snapshot saved during training (the model is reused)."""
    curve = []
    for snapshot in sorted((path / "snapshots").glob("*.safetensors"), key=_minutes):
        tensors, meta = load_tensors(snapshot)
        model.load_state_dict(tensors)
        row = evaluate_weights(model, test, args.curve_k, args.curve_n)
        curve.append({"minutes": meta["train_seconds"] / 60, "epoch": meta["epoch"], **row})
        print(f"  {snapshot.stem}: NLL {row['nll']:.2f} (k={args.curve_k}, {args.curve_n} images)")
    return curve


def _minutes(path: Path) -> float:
    return float(path.stem.rstrip("m"))


def result_files(path: Path) -> list[Path]:
    """The results under `path`: a result file itself, the run folders in a folder (their
    likelihood.json), or the *.json files in a folder of recorded results."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SystemExit(f"{path}: no such file or folder")
    return sorted(path.glob(f"*/{RESULT_FILE}")) or sorted(path.glob("*.json"))


def summary(paths: list[Path], png: Path | None) -> None:
    """A table row per (preset, data, threads, k) of the finished runs under `paths`."""
    results = [json.loads(p.read_text()) for path in paths for p in result_files(path)]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        key = (r["preset"], r["dataset"], r["threads"], r["final"]["k"])
        groups.setdefault(key, []).append(r)
    print("| preset | data | seeds | test NLL (IWAE k) | test -ELBO | training | epochs | eval |")
    print("|---|---|---|---|---|---|---|---|")
    for (preset, dataset, threads, k), rows in groups.items():
        nll = [r["final"]["nll"] for r in rows]
        elbo = [r["test_neg_elbo"] for r in rows]
        spread = f" ± {statistics.stdev(nll):.2f}" if len(nll) > 1 else ""
        each = ", ".join(f"{v:.2f}" for v in nll)
        print(
            f"| {preset} | {dataset} ({rows[0]['binarize']}) | {len(rows)} | "
            f"**{statistics.mean(nll):.2f}**{spread} ({each}; k={k}) | {statistics.mean(elbo):.2f} | "
            f"{statistics.mean(r['train_seconds'] for r in rows) / 60:.1f} min, {threads} thread(s) | "
            f"{statistics.mean(r['epochs'] for r in rows):.0f} | "
            f"{statistics.mean(r['final']['eval_seconds'] for r in rows) / 60:.1f} min |"
        )
    if png is not None and groups:
        plot_curves(groups, png)


# published test NLLs (IWAE k = 5000) drawn as dashed lines: dynamically binarised MNIST
PUBLISHED = {
    "mnist": [
        (86.76, "VAE, one stochastic layer (Burda et al. 2015, 3280 epochs)"),
        (82.90, "IWAE, two stochastic layers (Burda et al. 2015, 3280 epochs)"),
    ]
}
# this benchmark's targets within 60 minutes on 2 CPU cores, drawn as dotted lines
TARGETS = {"mnist": [(85.0, "target: one stochastic layer"), (83.5, "target: best preset")]}


def plot_curves(groups: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("tab10")
    for i, ((preset, dataset, threads, k), rows) in enumerate(groups.items()):
        for j, r in enumerate(rows):
            star_k = "" if k == 5000 else f", star k={k}"
            name = f"{preset} ({dataset}, {threads} thread{'s' * (threads > 1)}{star_k})"
            label = name if j == 0 else None
            if r["curve"]:
                ax.plot([c["minutes"] for c in r["curve"]], [c["nll"] for c in r["curve"]], "o-",
                        color=colours(i), alpha=0.7, label=label, markersize=3)  # fmt: skip
                label = None
            ax.plot(r["train_seconds"] / 60, r["final"]["nll"], "*", color=colours(i), markersize=10,
                    label=label)  # fmt: skip
    datasets = {dataset for _, dataset, _, _ in groups}
    only = datasets.pop() if len(datasets) == 1 else None  # reference lines need one dataset
    for lines, style, colour, x in (
        (PUBLISHED, "--", "grey", 0.01),
        (TARGETS, ":", "firebrick", 0.92),
    ):
        for nll, what in lines.get(only, []):
            ax.axhline(nll, color=colour, linestyle=style, linewidth=0.8)
            ax.annotate(what, (x, nll), xycoords=("axes fraction", "data"), fontsize=7,
                        color=colour, va="bottom", ha="left" if x < 0.5 else "right")  # fmt: skip
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("test NLL (nats per image)")
    ax.set_title(
        "IWAE bound: curve k=1000 on 2,000 random test images; stars k=5000 on all 10,000",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    low = min(c["nll"] for rows in groups.values() for r in rows for c in r["curve"] + [r["final"]])
    ax.set_ylim(math.floor(low) - 0.5, math.floor(low) + 8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="likelihood-mlp")
    parser.add_argument("--dataset", choices=["mnist", "binarized-mnist"], default="mnist")
    parser.add_argument("--seeds", default="0", help="comma-separated")
    parser.add_argument("--budget", type=duration, default=3600.0, help="training time (60m)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--k", type=int, default=5000, help="importance samples, final NLL")
    parser.add_argument("--curve", default="5,10,20,30,45", help="snapshot times in minutes")
    parser.add_argument("--curve-k", type=int, default=1000)
    parser.add_argument(
        "--curve-n",
        type=int,
        default=2000,
        help="test images per curve point (a fixed random sample)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-runs/likelihood"))
    parser.add_argument(
        "--curve-only",
        action="store_true",
        help="for finished runs: evaluate the snapshots again, keep the final figure",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="tabulate finished runs: run folders' parents, result files or folders of them",
    )
    parser.add_argument("--png", type=Path, help="with --summary: the NLL-time curve")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=JSON",
        help="override a preset value, e.g. train.iw_k=5 or model.hidden=[1024,512]",
    )
    parser.add_argument(
        "--record",
        type=Path,
        metavar="FOLDER",
        help="also copy each result file here, e.g. benchmarks/results/likelihood",
    )
    parser.add_argument("--tag", default="", help="suffix of the run folders' names")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary, args.png)
        return
    args.curve = [float(m) for m in args.curve.split(",") if m and float(m) * 60 < args.budget]
    for seed in (int(s) for s in args.seeds.split(",")):
        run_seed(args, seed)


if __name__ == "__main__":
    sys.exit(main())
