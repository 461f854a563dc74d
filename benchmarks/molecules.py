"""The MOSES molecule benchmark of issue 33: vaekit's sequence VAE trained for a wall-clock
budget, sampled, and scored with MOSES's own metrics; its curve; and its training speed
against MOSES's own VAE, interleaved in one process.

    PY=.venv/bin/python                          # vaekit's environment (molsets --no-deps in it)
    MOSES_PY=/work/moses-venv/bin/python         # benchmarks/moses_env.sh, plus vaekit (below)

    $PY benchmarks/molecules.py train --minutes 60 --out runs/mol60          # + vaekit train flags
    $PY benchmarks/molecules.py curve runs/mol60        # every snapshot and the final weights:
                                                        # 30,000 samples each, valid, FCD, ...
    $PY benchmarks/molecules.py score runs/mol60/curve/final-n30000-s0.smi \
        --out runs/mol60/metrics.json                   # the whole MOSES row of the final model
    $PY benchmarks/molecules.py sample --run runs/mol60 --snapshot 30 -n 30000 -o s30.smi
    $MOSES_PY benchmarks/molecules.py throughput --seconds 60 --rounds 5 --out tp.json

Subcommands:

`train`: trains vaekit's seqvae on `--dataset moses` through `vaekit.train` with
`train.time_budget` = --minutes (training time: evaluation is not counted) and writes the
run folder --out, plus `molecules.json` (settings, sequences seen, sequences/s) and
`snapshots/<M>m.safetensors`, the weights after every --curve-every minutes of training
(a `Callback`; saving them is not counted as training). Any `vaekit train` flag may be
added; the harness sets these unless a flag (or --config/--preset) names them:

  --hidden 128,256,256 --latent-dim 64 --embedding-dim 32
      A bidirectional GRU encoder of 128 per direction, a 2-layer GRU decoder of 256,
      0.87 M parameters. On CPUs the GRUs' backward passes are the cost, so the size is the
      compute budget's choice. Probed on one shared core (2026-12-06, 15 s each, noisy):
      this size trains at about 370 sequences/s at batch 128; 1-layer 256 (0.46 M) at 680/s;
      1-layer 384 (0.75 M) at 435/s; MOSES's size (256,512,512,512, z 128: 5.0 M) at 72/s
      at batch 512. A MOSES SMILES is 36.9 tokens with its <eos>, so in 60 minutes at one
      core this size sees about 1.3 M sequences (0.84 epochs, 49 M tokens, 56 per
      parameter), MOSES's size about 0.26 M (9.6 M tokens, 2 per parameter: far too big for
      the budget). The compute-optimal rule of thumb of about 20 tokens per parameter
      (C = 6 N D) puts the best size for this compute near 1.4 M parameters; of the sizes
      near it, a second decoder layer is what SMILES syntax (ring closures, nested
      branches) should gain most from. That is an estimate, not a measurement: `curve` of
      two sizes at 15 minutes is how to check it.
  --batch-size 128
      Faster per sequence than 512 here (680 against 583 sequences/s for the 1-layer size:
      a batch pads to its longest SMILES, and small batches pad less) and 4x the updates.
  --precision auto
      bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 or AMX, as the Zen 5
      of the development machine), fp32 elsewhere. GRUs on CPUs are matrix products, and
      bf16 ones run about 5x faster there: this size trained at 2.25x the sequences per
      second of fp32 (one thread beside another job, 2026-12-06: 640 steps of 128 in 86.9 s
      against 195.4 s), its loss no worse at the same step (34.0 against 35.6 nats at step
      640; the time-based KL weight was lower in the faster run, so this is no proof of
      equal quality: the 60-minute curve is). Sums and the loss stay in fp32 (vaekit's
      autocast).
  --lr 1e-3 --lr-schedule cosine --lr-min 1e-4
      Adam; the cosine decay runs over the time budget (vaekit's progress fraction is the
      budget's), so the last minutes anneal.
  --grad-clip 100
      A guard against spikes only: the gradient norm of the summed per-sequence loss was
      10-25 in the first steps.
  --beta 1 --free-bits 0.25, and a KL warm-up over the first --kl-warmup-minutes
  (default: a fifth of the budget)
      Samples are drawn from the prior N(0, I), so the KL weight stays at 1 in the end:
      the codes the decoder learnt on must fill the prior, or prior samples fall in holes
      and come out invalid (MOSES's own VAE ends at KL weight 0.05 after 100 epochs; under a
      budget its per-epoch schedule never leaves 0). Free bits of 0.25 nats per dimension
      (16 nats over 64 dimensions) keep z in use against posterior collapse, which the
      decoder would otherwise fall into and which `vaekit optimize` cannot use, while
      bounding how far the posterior may stray from the prior. An epoch of MOSES is longer
      than the budget, so the warm-up is `train.kl_warmup_fraction` = warm-up minutes /
      --minutes: the weight is beta * min(1, progress / fraction), and under a time budget
      progress is training seconds over the budget (config.json records it). A vaekit
      warm-up flag (--kl-warmup, --kl-warmup-steps, --kl-warmup-fraction) replaces it.
  --epochs 1000 --limit-test 2000 --checkpoint-every 500
      The budget ends the run; 1,000 epochs is only a ceiling. Per-epoch evaluation runs
      once, at the end (an epoch outlasts the budget), on the first 2,000 test molecules
      (seconds, not minutes); interval checkpoints let an interrupted run go on with the
      same command.

`sample`: N strings from the final weights or a snapshot (--snapshot M, the minute mark),
vaekit's own sampler (`sample_strings`: z ~ N(0, I), each token from softmax(logits / T)
at T = 1, seed 0), one a line; an empty decoding stays as an (invalid) empty line, and so
would a sample holding <unk> (vaekit's decoder never emits it now; it would decode as
U+FFFD, and the RDKit of the MOSES venv reads 'C\ufffd...' as the molecule before that
character, so left as it is it would count as valid). `FILE.json` beside the samples records the run,
the weights, the time, how many held <unk>, and vaekit's RDKit validity (MOSES's, from
`score`, is the figure that counts).

`score`: runs benchmarks/moses_metrics.py with the MOSES environment's Python (MOSES needs
its own pins; `--moses-python`, or $MOSES_PYTHON) and prints the row it wrote; `--quick`
computes only valid, unique@k, FCD/Test and Novelty, with MOSES's own functions
(`fraction_valid`, `remove_invalid`, `fraction_unique`, fcd_torch's FCD against the
shipped test statistics, `novelty`), as `get_all_metrics` calls them: about a minute for
30,000 samples instead of about ten.

`curve`: samples and scores (--quick unless --full) every snapshot and the final weights
of a run, writes RUN/curve.json and RUN/curve.png (validity and FCD/Test against training
minutes). Samples and scores already in RUN/curve/ are reused.

`throughput`: sequences/s of vaekit's seqvae training step (`Trainer.train_step` over its
in-memory batches) against MOSES's VAE trainer (`VAETrainer`'s DataLoader and collate, and
the step of `VAETrainer._train_epoch`: forward, kl_weight * kl + recon, backward, clip at
50, Adam) at the same size: MOSES's defaults (one-hot embedding of its 30 tokens, GRU
encoder 256, 3-layer GRU decoder 512, z 128), and vaekit's seqvae with --hidden
256,512,512,512, z 128 and an embedding of 30; batch 512, lr 3e-4, KL weight 0.05 (a fixed
weight: it does not change the cost), MOSES's training set for both. vaekit's encoder is
always bidirectional and MOSES's default one is not, so a third contender, MOSES with
`q_bidir` (exactly vaekit's architecture), is timed too (--no-bidir leaves it out). All
are built and warmed up (2 steps) first, then take turns of --seconds each, in alternating
order (A B C, C B A, ...), so that drifts in the machine's speed hit all alike; the figure
that counts is the median over rounds of vaekit's rate over each MOSES contender's.
vaekit's batches hold sequences of similar length (its default for sequence runs);
--unbucketed adds vaekit with uniformly random batches as one more contender. A bucketed
batch's cost depends on its length, so compare the overall rates too (all sequences over
all seconds), which average over many batches. It
needs MOSES and vaekit in one Python: in the MOSES venv, `pip install --no-deps -e .` and
vaekit's missing dependencies with the venv's pins named (see MOSES.md); run from another
Python, it re-runs itself with --moses-python.

Everything but `throughput` and the scoring runs in vaekit's environment, which needs the
molsets data files (`pip install --no-deps molsets`). The top of this file imports only the
standard library, so it imports in either environment (and in CI).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import where_measured  # benchmarks/machine.py, a sibling module

HERE = Path(__file__).resolve().parent
MOSES_PYTHON = os.environ.get("MOSES_PYTHON", "/work/moses-venv/bin/python")
SNAPSHOTS = "snapshots"  # RUN/snapshots/<M>m.safetensors
RECORD = "molecules.json"  # RUN/molecules.json: the harness's settings and figures
CURVE = "curve"  # RUN/curve/<label>.smi and .json; RUN/curve.json, RUN/curve.png
UNIQUE_K = (1000, 10000)

# vaekit train flags (argparse dests of vaekit.cli.train) the harness sets unless given;
# the module docstring says why.
TRAIN_DEFAULTS = {
    "dataset": "moses",
    "hidden": [128, 256, 256],
    "latent_dim": 64,
    "embedding_dim": 32,
    "batch_size": 128,
    "precision": "auto",
    "lr": 1e-3,
    "lr_schedule": "cosine",
    "grad_clip": 100.0,
    "beta": 1.0,
    "free_bits": 0.25,
    "epochs": 1000,
    "limit_test": 2000,
    "checkpoint_every": 500,
}

# MOSES's VAE at its defaults, as vaekit's seqvae (the throughput comparison).
MOSES_SIZE = {"hidden": [256, 512, 512, 512], "latent_dim": 128, "embedding_dim": 30}


def machine() -> dict:
    """Where and how a figure was measured: the command, time, machine and Python."""
    return {**where_measured(), "python": platform.python_version()}


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def shown(value, spec: str = ".4f") -> str:
    """A metric for a line of text: n/a where there is none (e.g. FCD of < 2 molecules)."""
    return "n/a" if value is None else format(value, spec)


def minute_label(minutes: float) -> str:
    """A snapshot's name: 10m, 0.1m (rounded to milliminutes, so float steps match)."""
    return f"{round(minutes, 3):g}m"


# --- train ------------------------------------------------------------------------------
def make_callbacks(run_dir: Path, every_s: float, harness: dict):
    """The harness's training callbacks: Snapshots and Count (vaekit imported here)."""
    from vaekit.core.files import save_tensors
    from vaekit.training.callbacks import Callback

    def sequences_seen(trainer) -> int:
        """Training sequences the steps so far took (whole epochs, then this one's batches)."""
        steps, per_epoch = trainer.state.global_step, len(trainer.batches)
        full, rest = divmod(steps, per_epoch)
        return full * len(trainer.train_x) + rest * trainer.cfg.batch_size

    class Snapshots(Callback):
        """The weights after every `every` seconds of training time, as
        RUN/snapshots/<M>m.safetensors with the step, training seconds, sequences seen and
        KL weight in their metadata; the time spent saving is not counted as training. The
        final weights (model.safetensors) are the curve's last point, so the step that ends
        the budget saves none. On fit start it also writes RUN/molecules.json's settings."""

        def __init__(self, folder: Path, every: float) -> None:
            self.folder, self.every = folder, every
            self.next = every

        def on_fit_start(self, trainer) -> None:
            record = run_dir / RECORD
            if not record.exists():  # a resumed run keeps its first settings
                write_json(record, {"harness": harness})
            done = trainer.state.train_seconds  # a resumed run: the marks already passed
            while self.every > 0 and self.next <= done:
                self.next += self.every

        def on_step_end(self, trainer) -> None:
            if self.every <= 0 or trainer.state.out_of_time:
                return
            if trainer.train_seconds() < self.next:
                return
            trainer.stop_clock()  # training time up to here; saving is not training
            state = trainer.state
            meta = {
                "kind": "weights",
                "mark_minutes": self.next / 60,
                "train_seconds": state.train_seconds,
                "step": state.global_step,
                "sequences": sequences_seen(trainer),
                "beta": trainer.beta_at(state.global_step - 1),
            }
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{minute_label(self.next / 60)}.safetensors"
            save_tensors(path, trainer.model.state_dict(), meta)
            print(
                f"snapshot {path.name}: {state.train_seconds / 60:.2f} min of training, "
                f"step {state.global_step}, {meta['sequences']:,} sequences, "
                f"KL weight {meta['beta']:.3f}",
                file=sys.stderr,
                flush=True,
            )
            while self.next <= state.train_seconds:
                self.next += self.every
            trainer.clock_started = time.perf_counter()

    seen: dict = {}

    class Count(Callback):
        """What the run saw, at its end: steps, sequences, threads, device."""

        def on_fit_end(self, trainer) -> None:
            import torch

            seen.update(
                steps=trainer.state.global_step,
                sequences=sequences_seen(trainer),
                steps_per_epoch=len(trainer.batches),
                train_molecules=len(trainer.train_x),
                torch_threads=torch.get_num_threads(),
                device=str(trainer.device),
            )

    return [Snapshots(run_dir / SNAPSHOTS, every_s), Count()], seen


def add_train_parser(sub, vaekit_flags: bool) -> None:
    """The train subcommand; with `vaekit_flags`, vaekit train's flags too (imported from
    vaekit, so only when the command is train: the other subcommands run without it)."""
    p = sub.add_parser(
        "train",
        help="train vaekit's seqvae on MOSES for a wall-clock budget, with snapshots",
        description="Train vaekit's seqvae on MOSES for --minutes of training time, saving "
        "the weights every --curve-every minutes. Any vaekit train flag may be added; the "
        "harness's defaults (see the module docstring) fill the ones not given.",
    )
    p.add_argument("--minutes", type=float, required=True, help="training budget in minutes")
    p.add_argument("--out", type=Path, required=True, help="the run folder (new, or to resume)")
    p.add_argument(
        "--curve-every",
        type=float,
        default=10.0,
        metavar="MIN",
        help="save the weights every MIN minutes of training (default 10; 0: never)",
    )
    p.add_argument(
        "--kl-warmup-minutes",
        type=float,
        metavar="MIN",
        help="ramp the KL weight from 0 to --beta over the first MIN minutes of training "
        "(default: a fifth of the budget; 0: no warm-up)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run_command=cmd_train)
    if vaekit_flags:
        from vaekit.cli.train import add_config_arguments

        add_config_arguments(p)


def cmd_train(args: argparse.Namespace) -> int:
    import vaekit
    from vaekit.cli.train import build_train_config
    from vaekit.core.files import load_tensors

    if args.minutes <= 0:
        sys.exit("error: --minutes must be positive")
    if args.time_budget is not None:
        sys.exit("error: give the budget with --minutes, not --time-budget")
    out: Path = args.out
    if (out / "model.safetensors").exists():
        sys.exit(f"error: {out}: already trained (model.safetensors); choose another --out")
    resume = (out / "checkpoint.safetensors").exists()
    warmup_min = args.minutes / 5 if args.kl_warmup_minutes is None else args.kl_warmup_minutes
    others = [f for f in ("kl_warmup", "kl_warmup_steps", "kl_warmup_fraction") if getattr(args, f)]
    if others and args.kl_warmup_minutes is not None:
        sys.exit("error: give --kl-warmup-minutes or a vaekit KL warm-up flag, not both")
    if others:  # vaekit's own warm-up, as asked: none on top
        warmup_min = 0.0
    if warmup_min > args.minutes:
        sys.exit("error: --kl-warmup-minutes must not exceed --minutes")
    if not (args.config or args.preset):
        for key, value in TRAIN_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.lr_min is None:
            args.lr_min = args.lr / 10
        if args.name is None:
            args.name = "seqvae-moses"
    config = build_train_config(args)
    config.train.time_budget = args.minutes * 60
    if warmup_min:  # a fraction of the time budget: training time, as --minutes counts
        config.train.kl_warmup_fraction = round(warmup_min / args.minutes, 9)
    config.validate()
    harness = {
        **machine(),
        "minutes": args.minutes,
        "curve_every_minutes": args.curve_every,
        "kl_warmup_minutes": warmup_min,
    }
    if resume:
        recorded = json.loads((out / RECORD).read_text()) if (out / RECORD).exists() else {}
        old = recorded.get("harness", {})
        args.curve_every = old.get("curve_every_minutes", args.curve_every)
        print(f"resuming {out} from its checkpoint with its own config", file=sys.stderr)
    callbacks, seen = make_callbacks(out, args.curve_every * 60, harness)
    started = time.perf_counter()
    try:
        run = vaekit.train(
            None if resume else config,
            out,
            resume=out if resume else None,
            progress=not args.quiet,
            callbacks=callbacks,
        )
    except vaekit.VaekitError as err:
        again = ""
        if (out / "checkpoint.safetensors").exists():
            again = " (to go on with the harness's snapshots and KL warm-up, run the same "
            again += "molecules.py train command again: it resumes from the checkpoint)"
        sys.exit(f"error: {err}{again}")
    wall = time.perf_counter() - started
    final = run.final
    train_s = final["train_seconds"]
    snapshots = []
    for path in sorted((out / SNAPSHOTS).glob("*.safetensors"), key=snapshot_minutes):
        _, meta = load_tensors(path)
        snapshots.append({"file": f"{SNAPSHOTS}/{path.name}", **meta})
    n_params = sum(p.numel() for p in run.model.parameters())
    record = json.loads((out / RECORD).read_text()) if (out / RECORD).exists() else {}
    record.update(
        model={
            "hidden": run.config.model.hidden,
            "latent_dim": run.config.model.latent_dim,
            "embedding_dim": run.config.model.embedding_dim,
            "parameters": n_params,
            "vocab_size": run.config.model.vocab_size,
        },
        train={
            k: getattr(run.config.train, k)
            for k in ("batch_size", "lr", "lr_schedule", "lr_min", "beta", "free_bits")
            + ("grad_clip", "time_budget", "seed", "num_threads", "precision")
        },
        train_seconds=train_s,
        wall_seconds_this_command=round(wall, 1),
        epochs_seen=seen.get("sequences", 0) / max(seen.get("train_molecules", 1), 1),
        sequences_per_s=seen.get("sequences", 0) / train_s if train_s else None,
        final_row={k: v for k, v in final.items() if not isinstance(v, (list, dict))},
        snapshots=snapshots,
        **seen,
    )
    write_json(out / RECORD, record)
    print(
        f"trained {train_s / 60:.2f} min ({wall:.0f} s wall with loading and outputs): "
        f"{seen.get('steps')} steps, {seen.get('sequences', 0):,} sequences "
        f"({record['epochs_seen']:.3f} epochs, {record['sequences_per_s'] or 0:.0f}/s), "
        f"{n_params:,} parameters; test -ELBO {final['test_neg_elbo']:.2f} nats "
        f"(KL {final['test_kl']:.2f}, active units {final['active_units']}) on "
        f"{run.config.data.limit_test or 'all'} test molecules; {len(snapshots)} snapshots; "
        f"wrote {out / RECORD}"
    )
    return 0


def snapshot_minutes(path: Path) -> float:
    """The minute mark of a snapshot file named <M>m.safetensors."""
    return float(path.name.split("m.safetensors")[0])


# --- sample -----------------------------------------------------------------------------
def weights_file(run: Path, snapshot: str | None) -> Path:
    """The final weights, or the snapshot of minute mark `snapshot` (an error lists them)."""
    if snapshot in (None, "final"):
        return run / "model.safetensors"
    wanted = minute_label(float(snapshot))
    path = run / SNAPSHOTS / f"{wanted}.safetensors"
    if not path.exists():
        have = [p.name for p in sorted((run / SNAPSHOTS).glob("*.safetensors"))]
        sys.exit(f"error: {path}: no such snapshot (snapshots: {', '.join(have) or 'none'})")
    return path


def sample_run(
    run: Path,
    weights: Path,
    n: int,
    out: Path,
    seed: int,
    temperature: float = 1.0,
    top_k: int = 0,
    device: str = "cpu",
) -> dict:
    """n samples of the run with `weights` into `out` (one a line); their record, also
    written as OUT.json."""
    import torch

    from vaekit.config.runs import load_weights_into
    from vaekit.core.files import load_tensors
    from vaekit.data.sequences import UNKNOWN_TEXT, vocabulary_of
    from vaekit.evaluation.sequences import sample_strings
    from vaekit.models.loading import open_run

    opened = open_run(run, device)
    tensors, meta = load_tensors(weights)
    load_weights_into(opened.model, tensors, weights)
    model = opened.model.eval()
    vocabulary = vocabulary_of(opened.config.data)
    started = time.perf_counter()
    strings = sample_strings(model, vocabulary, n, temperature=temperature, top_k=top_k, seed=seed)
    sample_s = time.perf_counter() - started
    # A sample holding <unk> (decoded as U+FFFD) is not a SMILES, but MOSES's RDKit
    # (2024.03) stops parsing at the first non-ASCII character and returns the molecule
    # before it ('C\ufffd...' reads as methane): such samples are written as empty lines,
    # which every scorer counts invalid.
    unknown = sum(UNKNOWN_TEXT in s for s in strings)
    strings = ["" if UNKNOWN_TEXT in s else s for s in strings]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{s}\n" for s in strings))
    record = {
        "run": str(run),
        "weights": str(weights),
        "weights_meta": {k: v for k, v in meta.items() if k != "format_version"},
        "samples": n,
        "samples_file": str(out),
        "seed": seed,
        "temperature": temperature,
        "top_k": top_k,
        "sample_s": round(sample_s, 2),
        "samples_per_s": n / sample_s if sample_s else None,
        "torch_threads": torch.get_num_threads(),
        "unk_samples_written_empty": unknown,
        "empty": sum(not s for s in strings),
        "device": device,
        **machine(),
    }
    try:  # vaekit's own check (its RDKit); MOSES's validity comes from `score`
        from vaekit.evaluation.sequences import smiles_validity

        record["vaekit_rdkit_validity"] = smiles_validity(strings)
    except Exception as err:  # noqa: BLE001  (no RDKit: the samples stand without it)
        record["vaekit_rdkit_validity"] = f"not computed ({err})"
    write_json(out.with_name(out.name + ".json"), record)
    return record


def cmd_sample(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    weights = weights_file(args.run, args.snapshot)
    record = sample_run(
        args.run, weights, args.n, args.o, args.seed, args.temperature, args.top_k, args.device
    )
    validity = record["vaekit_rdkit_validity"]
    valid = (
        f"valid {validity['valid']:.4f} (vaekit's RDKit check)"
        if isinstance(validity, dict)
        else ""
    )
    print(
        f"{args.n} samples from {weights} in {record['sample_s']:.1f} s "
        f"({record['samples_per_s']:.0f}/s); {valid}; wrote {args.o}"
    )
    return 0


# --- score ------------------------------------------------------------------------------
def run_scorer(
    samples: Path, out: Path, quick: bool, moses_python: str, n_jobs: int, extra: list[str]
) -> dict:
    """MOSES's metrics of `samples` from a subprocess in the MOSES environment: the whole
    row (benchmarks/moses_metrics.py) or the quick one (this file's `_quick-score`)."""
    if not Path(moses_python).exists():
        sys.exit(
            f"error: {moses_python}: no MOSES Python (build it with benchmarks/moses_env.sh, or "
            "give --moses-python)"
        )
    if quick:
        command = [moses_python, str(Path(__file__).resolve()), "_quick-score", str(samples)]
    else:
        command = [moses_python, str(HERE / "moses_metrics.py"), str(samples)]
    command += ["--out", str(out), "--n-jobs", str(n_jobs), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        sys.exit(f"error: scoring failed (exit {done.returncode}): {' '.join(command)}")
    row = json.loads(out.read_text())
    row.setdefault("seconds", {})["subprocess_wall"] = round(time.perf_counter() - started, 1)
    write_json(out, row)
    return row


def cmd_score(args: argparse.Namespace) -> int:
    if not args.samples.is_file():
        sys.exit(f"error: no such file: {args.samples}")
    extra = ["--test", str(args.test)] if args.test else []
    row = run_scorer(args.samples, args.out, args.quick, args.moses_python, args.n_jobs, extra)
    shown = "  ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row["metrics"].items()
    )
    print(f"{row['samples']} samples ({row['valid_samples']} valid): {shown}")
    print(f"scored in {row['seconds']['subprocess_wall']:.1f} s; wrote {args.out}")
    return 0


def cmd_quick_score(args: argparse.Namespace) -> int:
    """valid, unique@k, FCD/Test and Novelty with MOSES's functions, in the MOSES venv."""
    import warnings
    from multiprocessing import Pool

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    sys.path.insert(0, str(HERE))
    import moses
    import torch
    from moses.dataset import get_dataset, get_statistics
    from moses.metrics.metrics import (
        FCDMetric,
        fraction_unique,
        fraction_valid,
        novelty,
        remove_invalid,
    )
    from moses.metrics.utils import get_mol
    from moses.utils import disable_rdkit_log, mapper

    import moses_metrics  # the sibling script: its sample reader and JSON helpers

    started_all = time.perf_counter()
    gen = moses_metrics.read_samples(args.samples, "SMILES")
    if not gen:
        sys.exit(f"error: {args.samples} holds no samples")
    train = list(get_dataset("train"))
    n_test = len(get_dataset("test"))
    disable_rdkit_log()
    pool = Pool(args.n_jobs) if args.n_jobs != 1 else 1
    seconds = {}
    started = time.perf_counter()
    metrics = {"valid": float(fraction_valid(gen, n_jobs=pool))}
    canonical = remove_invalid(gen, canonize=True, n_jobs=pool)
    seconds["valid"] = time.perf_counter() - started
    if canonical:
        for k in UNIQUE_K:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fewer than k valid: MOSES uses them all
                metrics[f"unique@{k}"] = float(fraction_unique(canonical, k, pool))
        started = time.perf_counter()
        fcd = FCDMetric(n_jobs=args.n_jobs, device=args.device, batch_size=512)
        metrics["FCD/Test"] = float(fcd(gen=canonical, pref=get_statistics("test")["FCD"]))
        seconds["FCD/Test"] = time.perf_counter() - started
        started = time.perf_counter()
        metrics["Novelty"] = float(novelty(mapper(pool)(get_mol, canonical), train, pool))
        seconds["Novelty"] = time.perf_counter() - started
    if pool != 1:
        pool.close()
        pool.join()
    row = {
        **machine(),
        "kind": "quick: valid, unique@k, FCD/Test, Novelty (MOSES's functions)",
        "torch_threads": torch.get_num_threads(),
        "n_jobs": args.n_jobs,
        "versions": {"molsets": moses.__version__, "torch": torch.__version__},
        "samples_file": str(args.samples),
        "samples": len(gen),
        "valid_samples": len(canonical),
        "reference": {
            "source": "MOSES's precomputed FCD statistics of its test set (test_stats.npz)",
            "test_molecules": n_test,
        },
        "train_molecules_for_novelty": len(train),
        "metrics": {k: moses_metrics.to_jsonable(v) for k, v in metrics.items()},
        "seconds": {k: round(v, 1) for k, v in seconds.items()}
        | {"total": round(time.perf_counter() - started_all, 1)},
    }
    write_json(args.out, row)
    print(f"quick score of {args.samples}: {row['metrics']} ({row['seconds']['total']} s)")
    return 0


# --- curve ------------------------------------------------------------------------------
def cmd_curve(args: argparse.Namespace) -> int:
    from vaekit.core.files import load_tensors

    run: Path = args.run
    if not (run / "model.safetensors").exists():
        sys.exit(f"error: {run}: no final weights (model.safetensors): train it first")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    record = json.loads((run / RECORD).read_text()) if (run / RECORD).exists() else {}
    points = []
    for path in sorted((run / SNAPSHOTS).glob("*.safetensors"), key=snapshot_minutes):
        _, meta = load_tensors(path)
        points.append((path.name.removesuffix(".safetensors"), path, meta))
    final_meta = {
        "train_seconds": record.get("train_seconds"),
        "step": record.get("steps"),
        "sequences": record.get("sequences"),
        "beta": record.get("final_row", {}).get("beta"),
    }
    points.append(("final", run / "model.safetensors", final_meta))
    folder = run / CURVE
    kind = "full" if args.full else "quick"
    rows = []
    for label, weights, meta in points:
        samples = folder / f"{label}-n{args.n}-s{args.seed}.smi"
        scored = samples.with_name(f"{samples.stem}-{kind}.json")
        if args.redo or not samples.exists():
            sample_run(run, weights, args.n, samples, args.seed, device=args.device)
        if args.redo or not scored.exists():
            run_scorer(samples, scored, not args.full, args.moses_python, args.n_jobs, [])
        sampled = json.loads(samples.with_name(samples.name + ".json").read_text())
        row = json.loads(scored.read_text())
        minutes = (meta.get("train_seconds") or 0) / 60
        rows.append(
            {
                "label": label,
                "minutes": minutes,
                "step": meta.get("step"),
                "sequences": meta.get("sequences"),
                "beta": meta.get("beta"),
                "samples": row["samples"],
                "sample_s": sampled["sample_s"],
                "score_s": row["seconds"].get("subprocess_wall"),
                **row["metrics"],
            }
        )
        m = row["metrics"]
        print(
            f"{label:>8}: {minutes:6.2f} min  valid {shown(m.get('valid'))}  "
            f"FCD/Test {shown(m.get('FCD/Test'), '.3f')}  "
            f"unique@10k {shown(m.get('unique@10000'))}  novelty {shown(m.get('Novelty'))}",
            flush=True,
        )
    result = {"run": str(run), "kind": kind, "n": args.n, "seed": args.seed, "points": rows}
    write_json(run / "curve.json", result)
    png = plot_curve(rows, run / "curve.png", f"{run.name}: {args.n:,} samples per point")
    print(f"wrote {run / 'curve.json'} and {png}")
    return 0


def plot_curve(rows: list[dict], png: Path, title: str) -> Path:
    """Validity and FCD/Test against training minutes, with the issue's bars dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minutes"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(minutes, [r["valid"] for r in rows], "o-")
    left.axhline(0.9, color="grey", linestyle="--", linewidth=1, label="bar: 0.90")
    left.set(xlabel="training minutes", ylabel="validity (MOSES)", ylim=(0, 1.02))
    fcd = [(m, r["FCD/Test"]) for m, r in zip(minutes, rows) if r.get("FCD/Test") is not None]
    if fcd:
        right.plot(*zip(*fcd), "o-", color="tab:red")
    right.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="bar: 1.0")
    right.set(xlabel="training minutes", ylabel="FCD/Test (lower is better)")
    if fcd and max(v for _, v in fcd) / max(min(v for _, v in fcd), 1e-9) > 20:
        right.set_yscale("log")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


# --- throughput -------------------------------------------------------------------------
def moses_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("moses") is not None and _imports("moses.vae")


def _imports(name: str) -> bool:
    import importlib
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001  (an old MOSES fails in many ways outside its venv)
        return False


def forever(make_iterable):
    """Items of make_iterable(0), make_iterable(1), ... without end."""
    epoch = 0
    while True:
        yield from make_iterable(epoch)
        epoch += 1


def timed_turns(step, warmup: int):
    """A contender from one training step (returning its batch size), warmed up: called
    with `seconds`, it steps until they are spent (at least once) and returns
    (sequences, seconds)."""
    for _ in range(warmup):
        step()

    def turn(seconds: float) -> tuple[int, float]:
        started = time.perf_counter()
        sequences = 0
        while True:
            sequences += step()
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return sequences, elapsed

    return turn


def vaekit_contender(
    data,
    batch: int,
    device: str,
    kl_weight: float,
    warmup: int,
    buckets: bool = True,
    precision: str = "fp32",
):
    """vaekit's Trainer.train_step over its own in-memory batches, MOSES's size; with
    `buckets`, batches of similar length (the default, train.length_buckets); `precision`
    as vaekit train's --precision."""
    import torch

    from vaekit.config import RunConfig
    from vaekit.models import build_model
    from vaekit.models.registry import configure_model
    from vaekit.training.trainer import Trainer

    config = RunConfig.from_dict(
        {
            "data": {"name": "moses", "limit_test": 100},
            "model": {"name": "seqvae", **MOSES_SIZE},
            "train": {
                "batch_size": batch,
                "lr": 3e-4,
                "grad_clip": 50.0,
                "beta": kl_weight,
                "device": device,
                "seed": 0,
                "length_buckets": buckets,
                "precision": precision,
            },
        }
    )
    config.data.shape, config.data.kind = list(data.shape), data.train.kind
    configure_model(config.model, data)
    torch.manual_seed(0)
    model = build_model(config.model, data.shape)
    trainer = Trainer(config, model, data, run=None, progress=False)
    batches = forever(trainer.batches.epoch)

    def step() -> int:
        x, _ = next(batches)
        trainer.train_step(x)
        return len(x)

    n_params = sum(p.numel() for p in model.parameters())
    return timed_turns(step, warmup), n_params, len(data.vocabulary)


def moses_contender(train_data, vocab, batch: int, device: str, bidir: bool, kl_weight, warmup):
    """MOSES's VAETrainer data path and step (VAETrainer._train_epoch's), its defaults
    (moses_baseline.moses_config), with `q_bidir` = bidir."""
    import torch
    from moses.vae import VAE
    from moses.vae.trainer import VAETrainer
    from torch.nn.utils import clip_grad_norm_

    sys.path.insert(0, str(HERE))
    from moses_baseline import moses_config

    config = moses_config(batch, seed=0)
    config.device = device
    config.q_bidir = bidir
    trainer = VAETrainer(config)
    torch.manual_seed(0)
    model = VAE(vocab, config).to(device)
    model.train()
    optimizer = torch.optim.Adam(trainer.get_optim_params(model), lr=config.lr_start)
    torch.manual_seed(0)
    batches = forever(lambda epoch: trainer.get_dataloader(model, train_data, shuffle=True))

    def step() -> int:
        input_batch = tuple(data.to(model.device) for data in next(batches))
        kl_loss, recon_loss = model(input_batch)
        loss = kl_weight * kl_loss + recon_loss
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm_(trainer.get_optim_params(model), config.clip_grad)
        optimizer.step()
        kl_loss.item(), recon_loss.item(), loss.item()  # MOSES logs all three per step
        return len(input_batch)

    n_params = sum(p.numel() for p in model.parameters())
    return timed_turns(step, warmup), n_params, len(vocab)


def cmd_throughput(args: argparse.Namespace) -> int:
    if not moses_importable():
        python = args.moses_python
        # not Path.resolve(): every venv's python links to the same interpreter
        if Path(python).exists() and not os.environ.get("MOLECULES_REEXEC"):
            print(f"MOSES is not importable here: running again with {python}", flush=True)
            os.environ["MOLECULES_REEXEC"] = "1"  # once only
            os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])
        sys.exit(
            "error: throughput needs MOSES and vaekit in one Python: run it with the MOSES "
            "venv's python after `pip install --no-deps -e .` there (benchmarks/MOSES.md)"
        )
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    import moses
    import torch
    from moses.vae.trainer import VAETrainer

    import vaekit
    from vaekit.config import DataConfig

    sys.path.insert(0, str(HERE))
    from moses_baseline import moses_config

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train_data = moses.get_dataset("train")
    data = vaekit.load_data(DataConfig(name="moses", limit_test=100))
    load_s = time.perf_counter() - started
    kl = 0.05
    built = {}
    started = time.perf_counter()
    vocab = VAETrainer(moses_config(args.batch, seed=0)).get_vocabulary(train_data)
    for name, buckets, precision in (
        ("vaekit", True, "fp32"),
        ("vaekit-unbucketed", False, "fp32"),
        ("vaekit-bf16", True, "bf16"),
    ):
        if (not buckets and not args.unbucketed) or (precision == "bf16" and not args.bf16):
            continue
        built[name] = vaekit_contender(
            data, args.batch, args.device, kl, args.warmup, buckets, precision
        )
    for name, bidir in (("moses", False), ("moses-bidir", True)):
        if bidir and not args.bidir:
            continue
        built[name] = moses_contender(
            train_data, vocab, args.batch, args.device, bidir, kl, args.warmup
        )
    build_s = time.perf_counter() - started
    names = list(built)
    sizes = {name: {"parameters": b[1], "vocabulary": b[2]} for name, b in built.items()}
    described = ", ".join(
        f"{name} {size['parameters']:,} parameters (vocabulary {size['vocabulary']})"
        for name, size in sizes.items()
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"batch {args.batch}; {args.rounds} rounds of {args.seconds:g} s per contender; "
        f"{described}; loading {load_s:.1f} s, building and warm-up ({args.warmup} steps) "
        f"{build_s:.1f} s",
        flush=True,
    )
    # each vaekit contender over each MOSES one, and bucketed over unbucketed
    pairs = [
        f"{v}/{m}" for v in names if v.startswith("vaekit") for m in names if m.startswith("moses")
    ]
    pairs += ["vaekit/vaekit-unbucketed"] if "vaekit-unbucketed" in names else []
    rounds = []
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        turns = {name: built[name][0](args.seconds) for name in order}
        row = {
            name: {"sequences": n, "seconds": s, "rate": n / s} for name, (n, s) in turns.items()
        }
        for pair in pairs:
            row[pair] = ratio_of(pair, row, "rate")
        rounds.append(row)
        print(
            f"round {r + 1} ({' '.join(order)}): "
            + "  ".join(f"{n} {row[n]['rate']:.1f} seq/s" for n in names)
            + "  "
            + "  ".join(f"{pair} {row[pair]:.2f}" for pair in pairs),
            flush=True,
        )
    summary = {
        name: {
            "median_rate": statistics.median(r[name]["rate"] for r in rounds),
            "sequences": sum(r[name]["sequences"] for r in rounds),
            "seconds": sum(r[name]["seconds"] for r in rounds),
        }
        for name in names
    }
    for name in names:
        summary[name]["overall_rate"] = summary[name]["sequences"] / summary[name]["seconds"]
    ratios = {pair: statistics.median(r[pair] for r in rounds) for pair in pairs}
    overall = {pair: ratio_of(pair, summary, "overall_rate") for pair in pairs}
    for title, rate, values in (
        ("median", "median_rate", ratios),
        ("overall", "overall_rate", overall),
    ):
        print(
            f"{title}: "
            + "  ".join(f"{n} {summary[n][rate]:.1f} seq/s" for n in names)
            + "  "
            + "  ".join(f"{k} {v:.2f}" for k, v in values.items())
        )
    if args.out:
        write_json(
            args.out,
            {
                **machine(),
                "torch": torch.__version__,
                "molsets": moses.__version__,
                "torch_threads": torch.get_num_threads(),
                "device": args.device,
                "batch": args.batch,
                "kl_weight": kl,
                "seconds_per_turn": args.seconds,
                "warmup_steps": args.warmup,
                "sizes": sizes,
                "vaekit_model": MOSES_SIZE,
                "rounds": rounds,
                "summary": summary,
                "median_ratios": ratios,
                "overall_ratios": overall,
            },
        )
        print(f"wrote {args.out}")
    return 0


def ratio_of(pair: str, rows: dict, key: str) -> float:
    """rows[A][key] / rows[B][key] for the pair "A/B"."""
    a, b = pair.split("/")
    return rows[a][key] / rows[b][key]


# --- command line -----------------------------------------------------------------------
def build_parser(vaekit_flags: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub, vaekit_flags)

    p = sub.add_parser("sample", help="sample a run's final weights or a snapshot")
    p.add_argument("--run", type=Path, required=True, help="the run folder")
    p.add_argument("--snapshot", help="minute mark of a snapshot (e.g. 10); default final")
    p.add_argument("-n", type=int, default=30000, help="samples (default 30,000)")
    p.add_argument("-o", type=Path, required=True, help="output .smi, one sample a line")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="default 1: the model's own")
    p.add_argument("--top-k", type=int, default=0, help="default 0: all tokens")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="torch device for sampling (default cpu)")
    p.set_defaults(run_command=cmd_sample)

    p = sub.add_parser("score", help="MOSES's metrics of a samples file (MOSES venv)")
    p.add_argument("samples", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the JSON row")
    p.add_argument("--quick", action="store_true", help="valid, unique, FCD/Test, Novelty only")
    p.add_argument("--test", type=int, help="moses_metrics.py --test N (a test subset)")
    add_moses_arguments(p)
    p.set_defaults(run_command=cmd_score)

    p = sub.add_parser("curve", help="sample and score every snapshot: validity, FCD")
    p.add_argument("run", type=Path)
    p.add_argument("-n", type=int, default=30000, help="samples per point (default 30,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full", action="store_true", help="every metric at every point (slow)")
    p.add_argument("--redo", action="store_true", help="sample and score again")
    p.add_argument("--threads", type=int, help="torch threads for sampling")
    p.add_argument("--device", default="cpu", help="torch device for sampling (default cpu)")
    add_moses_arguments(p)
    p.set_defaults(run_command=cmd_curve)

    p = sub.add_parser("throughput", help="vaekit's training step against moses.vae's")
    p.add_argument("--seconds", type=float, default=60.0, help="per contender per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--batch", type=int, default=512, help="batch size (MOSES's: 512)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    p.add_argument("--device", default="cpu", help="torch device for both (default cpu)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--no-bidir", dest="bidir", action="store_false", help="no moses-bidir")
    p.add_argument(
        "--unbucketed",
        action="store_true",
        help="also time vaekit with uniformly random batches (--no-length-buckets)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="also time vaekit with --precision bf16 (autocast; fast on CPUs with AVX512-BF16)",
    )
    p.add_argument("--out", type=Path, help="write the rounds and medians as JSON")
    p.add_argument("--moses-python", default=MOSES_PYTHON, help=argparse.SUPPRESS)
    p.set_defaults(run_command=cmd_throughput)
    return parser


def add_moses_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--moses-python",
        default=MOSES_PYTHON,
        help=f"the MOSES venv's python (default $MOSES_PYTHON or {MOSES_PYTHON})",
    )
    p.add_argument("--n-jobs", type=int, default=2, help="MOSES's worker processes (default 2)")


def quick_score_parser() -> argparse.ArgumentParser:
    """`_quick-score`, what `score --quick` runs in the MOSES venv (not listed in --help)."""
    p = argparse.ArgumentParser(prog="molecules.py _quick-score")
    p.add_argument("samples", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.set_defaults(run_command=cmd_quick_score)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_quick-score"]:
        args = quick_score_parser().parse_args(argv[1:])
    else:
        args = build_parser(vaekit_flags=argv[:1] == ["train"]).parse_args(argv)
    return args.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
