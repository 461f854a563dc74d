"""Score generated molecules with MOSES's own metrics (`moses.metrics.get_all_metrics`).

Runs in the MOSES environment that `benchmarks/moses_env.sh` builds, never in vaekit's
(it does not import vaekit):

    /work/moses-venv/bin/python benchmarks/moses_metrics.py SAMPLES.smi --out metrics.json

SAMPLES is one SMILES a line (`.smi`/`.txt`; an empty line is an invalid sample, anything
after the first space is a name and ignored) or a CSV with a SMILES column (MOSES's own
sample format). MOSES recommends 30,000 samples.

Reference statistics. By default the metrics use what MOSES ships and what its published
table used: its test set (176,074 molecules) and scaffold test set (176,226), with their
statistics precomputed inside the package (`moses/dataset/data/test_stats.npz`,
`test_scaffolds_stats.npz`: ChemNet mean and covariance for FCD, Morgan fingerprints for
SNN, fragment and scaffold counts, property values), so nothing is precomputed here.
Novelty is against MOSES's training set (1,584,663 molecules).
`--test N` instead uses a seeded random subset of N molecules of each test set and
computes their statistics with `compute_intermediate_statistics` (the current RDKit and
ChemNet); they are cached in `--cache-dir` so a second call is fast. N at least the size
of the test set recomputes the full statistics.

The JSON written by --out holds the metric row, the command, date, CPU, library versions,
the sample counts, how many test molecules the reference statistics use, and the time taken.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import time
import warnings
from pathlib import Path

from machine import where_measured  # benchmarks/machine.py, a sibling module

# What MOSES's README (the current release, whose split molsets 0.3.1 ships) publishes for
# its VAE, mean of 3 runs, 30,000 samples each. Printed beside the measured row.
PUBLISHED_VAE = {
    "valid": 0.9767,
    "unique@1000": 1.0,
    "unique@10000": 0.9984,
    "FCD/Test": 0.099,
    "SNN/Test": 0.6257,
    "Frag/Test": 0.9994,
    "Scaf/Test": 0.9386,
    "FCD/TestSF": 0.567,
    "SNN/TestSF": 0.5783,
    "Frag/TestSF": 0.9984,
    "Scaf/TestSF": 0.0588,
    "IntDiv": 0.8558,
    "IntDiv2": 0.8498,
    "Filters": 0.997,
    "Novelty": 0.6949,
}

# Higher is better for these; lower for FCD and the property (Wasserstein) distances.
HIGHER_IS_BETTER = ("valid", "unique", "SNN", "Frag", "Scaf", "IntDiv", "Filters", "Novelty")


def read_samples(path: Path, column: str) -> list[str]:
    """The generated strings, in file order; an empty line stays as an (invalid) empty string."""
    if path.suffix.lower() == ".csv":
        import pandas as pd

        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        if column not in frame.columns:
            sys.exit(f"error: {path} has no column {column!r} (columns: {list(frame.columns)})")
        return frame[column].tolist()
    lines = path.read_text().splitlines()
    return [line.split()[0] if line.strip() else "" for line in lines]


def reference_statistics(n_test: int, seed: int, n_jobs: int, cache_dir: Path) -> dict:
    """Test subsets of n_test molecules and their statistics, computed once and cached."""
    import numpy as np
    import rdkit
    from moses.dataset import get_dataset
    from moses.metrics import compute_intermediate_statistics

    sets = {}
    for split in ("test", "test_scaffolds"):
        smiles = list(get_dataset(split))
        if n_test < len(smiles):
            order = np.random.default_rng(seed).permutation(len(smiles))[:n_test]
            smiles = [smiles[i] for i in sorted(order)]
        sets[split] = smiles
    n_used = {split: len(smiles) for split, smiles in sets.items()}
    key = f"ptest_n{n_used['test']}_seed{seed}_rdkit{rdkit.__version__}.pkl"
    cache = cache_dir / key
    if cache.exists():
        started = time.perf_counter()
        with cache.open("rb") as handle:
            stats = pickle.load(handle)
        print(f"reference statistics: loaded {cache} in {time.perf_counter() - started:.1f} s")
        return {"sets": sets, "stats": stats, "cache": str(cache), "precompute_s": None}
    started = time.perf_counter()
    stats = {
        split: compute_intermediate_statistics(smiles, n_jobs=n_jobs)
        for split, smiles in sets.items()
    }
    seconds = time.perf_counter() - started
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        pickle.dump(stats, handle)
    tmp.replace(cache)
    print(f"reference statistics: computed for {n_used} in {seconds:.1f} s, cached at {cache}")
    return {"sets": sets, "stats": stats, "cache": str(cache), "precompute_s": seconds}


def patch_cosine_overflow() -> str:
    """Make MOSES's Frag and Scaf cosine similarity compute in float64, as it did in 2020.

    moses.metrics.cos_similarity passes integer count vectors to scipy's `cosine`. The
    scipy MOSES was written against averaged them in float64 (`np.average(u * v)`); the
    scipy installed here (1.17) takes int64 dot products and multiplies them (`uu * vv`),
    which overflows once the counts are large: for 30,000 samples against the 176,074-molecule test set,
    Frag/Test came out as exactly 1.0 (clipped garbage) instead of 0.99989. Casting the
    vectors to float64 before scipy's `cosine` restores MOSES's arithmetic; nothing else
    changes.
    """
    import moses.metrics.metrics as moses_metrics
    import numpy as np
    from scipy.spatial.distance import cosine

    def cos_distance(u, v):
        return cosine(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))

    moses_metrics.cos_distance = cos_distance
    return (
        "moses.metrics.metrics.cos_distance casts counts to float64 (int64 overflow in new scipy)"
    )


def to_jsonable(value):
    """numpy scalars to floats; NaN to None (JSON has no NaN)."""
    value = float(value)
    return None if value != value else value


def print_table(metrics: dict, published: dict) -> None:
    width = max(len(name) for name in metrics) + 2
    print(f"{'metric':<{width}}{'measured':>10}   {'MOSES VAE (published)':>22}")
    for name, value in metrics.items():
        shown = "n/a" if value is None else f"{value:.4f}"
        ref = published.get(name)
        arrow = "↑" if name.startswith(HIGHER_IS_BETTER) else "↓"
        ref_shown = "" if ref is None else f"{ref:.4f}"
        print(f"{name + ' ' + arrow:<{width}}{shown:>10}   {ref_shown:>22}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "samples", type=Path, help="generated SMILES: .smi/.txt (one a line) or .csv"
    )
    parser.add_argument("--column", default="SMILES", help="column of a .csv file (default SMILES)")
    parser.add_argument(
        "--test",
        type=int,
        metavar="N",
        help="use N random test (and scaffold test) molecules and compute their statistics "
        "(cached) instead of MOSES's shipped statistics of the full test sets",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --test subset (default 0)")
    parser.add_argument("--out", type=Path, help="write the metric row and its context as JSON")
    parser.add_argument(
        "--n-jobs", type=int, default=2, help="worker processes for MOSES (default 2)"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device for FCD and the similarity matrices"
    )
    parser.add_argument(
        "--unique-k",
        type=int,
        nargs="+",
        default=[1000, 10000],
        help="k of unique@k (default 1000 10000)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vaekit-moses",
        help="where --test statistics are cached (default ~/.cache/vaekit-moses)",
    )
    args = parser.parse_args(argv)
    if not args.samples.is_file():
        print(f"error: no such file: {args.samples}", file=sys.stderr)
        return 2

    started_all = time.perf_counter()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import fcd_torch  # noqa: F401  (fails early when the environment is not MOSES's)
    import moses
    import numpy as np
    import rdkit
    import torch
    from moses.dataset import get_dataset
    from moses.metrics import fraction_valid, get_all_metrics
    from moses.utils import disable_rdkit_log

    patches = [
        "rdkit.six shim (moses_env.sh) for moses/metrics/SA_Score/sascorer.py",
        patch_cosine_overflow(),
    ]

    gen = read_samples(args.samples, args.column)
    if not gen:
        print(f"error: {args.samples} holds no samples", file=sys.stderr)
        return 2

    started = time.perf_counter()
    train = list(get_dataset("train"))
    load_s = time.perf_counter() - started
    kwargs = {"k": args.unique_k, "n_jobs": args.n_jobs, "device": args.device, "train": train}
    if args.test is None:
        n_test = len(get_dataset("test"))
        n_test_sf = len(get_dataset("test_scaffolds"))
        reference = {
            "source": "MOSES's precomputed statistics shipped in molsets "
            "(moses/dataset/data/test_stats.npz, test_scaffolds_stats.npz)",
            "test_molecules": n_test,
            "test_scaffolds_molecules": n_test_sf,
        }
    else:
        ref = reference_statistics(args.test, args.seed, args.n_jobs, args.cache_dir)
        kwargs.update(
            test=ref["sets"]["test"],
            test_scaffolds=ref["sets"]["test_scaffolds"],
            ptest=ref["stats"]["test"],
            ptest_scaffolds=ref["stats"]["test_scaffolds"],
        )
        reference = {
            "source": f"statistics computed here (rdkit {rdkit.__version__}) for a random subset "
            f"(seed {args.seed}) of MOSES's test sets",
            "test_molecules": len(ref["sets"]["test"]),
            "test_scaffolds_molecules": len(ref["sets"]["test_scaffolds"]),
            "cache": ref["cache"],
            "precompute_s": ref["precompute_s"],
        }

    caught: list[str] = []
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", UserWarning)
        disable_rdkit_log()  # unparsable samples are expected; get_all_metrics does the same
        valid = float(fraction_valid(gen, n_jobs=1))
        if valid == 0.0:
            # get_all_metrics divides by the number of valid molecules: report validity alone.
            metrics = {"valid": 0.0}
            caught.append("no valid molecule: only validity is computed")
        else:
            metrics = get_all_metrics(gen, **kwargs)
        caught += sorted({str(r.message) for r in records if "uint8" not in str(r.message)})
    metrics_s = time.perf_counter() - started
    metrics = {name: to_jsonable(value) for name, value in metrics.items()}

    n_valid = round(valid * len(gen))
    row = {
        **where_measured(),
        "torch_threads": torch.get_num_threads(),
        "n_jobs": args.n_jobs,
        "device": args.device,
        "versions": {
            "python": platform.python_version(),
            "molsets": moses.__version__,
            "rdkit": rdkit.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "samples_file": str(args.samples),
        "samples": len(gen),
        "valid_samples": n_valid,
        "reference": reference,
        "train_molecules_for_novelty": len(train),
        "metrics": metrics,
        "patches": patches,
        "warnings": caught,
        "seconds": {
            "load_train": round(load_s, 1),
            "metrics": round(metrics_s, 1),
            "total": round(time.perf_counter() - started_all, 1),
        },
    }
    print(
        f"{len(gen)} samples ({n_valid} valid) from {args.samples}; reference: "
        f"{reference['test_molecules']} test / {reference['test_scaffolds_molecules']} scaffold-test "
        f"molecules; novelty against {len(train)} training molecules"
    )
    print_table(metrics, PUBLISHED_VAE)
    for message in caught:
        print(f"warning: {message}")
    print(f"metrics took {metrics_s:.1f} s ({row['seconds']['total']:.1f} s in all)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
