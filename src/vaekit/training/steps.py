"""A training step's gradients behind one interface, `Step`: `forward(x, y, beta)` gives the
batch's loss terms, then `backward()` sets every parameter's .grad. `choose_step` picks the
step the Trainer runs:

- `AutogradStep`: the model's own `loss`, differentiated by autograd; every model.
- `ManualStep`: hand-written gradients for the most common model, an MLP Gaussian VAE with
  a Bernoulli likelihood trained on the ELBO in fp32 (`manual_step` says when it applies;
  `train.step = "autograd"` turns it off), behind `FallbackStep`, which hands over to
  autograd with one warning line if it ever raises.

The hand-written step computes exactly what autograd computes: the same loss terms, the same
noise draws (so a seed gives the same run), gradients equal to rounding. It is faster because
it runs fewer, larger kernels: no autograd graph, bias and ReLU folded into the GEMMs'
neighbours, the Bernoulli gradient as sigmoid(logits) - x.

Backward of the loss L = mean_b [BCE(logits_b, x_b) + beta * KL_b]:
  dL/dlogits = (sigmoid(logits) - x) / B
  dL/dz_mean = dL/dz + beta * z_mean / B
  dL/dz_log_var = dL/dz * eps * std / 2 + beta * (exp(z_log_var) - 1) / (2 B)
and through each Linear layer y = h W^T + b: dW = g^T h, db = sum_b g, dh = g W (masked by
h > 0 where h is a ReLU output).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vaekit.config.schema import TrainConfig
from vaekit.core.noise import randn_batch
from vaekit.models.base import GaussianVAE, LossTerms, gaussian_kl
from vaekit.nn.mlp import MLPDecoder, MLPEncoder


class Step:
    """One training step's gradients: `forward` returns the batch's loss terms, then
    `backward` sets the .grad of every parameter the loss depends on, replacing what was
    there (the Trainer then clips and steps the optimiser)."""

    name = "step"

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, beta: float) -> LossTerms:
        raise NotImplementedError

    def backward(self) -> None:
        raise NotImplementedError


class Objective(nn.Module):
    """The model's training loss as a forward pass, which DistributedDataParallel wraps.

    `options` (free bits, IWAE samples) go to `model.loss` as keywords, and so do the
    labels of a model that needs them."""

    def __init__(self, model: nn.Module, options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.options = options or {}

    def forward(self, x: torch.Tensor, beta: float, y: torch.Tensor | None = None) -> LossTerms:
        labels = {} if y is None else {"y": y}
        return self.model.loss(x, beta, **self.options, **labels)


def objective_for(
    model: nn.Module, options: dict[str, Any], device: torch.device, parallel: bool
) -> nn.Module:
    """The model's Objective; under torchrun wrapped in DistributedDataParallel, which
    averages the gradients over the processes."""
    objective = Objective(model, options)
    if not parallel:
        return objective
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=device_ids)


class AutogradStep(Step):
    """The objective's loss differentiated by autograd, scaled by `scaler` first (a no-op
    unless fp16)."""

    name = "autograd"

    def __init__(
        self,
        objective: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
    ) -> None:
        self.objective, self.optimizer, self.scaler = objective, optimizer, scaler
        self.loss: torch.Tensor | None = None  # the forward's loss, until its backward

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, beta: float) -> LossTerms:
        terms = self.objective(x, beta, y)
        self.loss = terms.loss
        return terms

    def backward(self) -> None:
        if self.loss is None:
            raise RuntimeError("AutogradStep.backward needs a forward first")
        loss, self.loss = self.loss, None
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()


class FallbackStep(Step):
    """`fast` until one of its steps raises; from then on `autograd`, after one warning line.
    The failed step is redone by autograd on the same batch and the same noise draws (the
    RNG states are restored), inside `forward_context` (the Trainer's autocast and batch
    sharding) when it was the backward that failed."""

    def __init__(
        self,
        fast: Step,
        autograd: AutogradStep,
        forward_context: Callable[[], AbstractContextManager],
    ) -> None:
        self.fast: Step | None = fast
        self.autograd, self.forward_context = autograd, forward_context
        self.inputs: tuple | None = None  # x, y, beta and the RNG states of this step

    @property
    def name(self) -> str:
        return (self.fast or self.autograd).name

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, beta: float) -> LossTerms:
        if self.fast is None:
            return self.autograd.forward(x, y, beta)
        self.inputs = (x, y, beta, rng_states(x.device))
        try:
            return self.fast.forward(x, y, beta)
        except Exception as error:
            self.fall_back(error)
            return self.redo_forward()

    def backward(self) -> None:
        if self.fast is not None:
            if self.inputs is None:
                raise RuntimeError("FallbackStep.backward needs a forward first")
            try:
                self.fast.backward()
                self.inputs = None
                return
            except Exception as error:
                self.fall_back(error)
                with self.forward_context():
                    self.redo_forward()
        self.autograd.backward()

    def fall_back(self, error: Exception) -> None:
        """Give up the fast step for the rest of the run, saying so on one line."""
        name, self.fast = self.fast.name, None
        reason = (str(error).splitlines() or [""])[0]
        tqdm.write(
            f"warning: the {name} training step failed ({type(error).__name__}: {reason}); "
            "training continues with autograd",
            file=sys.stderr,
        )

    def redo_forward(self) -> LossTerms:
        """Autograd's forward on this step's batch, from this step's RNG states."""
        x, y, beta, rng = self.inputs
        self.inputs = None
        set_rng_states(rng, x.device)
        return self.autograd.forward(x, y, beta)


def rng_states(device: torch.device) -> tuple[torch.Tensor, ...]:
    """The states of the generators a step on `device` draws from."""
    if device.type == "cuda":
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    return (torch.get_rng_state(),)


def set_rng_states(states: tuple[torch.Tensor, ...], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)


def choose_step(
    model: nn.Module,
    train_config: TrainConfig,
    precision: str,
    parallel: bool,
    autograd: AutogradStep,
    forward_context: Callable[[], AbstractContextManager],
) -> Step:
    """The step the Trainer runs: the hand-written one where it applies (handing over to
    `autograd` if it ever raises), else `autograd`."""
    manual = manual_step(model, train_config, precision, parallel)
    if manual is None:
        return autograd
    return FallbackStep(manual, autograd, forward_context)


def _linear_layers(body: nn.Sequential, last: nn.Linear) -> list[nn.Linear] | None:
    """The Linear layers of a Linear-ReLU body followed by `last`, or None for another body."""
    layers = list(body)
    pairs = zip(layers[0::2], layers[1::2])
    if len(layers) % 2 or not all(type(a) is nn.Linear and type(b) is nn.ReLU for a, b in pairs):
        return None
    return [*layers[0::2], last]


def manual_step(
    model: nn.Module,
    train_config: TrainConfig,
    precision: str = "fp32",
    parallel: bool = False,
) -> ManualStep | None:
    """The hand-written step for `model` under these training settings (`precision`: the
    resolved one), or None when autograd must do it (another model, likelihood, objective or
    precision; frozen weights; DDP).

    The hand-written step does not run the modules' forward hooks. vaekit's own hook, the
    denoising corruption, is excluded through `cfg.denoise`; hooks a user registers on the
    model need `train.step = "autograd"` (torch has no public way to list them)."""
    cfg = train_config
    if (
        cfg.step != "auto"
        or parallel
        or type(model) is not GaussianVAE
        or type(model.encoder) is not MLPEncoder
        or type(model.decoder) is not MLPDecoder
        or model.encoder.heads != 2
        or model.likelihood.name != "bernoulli"
        or cfg.free_bits > 0
        or cfg.iw_k > 1
        or cfg.denoise
        or precision != "fp32"
        or not all(p.requires_grad for p in model.parameters())
    ):
        return None
    encoder = _linear_layers(model.encoder.body, model.encoder.head)
    decoder = _linear_layers(model.decoder.body, model.decoder.out)
    if encoder is None or decoder is None:
        return None
    return ManualStep(model, encoder, decoder)


class ManualStep(Step):
    """The hand-written gradients of an MLP Gaussian VAE with a Bernoulli likelihood; `y` is
    not used. backward() sets every parameter's .grad (nothing to zero first)."""

    name = "hand-written"

    def __init__(self, model: GaussianVAE, encoder: list[nn.Linear], decoder: list[nn.Linear]):
        self.model = model
        self.encoder, self.decoder = encoder, decoder
        self.saved: dict[str, Any] | None = None
        self.outputs: dict[tuple, torch.Tensor] = {}  # the layers' outputs, reused every step

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor | None, beta: float) -> LossTerms:
        batch = x.shape[0]
        target = x.reshape(batch, -1)  # (B, D)
        stats, encoder_inputs = self.mlp_forward("encoder", self.encoder, target)  # (B, 2Z)
        z_mean, z_log_var = stats.chunk(2, dim=1)
        std = torch.exp(0.5 * z_log_var)
        eps = randn_batch(z_mean.shape, 0, None, z_mean.device, z_mean.dtype)
        z = torch.addcmul(z_mean, std, eps)
        logits, decoder_inputs = self.mlp_forward("decoder", self.decoder, z)  # (B, D)
        recon = self.model.likelihood.nll_sum(logits, target) / batch
        kl = gaussian_kl(z_mean, z_log_var).sum() / batch
        var = std * std  # exp(z_log_var), for the backward
        self.saved = dict(
            target=target, logits=logits, z_mean=z_mean, std=std, var=var, eps=eps, beta=beta,
            encoder_inputs=encoder_inputs, decoder_inputs=decoder_inputs,
        )  # fmt: skip
        return LossTerms(loss=recon + beta * kl, recon=recon, kl=kl)

    def mlp_forward(
        self, name: str, layers: list[nn.Linear], h: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Linear layers with ReLU between them (none after the last); also each layer's
        input. Each layer writes into the tensor it wrote in the previous step of this batch
        size (the backward has used it by then): no fresh memory every step."""
        inputs = []
        for i, layer in enumerate(layers):
            inputs.append(h)
            shape = (h.shape[0], layer.out_features)
            out = self.outputs.get((name, i, shape))
            if out is None:
                out = self.outputs[(name, i, shape)] = h.new_empty(shape)
            h = torch.addmm(layer.bias, h, layer.weight.t(), out=out)
            if i < len(layers) - 1:
                h = h.relu_()
        return h, inputs

    @torch.no_grad()
    def backward(self) -> None:
        if self.saved is None:
            raise RuntimeError("ManualStep.backward needs a forward first")
        s, self.saved = self.saved, None
        batch = s["target"].shape[0]
        g_logits = torch.sigmoid(s["logits"]).sub_(s["target"]).mul_(1.0 / batch)
        g_z = _mlp_backward(self.decoder, s["decoder_inputs"], g_logits, need_input=True)
        c = s["beta"] / batch
        g_mean = torch.add(g_z, s["z_mean"], alpha=c)
        g_log_var = (g_z * s["eps"] * s["std"]).add_(s["var"], alpha=c).sub_(c).mul_(0.5)
        g_stats = torch.cat([g_mean, g_log_var], dim=1)
        _mlp_backward(self.encoder, s["encoder_inputs"], g_stats, need_input=False)


def set_grad(param: nn.Parameter, op: Callable[..., torch.Tensor], *args: Any) -> None:
    """param.grad = op(*args), written into the gradient tensor of the previous step when
    there is one: the same values without allocating (and page-faulting) a fresh block of
    memory every step."""
    if param.grad is None:
        param.grad = op(*args)
    else:
        op(*args, out=param.grad)


def _mlp_backward(
    layers: list[nn.Linear], inputs: list[torch.Tensor], g: torch.Tensor, need_input: bool
) -> torch.Tensor | None:
    """Set each layer's weight and bias gradients from the output gradient g; return the
    gradient with respect to the first layer's input when `need_input`."""
    for i in range(len(layers) - 1, -1, -1):
        layer, h = layers[i], inputs[i]
        set_grad(layer.weight, torch.mm, g.t(), h)
        set_grad(layer.bias, torch.sum, g, 0)
        if i > 0:
            g = g.mm(layer.weight).mul_(h.sign())  # ReLU's backward: h >= 0 is its output
        elif need_input:
            return g.mm(layer.weight)
    return None
