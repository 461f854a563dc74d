"""A large image folder through the memory-mapped cache (src/vaekit/data/cache.py): load
times, peak resident memory of training, and training throughput from the cache against
the same data held in memory.

    python benchmarks/large_folder.py --folder /tmp/large-folder            # 100,000 images
    python benchmarks/large_folder.py --folder /tmp/small --n 2000 --rounds 3 --steps 20

1. Generates N 64x64 RGB PNG images (smooth two-colour waves, 10 classes by frequency) in
   class sub-folders of --folder, with a pool of worker processes; an existing folder with
   the same N and seed (its `generated.json`) is kept.
2. Each measurement runs in a fresh Python process (its own peak RSS, cold Python caches;
   the operating system's page cache stays warm, as it would for a user), the cache in a
   folder of its own (--cache-dir, else beside --folder):
   - first load: the folder decoded into a new cache (`load_data`, data.cache on);
   - cached load: the same, the cache now valid;
   - in-memory load: the folder decoded into memory (data.cache off), for comparison;
   - training: `vaekit.train` for --epochs epochs from the cache (the reference MLP VAE by
     default, --model color for the colour preset's conv VAE), with its evaluation and
     pictures; peak RSS (ru_maxrss), and the resident memory by kind at the end (RssAnon:
     the process's own; RssFile: pages of the memory-mapped cache, which the kernel may
     drop under memory pressure);
   - throughput: training steps of one model configuration from the memory-mapped cache
     (A) and from a copy of the same examples in memory (B), in alternating rounds of
     --steps steps (A B, B A, ...); the figure is the median of the per-round ratios A / B.
3. Writes the figures as JSON (--out, default benchmarks/results/large_folder/
   large_folder.json) and prints them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import vaekit
from train_throughput import vaekit_contender  # sibling module: the same timed steps
from vaekit.data import Dataset

SIDE, CLASSES = 64, 10
RESULTS = Path(__file__).parent / "results" / "large_folder" / "large_folder.json"


# --- the images -----------------------------------------------------------------------------
def make_image(index: int, seed: int) -> np.ndarray:
    """A 64x64 RGB image: a wave between two random colours, its frequency set by the class
    (index % CLASSES), its direction and phase random."""
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    angle, phase = rng.uniform(0, 2 * np.pi, 2)
    frequency = 1 + index % CLASSES
    wave = np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    t = (0.5 + 0.5 * wave)[..., None]
    low, high = rng.uniform(0, 255, (2, 3))
    return (low * (1 - t) + high * t).astype(np.uint8)


def write_images(job: tuple[str, int, int, int]) -> int:
    folder, start, stop, seed = job
    for index in range(start, stop):
        path = Path(folder) / f"class{index % CLASSES}" / f"{index:06d}.png"
        Image.fromarray(make_image(index, seed)).save(path, compress_level=1)
    return stop - start


def generate(folder: Path, n: int, seed: int, workers: int) -> float:
    """Write the N images (unless `folder` already holds them); seconds taken."""
    marker = folder / "generated.json"
    wanted = {"n": n, "seed": seed, "side": SIDE, "classes": CLASSES}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return 0.0
    if folder.exists():
        shutil.rmtree(folder)
    for k in range(CLASSES):
        (folder / f"class{k}").mkdir(parents=True)
    started = time.perf_counter()
    step = 1000
    jobs = [(str(folder), a, min(a + step, n), seed) for a in range(0, n, step)]
    with multiprocessing.Pool(workers) as pool:
        done = 0
        for count in pool.imap_unordered(write_images, jobs):
            done += count
            print(f"\rgenerating: {done:,}/{n:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    marker.with_name(".generated.json").write_text(json.dumps(wanted))  # hidden: no image
    os.replace(marker.with_name(".generated.json"), marker)
    return time.perf_counter() - started


# --- the measurements, each in a child process ----------------------------------------------
def memory_now() -> dict[str, float]:
    """Peak resident memory of this process and of its finished children (MiB), and the
    resident memory now by kind (/proc/self/status, Linux)."""
    kib = 1 if platform.system() == "Linux" else 1 / 1024  # ru_maxrss: KiB on Linux, B on macOS
    figures = {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 1024,
        "children_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        * kib
        / 1024,
    }
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                figures[f"{key}_now_mib"] = int(value.split()[0]) / 1024
    return figures


def data_config(folder: str, cache: str) -> vaekit.DataConfig:
    return vaekit.DataConfig(name="folder", path=str(folder), cache=cache)


def child_load(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    data = vaekit.load_data(data_config(args.folder, args.cache))
    seconds = time.perf_counter() - started
    shape = [len(data.train) + len(data.test), *data.shape]
    return {"seconds": seconds, "examples": shape, **memory_now()}


def run_config(args: argparse.Namespace, cache: str) -> vaekit.RunConfig:
    config = vaekit.preset("color") if args.model == "color" else vaekit.preset("reference")
    config.data = data_config(args.folder, cache)
    config.train.epochs, config.train.seed, config.train.device = args.epochs, 0, "cpu"
    return config


def child_train(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    run = vaekit.train(run_config(args, "on"), Path(args.work) / "run", progress=False)
    seconds = time.perf_counter() - started
    final = {k: run.final[k] for k in ("test_neg_elbo", "test_bits_per_dim") if k in run.final}
    return {"seconds": seconds, "epochs": args.epochs, "final": final, **memory_now()}


def child_throughput(args: argparse.Namespace) -> dict:
    config = run_config(args, "on")
    cached = vaekit.load_data(config.data)
    memory = vaekit.load_data(config.data)
    memory.train = Dataset(cached.train.storage.clone(), cached.train.y, "in memory", "image")
    contenders = {
        "cache": vaekit_contender(config, cached),
        "memory": vaekit_contender(config, memory),
    }
    rounds = []
    for r in range(args.rounds):
        order = ("cache", "memory") if r % 2 == 0 else ("memory", "cache")
        speed = {name: contenders[name](args.steps) for name in order}
        rounds.append(speed)
        print(f"round {r}: " + ", ".join(f"{k} {v:.0f} images/s" for k, v in speed.items()),
              file=sys.stderr, flush=True)  # fmt: skip
    ratios = [row["cache"] / row["memory"] for row in rounds]
    return {
        "steps_per_round": args.steps,
        "batch_size": config.train.batch_size,
        "rounds": rounds,
        "median_cache_over_memory": statistics.median(ratios),
        "cache_images_per_s": statistics.median(row["cache"] for row in rounds),
        "memory_images_per_s": statistics.median(row["memory"] for row in rounds),
    }


CHILDREN = {"load": child_load, "train": child_train, "throughput": child_throughput}


def in_child(what: str, args: argparse.Namespace, env: dict, **options) -> dict:
    """Run measurement `what` in a fresh Python process; its JSON result."""
    command = [sys.executable, __file__, "--child", what, "--folder", str(args.folder)]
    command += ["--work", str(args.work), "--model", args.model, "--epochs", str(args.epochs)]
    command += ["--rounds", str(args.rounds), "--steps", str(args.steps)]
    command += [f"--{k}={v}" for k, v in options.items()]
    print(f"{what} {options or ''}...", file=sys.stderr, flush=True)
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, required=True, help="where the images are (made)")
    p.add_argument("--n", type=int, default=100_000, help="images (100,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="generation")
    p.add_argument("--cache-dir", type=Path, help="VAEKIT_CACHE (default: beside --folder)")
    p.add_argument("--model", choices=["reference", "color"], default="reference")
    p.add_argument("--epochs", type=int, default=1, help="of the training measurement")
    p.add_argument("--rounds", type=int, default=10, help="throughput rounds")
    p.add_argument("--steps", type=int, default=50, help="training steps per round")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--cache", default="on", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return
    args.folder = args.folder.resolve()
    generated = generate(args.folder, args.n, args.seed, args.workers)
    cache_dir = (
        args.cache_dir or args.folder.with_name(args.folder.name + "-vaekit-cache")
    ).resolve()
    shutil.rmtree(cache_dir, ignore_errors=True)  # the first load builds the cache
    args.work = cache_dir / "work"
    env = os.environ | {
        "VAEKIT_CACHE": str(cache_dir),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
    }
    env = {k: v for k, v in env.items() if v}
    results = {
        "images": args.n,
        "image_shape": [3, SIDE, SIDE],
        "decoded_bytes": args.n * 3 * SIDE * SIDE,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "generation_seconds": generated or None,
        "first_load": in_child("load", args, env, cache="on"),
        "cached_load": in_child("load", args, env, cache="on"),
        "in_memory_load": in_child("load", args, env, cache="off"),
        "training_from_cache": in_child("train", args, env),
        "throughput": in_child("throughput", args, env),
        "model": args.model,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
