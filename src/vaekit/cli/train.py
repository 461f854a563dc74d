"""`vaekit train`."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit.cli.args import (
    duration,
    image_count,
    image_size,
    int_list,
    layer_size,
    non_negative_float,
    non_negative_int,
    open_unit_float,
    positive_float,
    positive_int,
    sample_count,
    seed,
    thread_count,
    unit_fraction,
    unit_interval,
)
from vaekit.core.errors import ConfigError

# --- train ------------------------------------------------------------------------------
# flag -> (section, field) of RunConfig; a flag left unset keeps the preset/config value
TRAIN_OVERRIDES = {
    "dataset": ("data", "name"),
    "data_path": ("data", "path"),
    "data": ("data", "path"),  # --data PATH: own data, its format told by the path
    "test_fraction": ("data", "test_fraction"),
    "color": ("data", "color"),
    "resize": ("data", "resize"),
    "cache": ("data", "cache"),
    "label_column": ("data", "label_column"),
    "id_column": ("data", "id_column"),
    "column": ("data", "sequence_column"),
    "tokens": ("data", "tokens"),
    "max_length": ("data", "max_length"),
    "denoise": ("train", "denoise"),
    "perturb": ("train", "perturb"),
    "binarize": ("data", "binarize"),
    "limit_train": ("data", "limit_train"),
    "limit_test": ("data", "limit_test"),
    "valid_size": ("data", "valid_size"),
    "model": ("model", "name"),
    "arch": ("model", "arch"),
    "hidden": ("model", "hidden"),
    "channels": ("model", "channels"),
    "res_blocks": ("model", "res_blocks"),
    "latent_dim": ("model", "latent_dim"),
    "likelihood": ("model", "likelihood"),
    "latent_layers": ("model", "latent_layers"),
    "upper_hidden": ("model", "upper_hidden"),
    "prior": ("model", "prior"),
    "prior_components": ("model", "prior_components"),
    "labeled": ("model", "labeled"),
    "alpha": ("model", "alpha"),
    "label_repeat": ("model", "label_repeat"),
    "classifier_hidden": ("model", "classifier_hidden"),
    "embedding_dim": ("model", "embedding_dim"),
    "word_dropout": ("model", "word_dropout"),
    "features": ("model", "features"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "lr_schedule": ("train", "lr_schedule"),
    "lr_min": ("train", "lr_min"),
    "time_budget": ("train", "time_budget"),
    "steps": ("train", "max_steps"),
    "lr_warmup": ("train", "lr_warmup_steps"),
    "early_stop": ("train", "early_stop"),
    "lr_patience": ("train", "lr_patience"),
    "lr_factor": ("train", "lr_factor"),
    "keep_best": ("train", "keep_best"),
    "eval_every": ("train", "eval_every"),
    "grad_clip": ("train", "grad_clip"),
    "weight_decay": ("train", "weight_decay"),
    "seed": ("train", "seed"),
    "tensorboard": ("train", "tensorboard"),
    "length_buckets": ("train", "length_buckets"),
    "beta": ("train", "beta"),
    "kl_warmup": ("train", "kl_warmup_epochs"),
    "kl_warmup_steps": ("train", "kl_warmup_steps"),
    "kl_warmup_fraction": ("train", "kl_warmup_fraction"),
    "free_bits": ("train", "free_bits"),
    "iw_k": ("train", "iw_k"),
    "checkpoint_every": ("train", "checkpoint_every_steps"),
    "device": ("train", "device"),
    "threads": ("train", "num_threads"),
    "precision": ("train", "precision"),
    "step": ("train", "step"),
    "name": (None, "name"),
    "n_samples": (None, "n_samples"),
}


def hidden_sizes(text: str) -> list[int]:
    """Dense layer sizes like 512,256; `none` for no dense layers (conv and resnet only)."""
    return [] if text.strip().lower() == "none" else int_list(text)


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (default: the reference VAE on built-in MNIST)",
        description="Train a VAE and write a run folder (config, weights, metrics, pictures). "
        "Values come from --config, then --preset, then the flags given.",
    )
    p.add_argument(
        "--resume", type=Path, metavar="RUN", help="continue RUN from its last checkpoint"
    )
    p.add_argument("--out", type=Path, help="run folder (default runs/NAME, suffixed if taken)")
    add_config_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--report", action="store_true", help="write RUN/report.html at the end")
    p.set_defaults(run_command=cmd_train)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """--preset, --config and the flags of TRAIN_OVERRIDES (shared with `vaekit compare`)."""
    from vaekit.config.presets import PRESETS
    from vaekit.data.registry import DATASETS
    from vaekit.models.registry import MODELS

    p.add_argument("--preset", choices=list(PRESETS), help="start from a named configuration")
    p.add_argument("--config", type=Path, help="start from a config.json (e.g. a run's own)")
    p.add_argument("--name", help="run name (default vae-mnist)")
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        metavar="NAME",
        help=f"one of {', '.join(DATASETS)} (mnist is built in; your own files: --data PATH)",
    )
    g.add_argument("--data-path", help="folder holding the dataset's files")
    add_own_data_arguments(g)
    g.add_argument(
        "--binarize", choices=["none", "dynamic"], help="dynamic: new Bernoulli draws per batch"
    )
    g.add_argument(
        "--limit-train", type=positive_int, metavar="N", help="use the first N training images"
    )
    g.add_argument(
        "--limit-test", type=positive_int, metavar="N", help="use the first N test images"
    )
    g.add_argument(
        "--valid-size",
        type=non_negative_int,
        metavar="N",
        help="hold out the last N training images for validation; the run keeps the weights "
        "of its best validation -ELBO (0: none, unless the dataset has a validation split)",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        metavar="NAME",
        help=f"one of {', '.join(MODELS)} (docs/models.md describes each)",
    )
    g.add_argument(
        "--arch",
        help="encoder/decoder networks: mlp (default), conv, resnet, or a name registered with "
        "vaekit.register_network (load it with vaekit --plugin MODULE)",
    )
    g.add_argument(
        "--hidden",
        type=hidden_sizes,
        metavar="SIZES",
        help="dense layer sizes, e.g. 512,256 (conv/resnet: after the convolutions, or none)",
    )
    g.add_argument(
        "--channels", type=int_list, metavar="SIZES", help="conv/resnet filters per stride-2 stage"
    )
    g.add_argument(
        "--res-blocks", type=non_negative_int, metavar="N", help="resnet: blocks per stage"
    )
    g.add_argument("--latent-dim", type=layer_size, metavar="D", help="latent dimensions")
    g.add_argument(
        "--likelihood",
        choices=["bernoulli", "gaussian", "gaussian-perdim", "discretized-logistic"],
        help="p(x|z): bernoulli (default, [0,1] images), gaussian with a learned variance, "
        "one shared or one per dimension, or discretized-logistic (8-bit images: true bits/dim)",
    )
    g.add_argument(
        "--latent-layers",
        type=int_list,
        metavar="SIZES",
        help="hvae: latent layer sizes from the bottom up, e.g. 32,16",
    )
    g.add_argument(
        "--upper-hidden",
        type=int_list,
        metavar="SIZES",
        help="hvae: dense layers between latent layers (256)",
    )
    g.add_argument(
        "--prior",
        choices=("normal", "vamp"),
        help="p(z): normal N(0, I) (default) or vamp, a mixture of the posteriors of learned "
        "pseudo-inputs (models vae and hvae, whose top layer gets it; model vamp implies it)",
    )
    g.add_argument(
        "--prior-components",
        type=layer_size,
        metavar="K",
        help="vamp prior: pseudo-inputs whose posteriors make up the prior (500)",
    )
    g.add_argument(
        "--labeled",
        type=non_negative_int,
        metavar="N",
        help="m2: keep N class-balanced training labels and hide the rest",
    )
    g.add_argument(
        "--alpha",
        type=non_negative_float,
        help="m2: weight of the classifier's cross-entropy on labelled examples (50)",
    )
    g.add_argument(
        "--label-repeat",
        type=non_negative_int,
        metavar="R",
        help="m2: repeats of the labelled examples per epoch (0: about a tenth of the epoch)",
    )
    g.add_argument(
        "--classifier-hidden",
        type=int_list,
        metavar="SIZES",
        help="m2: dense layers of the classifier q(y|x) (default: --hidden)",
    )
    g.add_argument(
        "--embedding-dim", type=layer_size, metavar="D", help="seqvae: token embedding size (32)"
    )
    g.add_argument(
        "--word-dropout",
        type=unit_interval,
        metavar="RATE",
        help="seqvae: share of the decoder's input tokens replaced by <unk> in training (0)",
    )
    g.add_argument(
        "--features",
        metavar="RUN",
        help="m1m2: a trained vae run whose latent space is the M2's data (copied into the run)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--lr", type=positive_float, help="Adam learning rate")
    g.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine", "plateau"],
        help="constant (default); cosine decay from --lr to --lr-min over the run; or plateau: "
        "multiply by --lr-factor after --lr-patience evaluations without a better validation "
        "-ELBO (needs --valid-size)",
    )
    g.add_argument("--lr-min", type=non_negative_float, help="cosine: the final learning rate")
    g.add_argument(
        "--lr-warmup",
        type=non_negative_int,
        metavar="STEPS",
        help="ramp the learning rate linearly from 0 over the first STEPS steps (0: off)",
    )
    g.add_argument(
        "--lr-patience",
        type=positive_int,
        metavar="EVALS",
        help="plateau: evaluations without improvement before each cut (default 2)",
    )
    g.add_argument(
        "--lr-factor",
        type=open_unit_float,
        metavar="F",
        help="plateau: the learning rate is multiplied by F at each cut (default 0.5)",
    )
    g.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        help="stop cleanly after N optimiser steps (--epochs stays the upper bound)",
    )
    g.add_argument(
        "--early-stop",
        type=non_negative_int,
        metavar="EVALS",
        help="stop after EVALS evaluations in a row without a better validation -ELBO and keep "
        "the best weights (needs --valid-size; 0: off, the default)",
    )
    g.add_argument(
        "--keep-best",
        type=positive_int,
        metavar="K",
        help="keep the weights of the K best validation epochs in RUN/best/ (default 1: "
        "best.safetensors only)",
    )
    g.add_argument(
        "--time-budget",
        type=duration,
        metavar="TIME",
        help="stop cleanly after this much training (e.g. 60m, 1.5h); --epochs stays the "
        "upper bound, and a cosine schedule spans whichever ends first",
    )
    g.add_argument(
        "--eval-every",
        type=positive_int,
        metavar="EPOCHS",
        help="evaluate and write a metrics row every EPOCHS epochs (and at the end)",
    )
    g.add_argument(
        "--length-buckets",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sequence runs: batches of sequences of similar length, shuffled (less padding, "
        "faster steps; the default); --no-length-buckets: uniformly random batches",
    )
    g.add_argument(
        "--grad-clip",
        type=non_negative_float,
        metavar="NORM",
        help="clip the gradients' global L2 norm to NORM each step (0: off, the default)",
    )
    g.add_argument(
        "--weight-decay",
        type=non_negative_float,
        metavar="W",
        help="decoupled weight decay (AdamW): each step shrinks the weights by lr * W "
        "(0: plain Adam, the default)",
    )
    g.add_argument("--seed", type=seed)
    g.add_argument("--beta", type=non_negative_float, help="KL weight (beta-VAE); 1 is the ELBO")
    g.add_argument("--kl-warmup", type=non_negative_int, metavar="EPOCHS", help="ramp beta from 0")
    g.add_argument(
        "--kl-warmup-steps",
        type=non_negative_int,
        metavar="STEPS",
        help="ramp beta from 0 over STEPS steps (instead of --kl-warmup, for long epochs)",
    )
    g.add_argument(
        "--kl-warmup-fraction",
        type=non_negative_float,
        metavar="F",
        help="ramp beta from 0 over the first F (0-1) of the run: of its epochs, or of "
        "--steps or --time-budget where those end it sooner (a time budget counts "
        "training time)",
    )
    g.add_argument(
        "--free-bits",
        type=non_negative_float,
        metavar="NATS",
        help="floor on each latent dimension's KL in the loss (0: off)",
    )
    g.add_argument(
        "--iw-k",
        type=sample_count,
        metavar="K",
        help="train on the IWAE bound with K importance samples (1: the ELBO)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        metavar="STEPS",
        help="also checkpoint every STEPS batches (0: end of each epoch only)",
    )
    g.add_argument(
        "--denoise",
        metavar="KIND:LEVEL",
        help="denoising training: encode inputs corrupted by gaussian:SIGMA or "
        "saltpepper:FRACTION noise, reconstruct the clean ones",
    )
    g.add_argument(
        "--perturb",
        type=unit_fraction,
        metavar="RATE",
        help="replace a share RATE of the values of every batch by random 8-bit levels: a "
        "background model for `vaekit anomaly --score ratio --background RUN` (e.g. 0.2)",
    )
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="autocast the networks to bf16/fp16 (losses in fp32; fp16 uses a gradient "
        "scaler); auto: bf16 where the CPU or GPU computes it natively, else fp32",
    )
    g.add_argument(
        "--step",
        choices=["auto", "autograd"],
        help="auto (default): hand-written gradients for the plain MLP VAE with a Bernoulli "
        "likelihood in fp32 (same results, faster); autograd: always autograd",
    )
    g.add_argument(
        "--tensorboard",
        action="store_true",
        default=None,
        help="also write TensorBoard event files in RUN/tensorboard/ (scalars per step and "
        "epoch, sample and reconstruction grids; needs pip install 'vaekit[tensorboard]')",
    )
    g.add_argument("--threads", type=thread_count, help="CPU threads (0: torch's default)")
    g.add_argument("--n-samples", type=image_count, help="prior samples in samples.png")
    show_config_defaults(p)


def show_config_defaults(p: argparse.ArgumentParser) -> None:
    """Give every config flag the default config's value for --help to show (its parsed
    default stays None: a flag left unset keeps the preset's or --config's value)."""
    from vaekit.config import RunConfig

    reference = RunConfig().to_dict()
    for action in p._actions:
        if action.dest in TRAIN_OVERRIDES:
            section, field = TRAIN_OVERRIDES[action.dest]
            action.shown_default = (reference[section] if section else reference).get(field)


def build_train_config(args: argparse.Namespace):
    from vaekit.config import RunConfig
    from vaekit.config.presets import preset

    if args.config:
        config = RunConfig.load(args.config)
    elif args.preset:
        config = preset(args.preset)
    else:
        config = RunConfig()
    if args.config and args.preset:
        raise ConfigError("give --config or --preset, not both")
    raw = config.to_dict()
    for flag, (section, key) in TRAIN_OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            (raw[section] if section else raw)[key] = value
    if args.features:  # the feature VAE's run, found from any folder; its config re-recorded
        raw["model"].update(features=str(Path(args.features).resolve()), features_model=None)
    if args.data:
        own_data_config(raw, args)
    if args.dataset or args.data_path or args.data or args.tokens or args.max_length:
        raw["data"]["shape"] = None  # a different dataset may have another shape
        raw["data"]["vocabulary"] = raw["model"]["vocab_size"] = None  # and other tokens
    sequence_defaults(raw, args)
    if args.name is None and raw["name"] == "vae-mnist":
        raw["name"] = f"{raw['model']['name']}-{raw['data']['name']}"
    return RunConfig.from_dict(raw)


def add_own_data_arguments(g: argparse._ArgumentGroup) -> None:
    """--data PATH and the options of own data (docs/own-data.md)."""
    g.add_argument(
        "--data",
        metavar="PATH",
        help="your own data: a folder of images (class sub-folders = labels), .npy/.npz, .csv",
    )
    g.add_argument(
        "--test-fraction",
        type=float,
        metavar="F",
        help="own data without a split of its own: share held out as test set (0.1)",
    )
    g.add_argument(
        "--color", choices=["auto", "grayscale", "rgb"], help="image folders: colour mode (auto)"
    )
    g.add_argument("--resize", type=image_size, metavar="HxW", help="image folders: resize to HxW")
    g.add_argument(
        "--cache",
        choices=["auto", "on", "off"],
        help="image folders, .npy: decode once into a memory-mapped file under $VAEKIT_CACHE "
        "(auto: above 20,000 images or 512 MiB)",
    )
    g.add_argument("--label-column", metavar="NAME", help="CSV: the column of labels")
    g.add_argument("--id-column", metavar="NAME", help="CSV: the column of ids")
    g.add_argument(
        "--column", metavar="NAME", help="CSV: the column of sequences (SMILES, text) to train on"
    )
    g.add_argument(
        "--tokens",
        choices=["char", "selfies"],
        help="sequences: characters (default) or SELFIES symbols (molecules; needs the "
        "molecules extra)",
    )
    g.add_argument(
        "--max-length",
        type=positive_int,
        metavar="N",
        help="sequences: the most tokens a sequence may hold; longer is an error (120)",
    )


def own_data_config(raw: dict, args: argparse.Namespace) -> None:
    """`--data PATH`: the dataset reading PATH; tables default to a per-dimension Gaussian."""
    from vaekit.data.registry import dataset_for_path

    if args.dataset or args.data_path:
        raise ConfigError("give --data PATH, or --dataset with --data-path, not both")
    data = raw["data"]
    data["name"] = dataset_for_path(args.data)
    data["path"] = str(Path(args.data).resolve())  # the run works from any folder
    data.update(columns=None, center=None, scale=None)  # statistics of the new table
    if args.column:  # a CSV column of sequences, not a table of features
        data["name"] = "sequences"
    if data["name"] == "csv" and args.likelihood is None:
        raw["model"]["likelihood"] = "gaussian-perdim"


def sequence_defaults(raw: dict, args: argparse.Namespace) -> None:
    """Sequence data trains model seqvae unless another model is asked for, with the
    seqvae's own default sizes where no flag, preset or config names them."""
    from vaekit.data.sequences import SEQUENCE_DATASETS
    from vaekit.models.seqvae import DEFAULT_SIZES

    sequences = raw["data"]["name"] in SEQUENCE_DATASETS
    if sequences and args.model is None and raw["model"]["name"] == "vae":
        raw["model"]["name"] = "seqvae"
    if raw["model"]["name"] == "seqvae" and not (args.config or args.preset):
        for key, value in DEFAULT_SIZES.items():
            if getattr(args, key) is None:
                raw["model"][key] = value


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from vaekit.cli.args import written_since
    from vaekit.training.fit import train

    started = time.time()

    if args.resume:
        extendable = ("epochs", "time_budget", "steps", "early_stop")
        given = [f for f in TRAIN_OVERRIDES if f not in extendable and getattr(args, f) is not None]
        if args.config or args.preset or args.out or given:
            raise ConfigError(
                "--resume continues a run with its own config; only --epochs, --time-budget, "
                "--steps and --early-stop may change"
            )
        config = None
        if any(getattr(args, f) is not None for f in extendable):
            from vaekit.config.runs import RunFolder

            config = RunFolder(args.resume).load_config()
            for flag in extendable:
                section, key = TRAIN_OVERRIDES[flag]
                if getattr(args, flag) is not None:
                    setattr(config.train, key, getattr(args, flag))
        run = train(config, resume=args.resume, progress=not args.quiet)
    else:
        config = build_train_config(args)
        run = train(config, run_dir=args.out, progress=not args.quiet)
    if run.rank != 0:  # under torchrun, rank 0 reports
        return 0
    print(final_line(run.final, run.config.model.likelihood, run.config.data.kind or "image"))
    if "warning" in run.final:
        print(f"warning: {run.final['warning']}")
    print(f"run folder: {run.path}  ({', '.join(written_since(run.path, started))})")
    if args.report:
        from vaekit.apps.report import write_report

        print(f"report: {write_report(run.path)}")
    return 0


def final_line(final: dict, likelihood: str, kind: str = "image") -> str:
    """The run's headline number: test -ELBO, or the reconstruction error of AE and PCA;
    nats per image and bits/dim for images, nats per example for tables."""
    if "test_neg_elbo" not in final:
        return (
            f"test reconstruction MSE {final['test_mse']:.5f} per pixel on [0,1] intensities "
            f"(no ELBO for this model) after {final['epoch']} epochs"
        )
    discrete = likelihood in ("bernoulli", "discretized-logistic")  # probabilities, not densities
    density = "" if discrete else f", {likelihood} log-density"
    terms = f"reconstruction {final['test_recon']:.2f} + KL {final['test_kl']:.2f}"
    if kind == "sequence":
        return (
            f"test -ELBO {final['test_neg_elbo']:.2f} nats per sequence ({terms}; "
            f"{final['test_nats_per_token']:.4f} nats per token) after {final['epoch']} epochs"
        )
    if kind != "image":
        return (
            f"test -ELBO {final['test_neg_elbo']:.2f} nats per example ({terms}{density}) "
            f"after {final['epoch']} epochs"
        )
    return (
        f"test -ELBO {final['test_neg_elbo']:.2f} nats per image ({terms}; "
        f"{final['test_bits_per_dim']:.4f} bits/dim{density}) after {final['epoch']} epochs"
    )
