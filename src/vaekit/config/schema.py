"""Run configuration as dataclasses that round-trip to JSON.

A run folder holds `config.json`; `RunConfig.load(path)` followed by `vaekit.train`
repeats the run exactly (same seed, same data order, same numbers).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaekit.core.errors import ConfigError
from vaekit.core.files import FORMAT_VERSION, atomic_write_text, check_format_version, read_file

CONFIG_VERSION = FORMAT_VERSION  # config.json is versioned with its run folder (core/files.py)
MAX_CONFIG_BYTES = 1_000_000  # a config is a few kB: a larger file is not one
MAX_CONFIG_DEPTH = 32  # a config nests 3 levels (m1m2's features_model 4): deeper is not one
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
STEPS = ("auto", "autograd")
LR_SCHEDULES = ("constant", "cosine", "plateau")


@dataclass
class DataConfig:
    name: str = "mnist"  # registry name: mnist, fashion-mnist, ...
    path: str | None = None  # folder or file for datasets that are not built in
    binarize: str = "none"  # none | dynamic (fresh Bernoulli draws every batch)
    limit_train: int | None = None  # use only the first N training examples (quick tests)
    limit_test: int | None = None
    valid_size: int = 0  # hold out the last N training examples as a validation split
    shape: list[int] | None = None  # (C, H, W) or (D,) of one example; recorded at training
    kind: str | None = None  # image | table | sequence: what an example is; recorded when
    # training starts
    # own data (name folder | array | csv, path the folder or file; docs/own-data.md)
    test_fraction: float = 0.1  # data without a split of its own: seeded random test share
    split_seed: int = 0
    color: str = "auto"  # folder: auto (RGB if any image is in colour) | grayscale | rgb
    resize: list[int] | None = None  # folder: [height, width] every image is resized to
    # folder, .npy: auto (large data decoded once into a memory-mapped file under
    # $VAEKIT_CACHE/examples, data/cache.py) | on (always) | off (always in memory)
    cache: str = "auto"
    label_column: str | None = None  # csv: column of labels (not a feature)
    id_column: str | None = None  # csv: column of ids (not a feature)
    columns: list[str] | None = None  # csv: feature columns; recorded when training starts
    center: list[float] | None = None  # csv: training-split means; recorded when training starts
    scale: list[float] | None = None  # csv: training-split standard deviations; recorded too
    fingerprint: str | None = None  # memory (data given from Python): SHA-256 of its splits
    # sequences (data.name sequences | moses; docs/sequences.md): tokens char | selfies, the
    # most tokens a sequence may hold, the CSV column of sequences, and the token of each id,
    # recorded when training starts
    tokens: str = "char"
    max_length: int = 120
    sequence_column: str | None = None
    vocabulary: list[str] | None = None


@dataclass
class ModelConfig:
    name: str = "vae"  # registry name: vae, cvae, ae, pca, hvae, vamp, m2, m1m2
    arch: str = "mlp"  # mlp | conv | resnet
    hidden: list[int] = field(default_factory=lambda: [400])  # dense layers (may be [] for conv)
    latent_dim: int = 20
    likelihood: str = "bernoulli"  # bernoulli | gaussian (one learned variance) | gaussian-perdim
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv/resnet: stride-2 stages
    res_blocks: int = 2  # resnet: residual blocks per stage
    n_classes: int | None = None  # cvae, m2: label classes; recorded when training starts
    # m2 (semi-supervised): labelled examples kept (0: the data's own, -1 = unknown), the
    # classifier loss weight, repeats of the labelled examples per epoch (0: about 10%)
    labeled: int = 0
    alpha: float = 50.0
    label_repeat: int = 0
    classifier_hidden: list[int] | None = None  # m2: q(y|x) layers (None: model.hidden)
    # m1m2: the run of a trained VAE (M1) whose latent space is M2's data; its model config,
    # recorded when training starts; whether M2 learns from samples of q(h|x) or its means
    features: str | None = None
    features_model: dict[str, Any] | None = None
    feature_samples: bool = True
    # hvae: latent layer sizes from the bottom (z_1, next to x) up; networks between them
    latent_layers: list[int] | None = None
    upper_hidden: list[int] = field(default_factory=lambda: [256])
    # p(z): "normal" N(0, I), or "vamp" (models vae, vamp and hvae's top layer): a mixture
    # of the posteriors of prior_components learned pseudo-inputs; model vamp implies it
    prior: str = "normal"
    prior_components: int = 500
    # seqvae (recurrent, docs/sequences.md): hidden = [encoder GRU size, decoder GRU layer
    # sizes...]; token embedding size; share of the decoder's input tokens replaced by <unk>
    # in training (Bowman et al. 2016); vocabulary size, recorded when training starts
    embedding_dim: int = 32
    word_dropout: float = 0.0
    vocab_size: int | None = None


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    beta: float = 1.0
    kl_warmup_epochs: int = 0  # beta ramps linearly from 0 to `beta` over this many epochs
    kl_warmup_steps: int = 0  # ... or over this many steps (for epochs longer than a run)
    kl_warmup_fraction: float = 0.0  # ... or over this fraction of the run: of its epochs,
    # or of --steps or the time budget where those end it sooner (as the lr schedules count)
    free_bits: float = 0.0  # nats: floor on each latent dimension's batch-mean KL in the loss
    iw_k: int = 1  # importance samples of the IWAE training objective (1: the ELBO)
    eval_batch_size: int = 1000
    length_buckets: bool = True  # sequence runs: batches of similar length (less padding)
    checkpoint_every_steps: int = 0  # 0: checkpoint at the end of every epoch only
    num_threads: int = 0  # 0: torch's default (one per physical core)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast the networks; losses in fp32) | auto
    # (auto: bf16 where the hardware computes it natively, else fp32)
    denoise: str | None = None  # noise like gaussian:0.3: encode corrupted inputs, score clean
    perturb: float = 0.0  # replace this share of the values by random 8-bit levels in every
    # batch (inputs and targets): trains a background model for the ratio anomaly score
    grad_clip: float = 0.0  # clip the gradients' global L2 norm to this (0: no clipping)
    weight_decay: float = 0.0  # decoupled weight decay (AdamW); 0: plain Adam
    lr_schedule: str = "constant"  # constant | cosine (decay to lr_min over the run) | plateau
    lr_min: float = 0.0  # cosine: the learning rate at the end of the run
    time_budget: float = 0.0  # seconds of training; the run ends cleanly there (0: no budget)
    max_steps: int = 0  # optimiser steps; the run ends cleanly there (0: no budget)
    lr_warmup_steps: int = 0  # the learning rate ramps linearly from 0 over this many steps
    # early stopping and lr plateau count evaluations (every eval_every epochs) in which the
    # validation -ELBO did not improve on the best; both need a validation split
    early_stop: int = 0  # stop after this many evaluations without improvement (0: never)
    lr_patience: int = 2  # lr_schedule plateau: evaluations without improvement before a cut
    lr_factor: float = 0.5  # lr_schedule plateau: the learning rate is multiplied by this
    keep_best: int = 1  # best.safetensors, plus RUN/best/epoch-N.safetensors for the k best
    eval_every: int = 1  # evaluate (validation and test) every N epochs, and at the end
    step: str = "auto"  # auto: hand-written gradients where they apply (training/steps.py)
    # | autograd (always autograd)
    tensorboard: bool = False  # also write TensorBoard event files in RUN/tensorboard/


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "vae-mnist"
    preset: str | None = None
    n_samples: int = 64  # prior samples drawn into samples.png
    format_version: int = FORMAT_VERSION  # the run-folder format (before 2: `version`)

    def validate(self) -> RunConfig:
        """Raise ConfigError naming the first out-of-range value."""
        _check(self.model.latent_dim >= 1, "model.latent_dim must be >= 1")
        _check(
            len(self.model.hidden) >= (self.model.arch == "mlp")
            and all(h >= 1 for h in self.model.hidden),
            "model.hidden must be a list of positive sizes (non-empty for arch mlp)",
        )
        _check(
            len(self.model.channels) >= 1 and all(c >= 1 for c in self.model.channels),
            "model.channels must be a non-empty list of positive sizes",
        )
        _check(self.model.res_blocks >= 0, "model.res_blocks must be >= 0")
        _check(
            self.model.n_classes is None or self.model.n_classes >= 2,
            "model.n_classes must be >= 2",
        )
        _check(
            self.model.likelihood == "bernoulli" or self.data.binarize == "none",
            "binarised data (data.binarize dynamic) needs model.likelihood bernoulli",
        )
        _check(
            self.model.latent_layers is None or all(size >= 1 for size in self.model.latent_layers),
            "model.latent_layers must be positive sizes",
        )
        _check(
            len(self.model.upper_hidden) >= 1 and min(self.model.upper_hidden) >= 1,
            "model.upper_hidden must be a non-empty list of positive sizes",
        )
        _check(self.model.labeled >= 0, "model.labeled must be >= 0")
        _check(self.model.label_repeat >= 0, "model.label_repeat must be >= 0")
        _check(
            math.isfinite(self.model.alpha) and self.model.alpha >= 0, "model.alpha must be >= 0"
        )
        _check(self.train.free_bits >= 0, "train.free_bits must be >= 0")
        _check(self.model.prior_components >= 1, "model.prior_components must be >= 1")
        _check(
            self.model.prior in ("normal", "vamp"),
            f"unknown model.prior {self.model.prior!r} (known: normal, vamp)",
        )
        vamp = self.model.name == "vamp" or self.model.prior == "vamp"
        _check(
            self.model.prior == "normal" or self.model.name in ("vae", "vamp", "hvae"),
            f"model {self.model.name} has a standard normal prior only (prior vamp: models "
            "vae, vamp and hvae)",
        )
        _check(
            not vamp or self.train.free_bits == 0,
            "train.free_bits needs a KL per latent dimension; the VampPrior has none",
        )
        _check(self.train.iw_k >= 1, "train.iw_k must be >= 1")
        _check(
            self.train.iw_k == 1 or self.train.free_bits == 0,
            "train.free_bits applies to the ELBO objective: use it with train.iw_k 1",
        )
        _check(self.train.epochs >= 1, "train.epochs must be >= 1")
        _check(self.train.batch_size >= 1, "train.batch_size must be >= 1")
        _check(self.train.eval_batch_size >= 1, "train.eval_batch_size must be >= 1")
        for key in ("lr", "beta", "free_bits", "grad_clip", "weight_decay"):
            _check(math.isfinite(getattr(self.train, key)), f"train.{key} must be finite")
        _check(self.train.lr > 0, "train.lr must be > 0")
        _check(self.train.grad_clip >= 0, "train.grad_clip must be >= 0 (0: no clipping)")
        _check(0 <= self.train.perturb < 1, "train.perturb must be in [0, 1)")
        _check(self.train.weight_decay >= 0, "train.weight_decay must be >= 0 (0: none)")
        _check(self.train.beta >= 0, "train.beta must be >= 0")
        _check(self.train.kl_warmup_epochs >= 0, "train.kl_warmup_epochs must be >= 0")
        _check(self.train.kl_warmup_steps >= 0, "train.kl_warmup_steps must be >= 0")
        _check(
            0 <= self.train.kl_warmup_fraction <= 1,
            "train.kl_warmup_fraction must be between 0 and 1",
        )
        _check(
            sum(
                bool(v)
                for v in (
                    self.train.kl_warmup_steps,
                    self.train.kl_warmup_epochs,
                    self.train.kl_warmup_fraction,
                )
            )
            <= 1,
            "give one of train.kl_warmup_epochs, kl_warmup_steps and kl_warmup_fraction",
        )
        _check(self.train.checkpoint_every_steps >= 0, "train.checkpoint_every_steps must be >= 0")
        _check(
            self.train.lr_schedule in LR_SCHEDULES,
            f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
            f"got {self.train.lr_schedule!r}",
        )
        _check(
            math.isfinite(self.train.lr_min) and 0 <= self.train.lr_min <= self.train.lr,
            "train.lr_min must be between 0 and train.lr",
        )
        _check(
            math.isfinite(self.train.time_budget) and self.train.time_budget >= 0,
            "train.time_budget must be >= 0 seconds (0: no budget)",
        )
        _check(self.train.eval_every >= 1, "train.eval_every must be >= 1")
        _check(self.train.max_steps >= 0, "train.max_steps must be >= 0 (0: no budget)")
        _check(self.train.lr_warmup_steps >= 0, "train.lr_warmup_steps must be >= 0")
        _check(self.train.early_stop >= 0, "train.early_stop must be >= 0 (0: never)")
        _check(self.train.lr_patience >= 1, "train.lr_patience must be >= 1")
        _check(
            math.isfinite(self.train.lr_factor) and 0 < self.train.lr_factor < 1,
            "train.lr_factor must be between 0 and 1",
        )
        _check(self.train.keep_best >= 1, "train.keep_best must be >= 1")
        _check(self.data.valid_size >= 0, "data.valid_size must be >= 0")
        _check(self.n_samples >= 1, "n_samples must be >= 1")
        _check(
            self.train.device == "auto"
            or self.train.device == "cpu"
            or self.train.device.startswith("cuda"),
            f"train.device must be auto, cpu, cuda or cuda:N, got {self.train.device!r}",
        )
        _check(
            self.train.precision in PRECISIONS,
            f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.train.precision!r}",
        )
        _check(
            self.train.step in STEPS,
            f"train.step must be one of {', '.join(STEPS)}, got {self.train.step!r}",
        )
        _check(self.data.binarize in ("none", "dynamic"), "data.binarize must be none or dynamic")
        _check(0 < self.data.test_fraction < 1, "data.test_fraction must be between 0 and 1")
        _check(
            self.data.name != "csv" or self.model.likelihood != "bernoulli",
            "tables (data.name csv) need a Gaussian likelihood: model.likelihood gaussian-perdim",
        )
        _check(
            self.data.shape is None
            or (len(self.data.shape) in (1, 3) and min(self.data.shape) >= 1),
            "data.shape must be three positive sizes (C, H, W) or one (D,)",
        )
        _check(
            self.data.kind in (None, "image", "table", "sequence"),
            "data.kind must be image, table or sequence",
        )
        self.validate_sequences()
        for limit in ("limit_train", "limit_test"):
            value = getattr(self.data, limit)
            _check(value is None or value >= 1, f"data.{limit} must be >= 1")
        _check(
            self.format_version <= FORMAT_VERSION,
            f"format_version {self.format_version} is newer than this vaekit reads "
            f"({FORMAT_VERSION}); upgrade vaekit",
        )
        return self

    def validate_sequences(self) -> None:
        """The options of sequence data and the seqvae model."""
        _check(self.data.tokens in ("char", "selfies"), "data.tokens must be char or selfies")
        _check(self.data.max_length >= 1, "data.max_length must be >= 1")
        _check(self.model.embedding_dim >= 1, "model.embedding_dim must be >= 1")
        _check(0 <= self.model.word_dropout < 1, "model.word_dropout must be in [0, 1)")
        _check(
            self.model.vocab_size is None or self.model.vocab_size >= 5,
            "model.vocab_size must be >= 5 (the 4 special tokens and one more)",
        )
        if self.model.name == "seqvae":
            _check(
                not (self.train.denoise or self.train.perturb or self.data.binarize != "none"),
                "model seqvae: denoising, perturbation and binarisation apply to images only",
            )
            _check(
                len(self.model.hidden) >= 1 and len(set(self.model.hidden[1:])) <= 1,
                "model seqvae: model.hidden is [encoder size, decoder layer sizes...] and the "
                "decoder's layers must be of one size, e.g. 256,512,512",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        """Check, migrate to the current format and build a config; errors name `source`."""
        config = build_dataclass(cls, migrate_config(raw, source), source)
        migrate_table_shape(config.data)
        try:
            return config.validate()
        except ConfigError as err:  # name the file the value came from
            if source == "config":
                raise
            raise ConfigError(f"{source}: {err}") from None

    def save(self, path: str | Path) -> None:

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        text = read_file(
            path, read_config_text, ConfigError, "a config file", "config file not found"
        )
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a config (nested too deeply)") from None
        return cls.from_dict(raw, source=str(path))


def read_config_text(path: Path) -> str:
    """The text of a config file, refusing a file too large to be one before reading it."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES and path.is_file():
        raise ConfigError(
            f"{path}: too large for a config file ({size} bytes; at most {MAX_CONFIG_BYTES})"
        )
    try:
        return path.read_text()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


def migrate_config(raw: Any, source: str) -> Any:
    """`raw` in the current format: format 1 (no `format_version`) called it `version`.
    A newer format is refused before its keys are read; so is nesting no config has."""
    if not isinstance(raw, dict):
        return raw  # build_dataclass says what it is
    if nesting_depth(raw) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"{source}: not a config (nested more than {MAX_CONFIG_DEPTH} levels)")
    raw = dict(raw)
    for key in ("version", "format_version"):  # `version`: its name in format 1
        check_format_version(raw.get(key, 1), Path(source), ConfigError, "config")
    raw.pop("version", None)
    return raw | {"format_version": FORMAT_VERSION}


def nesting_depth(value: Any) -> int:
    """How deeply lists and objects nest in a decoded JSON value (without recursion)."""
    depth, level = 0, [value]
    while True:
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            return depth
        depth += 1
        level = [item for v in containers for item in (v.values() if isinstance(v, dict) else v)]


def migrate_table_shape(data: DataConfig) -> None:
    """Runs written before tables had a kind recorded their rows as (1, 1, D) images:
    read them as tables of shape (D,)."""
    old_table = data.shape is not None and len(data.shape) == 3 and data.shape[:2] == [1, 1]
    if data.kind is None and data.name in ("csv", "array") and old_table:
        data.shape, data.kind = [data.shape[2]], "table"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def build_dataclass(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    kwargs = {key: _coerce(hints[key], value, f"{where}.{key}") for key, value in raw.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {hint}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
