"""Training: the loop, checkpoints, resume, clean stops, and the run's final outputs.

The loop is plain PyTorch: batches are sliced from tensors already in memory, the model's
`loss(x, beta)` gives the objective (new objectives override it), Adam steps. Everything a
resumed run needs (weights, optimizer moments, RNG state, position inside the epoch and the
running sums of the epoch's metrics) is in one safetensors checkpoint, so a run stopped at
any step and resumed gives the same numbers as one that never stopped.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from . import plots
from .config import RunConfig
from .data import BatchIterator, Dataset, DataSplits, load_data
from .errors import RunError, TrainingDiverged, VaekitError
from .evaluate import collapse_warning, evaluate_elbo
from .models import build_model
from .runs import (
    RunFolder,
    flatten_optimizer,
    load_tensors,
    load_weights_into,
    save_tensors,
    save_weights,
    unflatten_optimizer,
)


class Interrupted(VaekitError):
    """Training was stopped by Ctrl-C or SIGTERM after saving a checkpoint."""

    exit_code = 130


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # batches done in the current epoch
    global_step: int = 0
    train_seconds: float = 0.0
    epoch_sums: dict[str, float] = field(default_factory=dict)  # running sums this epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch


@dataclass
class Run:
    """What `vaekit.train` returns: the folder, the trained model and the per-epoch metrics."""

    path: Path
    config: RunConfig
    model: nn.Module
    history: list[dict[str, Any]]

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VaekitError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def binarize_fixed(data: Dataset, seed: int) -> Dataset:
    """Bernoulli draws made once with a fixed seed (the evaluation set for dynamic binarisation)."""
    generator = torch.Generator().manual_seed(seed)
    return Dataset(torch.bernoulli(data.x, generator=generator), data.y, data.name)


@contextmanager
def stop_requests():
    """Turn the first Ctrl-C / SIGTERM into a flag checked between steps (a second Ctrl-C
    interrupts at once). Outside the main thread, signals are left alone."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """Fits a model to `data` according to `config.train`, writing into `run` (if given)."""

    def __init__(
        self,
        config: RunConfig,
        model: nn.Module,
        data: DataSplits,
        run: RunFolder | None = None,
        progress: bool = True,
        device: torch.device | None = None,
    ) -> None:
        self.config, self.cfg = config, config.train
        self.device = device or pick_device(self.cfg.device)
        self.model = model.to(self.device)
        self.run = run
        self.progress = progress
        self.train_x = data.train.x.to(self.device)
        self.test_set = data.test
        if config.data.binarize == "dynamic":
            self.test_set = binarize_fixed(data.test, seed=12345)
        self.optimizer = make_optimizer(self.model, self.cfg.lr, self.device)
        self.state = TrainState()
        self.batches = BatchIterator(self.train_x, None, self.cfg.batch_size, seed=self.cfg.seed)

    def autocast(self):
        """bf16 autocast for the networks when asked for; the model keeps its sums in fp32."""
        enabled = self.cfg.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # --- schedule ---------------------------------------------------------------------
    def beta_at(self, step: int) -> float:
        """KL weight: ramps linearly from 0 to beta over the warm-up epochs."""
        warmup_steps = self.cfg.kl_warmup_epochs * len(self.batches)
        if warmup_steps == 0:
            return self.cfg.beta
        return self.cfg.beta * min(1.0, (step + 1) / warmup_steps)

    # --- checkpoints ------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.run is None:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_tensors, optim_meta = flatten_optimizer(self.optimizer.state_dict())
        tensors.update(optim_tensors)
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"kind": "checkpoint", "state": asdict(self.state), "optimizer": optim_meta}
        save_tensors(self.run.checkpoint_path, tensors, meta)

    def load_checkpoint(self) -> None:
        path = self.run.checkpoint_path
        tensors, meta = load_tensors(path)
        if meta.get("kind") != "checkpoint":
            raise RunError(f"{path}: not a vaekit training checkpoint")
        model_tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        load_weights_into(self.model, model_tensors, path)
        try:
            self.optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
        except (KeyError, ValueError) as err:
            raise RunError(f"{path}: optimizer state does not match the model ({err})") from None
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.state = TrainState(**meta["state"])

    # --- the loop ---------------------------------------------------------------------
    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        if self.config.data.binarize == "dynamic":
            x = torch.bernoulli(x)
        with self.autocast():
            terms = self.model.loss(x, self.beta_at(self.state.global_step))
        loss = terms.loss.item()
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} at epoch {self.state.epoch + 1}, step "
                f"{self.state.step_in_epoch + 1}; the last good checkpoint is kept. "
                "Try a lower learning rate (--lr)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        self.optimizer.step()
        return {"loss": loss, "recon": terms.recon.item(), "kl": terms.kl.item()}

    def fit(self) -> list[dict[str, Any]]:
        state, steps = self.state, len(self.batches)
        self.model.train()
        with stop_requests() as stop:
            while state.epoch < self.cfg.epochs:
                bar = tqdm(
                    total=steps,
                    initial=state.step_in_epoch,
                    desc=f"epoch {state.epoch + 1}/{self.cfg.epochs}",
                    disable=not self.progress,
                    leave=False,
                    dynamic_ncols=True,
                    mininterval=0.1 if sys.stderr.isatty() else 5.0,
                    file=sys.stderr,
                )
                started = time.perf_counter()
                for x, _ in self.batches.epoch(state.epoch, state.step_in_epoch):
                    values = self.train_step(x)
                    sums = state.epoch_sums
                    sums["n"] = sums.get("n", 0.0) + len(x)
                    for key, value in values.items():
                        sums[key] = sums.get(key, 0.0) + value * len(x)
                    state.step_in_epoch += 1
                    state.global_step += 1
                    bar.update(1)
                    if state.step_in_epoch % 25 == 0:
                        bar.set_postfix(
                            loss=f"{sums['loss'] / sums['n']:.2f}",
                            recon=f"{sums['recon'] / sums['n']:.2f}",
                            kl=f"{sums['kl'] / sums['n']:.2f}",
                        )
                    every = self.cfg.checkpoint_every_steps
                    if stop["stop"] or (every and state.global_step % every == 0):
                        state.train_seconds += time.perf_counter() - started
                        started = time.perf_counter()
                        self.save_checkpoint()
                        if stop["stop"]:
                            bar.close()
                            raise Interrupted(self.interrupted_message())
                state.train_seconds += time.perf_counter() - started
                bar.close()
                self.end_epoch()
        return state.history

    def end_epoch(self) -> None:
        state = self.state
        sums = state.epoch_sums
        test = evaluate_elbo(self.model, self.test_set, self.cfg.eval_batch_size)
        row = {
            "epoch": state.epoch + 1,
            "step": state.global_step,
            "beta": self.beta_at(state.global_step - 1),
            "train_loss": sums["loss"] / sums["n"],
            "train_recon": sums["recon"] / sums["n"],
            "train_kl": sums["kl"] / sums["n"],
            "train_neg_elbo": (sums["recon"] + sums["kl"]) / sums["n"],
            "test_neg_elbo": test["neg_elbo"],
            "test_recon": test["recon"],
            "test_kl": test["kl"],
            "test_bits_per_dim": test["bits_per_dim"],
            "active_units": test["active_units"],
            "train_seconds": state.train_seconds,
        }
        warning = collapse_warning(test)
        if warning:
            row["warning"] = warning
        state.history.append(row)
        state.epoch += 1
        state.step_in_epoch = 0
        state.epoch_sums = {}
        self.save_checkpoint()
        if self.run is not None:
            self.run.write_metrics(state.history)
        if self.progress:
            tqdm.write(format_epoch(row, self.cfg.epochs), file=sys.stderr)
            if warning:
                tqdm.write(f"warning: {warning}", file=sys.stderr)

    def interrupted_message(self) -> str:
        where = f"epoch {self.state.epoch + 1}, step {self.state.step_in_epoch}"
        if self.run is None:
            return f"interrupted at {where}"
        return f"interrupted at {where}; checkpoint saved. Continue with: vaekit train --resume {self.run.path}"


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam; the fused kernel (one pass over all parameters) where this torch has it."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def format_epoch(row: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}  train -ELBO {row['train_neg_elbo']:.2f}  "
        f"test -ELBO {row['test_neg_elbo']:.2f} (recon {row['test_recon']:.2f}, "
        f"KL {row['test_kl']:.2f}) nats  active units {row['active_units']}"
    )


def write_outputs(run: RunFolder, model: nn.Module, data: DataSplits, history: list[dict]) -> None:
    """The pictures every run leaves: samples, reconstructions, latent plot, loss curves."""
    model.eval()
    device = next(model.parameters()).device
    n_samples = run.load_config().n_samples
    generator = torch.Generator(device=device).manual_seed(0)
    plots.save_grid(model.sample(n_samples, generator=generator), run.file("samples.png"))
    originals = data.test.x[:32].to(device)
    plots.save_reconstructions(
        originals, model.reconstruct(originals), run.file("reconstructions.png")
    )
    subset = data.test.head(5000)
    with torch.no_grad():
        z_mean = torch.cat(
            [
                model.encode(x.to(device))[0]
                for x, _ in BatchIterator(subset.x, None, 1000, shuffle=False)
            ]
        )
    plots.save_latent_scatter(z_mean, subset.y, run.file("latent.png"), data.classes)
    if history:
        plots.save_loss_curves(history, run.file("loss_curves.png"))


def unique_run_dir(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, ... so that an existing run is never overwritten."""
    if not base.exists():
        return base
    k = 2
    while base.with_name(f"{base.name}-{k}").exists():
        k += 1
    return base.with_name(f"{base.name}-{k}")


def train(
    config: RunConfig | dict | str | Path | None = None,
    run_dir: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    outputs: bool = True,
    data: DataSplits | None = None,
) -> Run:
    """Train a model and return the Run.

    `config`: a RunConfig, a dict, or a path to a config.json (default: the reference VAE).
    `run_dir`: where to write (default runs/<config.name>, suffixed -2, -3... if taken).
    `resume`: a run folder to continue from its last checkpoint (its own config is used).
    """
    if resume is not None:
        run = RunFolder(resume).require()
        config = run.load_config() if config is None else _as_config(config)
        if not run.checkpoint_path.exists():
            raise RunError(f"{run.path}: no checkpoint to resume from")
    else:
        config = _as_config(config)
        base = Path(run_dir) if run_dir is not None else Path("runs") / config.name
        if run_dir is not None and base.exists() and any(base.iterdir()):
            raise RunError(
                f"{base}: already exists and is not empty (use --resume {base} to continue it)"
            )
        run = RunFolder(base if run_dir is not None else unique_run_dir(base))
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    data = data or load_data(config.data)
    if config.data.shape is not None and tuple(config.data.shape) != data.shape:
        raise RunError(
            f"data shape {data.shape} differs from the config's {tuple(config.data.shape)}"
        )
    config.data.shape = list(data.shape)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.shape)
    trainer = Trainer(config, model, data, run, progress=progress)
    if resume is not None:
        trainer.load_checkpoint()
    else:
        run.path.mkdir(parents=True, exist_ok=True)
    run.save_config(config)
    history = trainer.fit()
    save_weights(run.weights_path, trainer.model)
    if outputs:
        write_outputs(run, trainer.model, data, history)
    return Run(run.path, config, trainer.model.eval(), history)


def _as_config(config: RunConfig | dict | str | Path | None) -> RunConfig:
    if config is None:
        return RunConfig().validate()
    if isinstance(config, RunConfig):
        return config.validate()
    if isinstance(config, dict):
        return RunConfig.from_dict(config)
    return RunConfig.load(config)


def load(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    """The trained model of a run folder, in eval mode (final weights, else the checkpoint's)."""
    run = RunFolder(run_dir).require()
    config = run.load_config()
    shape = tuple(config.data.shape) if config.data.shape else None
    if shape is None:
        raise RunError(f"{run.config_path}: the data shape is not recorded")
    model = build_model(config.model, shape)
    if run.weights_path.exists():
        tensors, _ = load_tensors(run.weights_path)
        source = run.weights_path
    elif run.checkpoint_path.exists():
        all_tensors, _ = load_tensors(run.checkpoint_path)
        tensors = {k[6:]: v for k, v in all_tensors.items() if k.startswith("model.")}
        source = run.checkpoint_path
    else:
        raise RunError(f"{run.path}: no weights (model.safetensors) and no checkpoint")
    load_weights_into(model, tensors, source)
    return model.to(pick_device(device)).eval()
