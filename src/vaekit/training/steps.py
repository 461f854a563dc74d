"""Hand-written gradients for the most common model: an MLP Gaussian VAE with a Bernoulli
likelihood, trained on the ELBO in fp32.

The Trainer uses this in place of autograd when it applies (`manual_step` says when;
`train.step = "autograd"` turns it off). It computes exactly what autograd computes: the same
loss terms, the same noise draws (so a seed gives the same run), gradients equal to
rounding. It is faster because it runs fewer, larger kernels: no autograd graph, bias and
ReLU folded into the GEMMs' neighbours, the Bernoulli gradient as sigmoid(logits) - x.

Backward of the loss L = mean_b [BCE(logits_b, x_b) + beta * KL_b]:
  dL/dlogits = (sigmoid(logits) - x) / B
  dL/dz_mean = dL/dz + beta * z_mean / B
  dL/dz_log_var = dL/dz * eps * std / 2 + beta * (exp(z_log_var) - 1) / (2 B)
and through each Linear layer y = h W^T + b: dW = g^T h, db = sum_b g, dh = g W (masked by
h > 0 where h is a ReLU output).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vaekit.core.noise import randn_batch
from vaekit.models.base import GaussianVAE, LossTerms, gaussian_kl
from vaekit.nn.mlp import MLPDecoder, MLPEncoder

_threshold_backward = torch.ops.aten.threshold_backward  # g * (h > 0): ReLU's backward


def _linear_layers(body: nn.Sequential, last: nn.Linear) -> list[nn.Linear] | None:
    """The Linear layers of a Linear-ReLU body followed by `last`, or None for another body."""
    layers = list(body)
    pairs = zip(layers[0::2], layers[1::2])
    if len(layers) % 2 or not all(type(a) is nn.Linear and type(b) is nn.ReLU for a, b in pairs):
        return None
    return [*layers[0::2], last]


def manual_step(
    model: nn.Module, train_config: Any, precision: str = "fp32", parallel: bool = False
) -> ManualStep | None:
    """The hand-written step for `model` under these training settings (`precision`: the
    resolved one), or None when autograd must do it (another model, likelihood, objective or
    precision; hooks; frozen weights; DDP)."""
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
        or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        or not all(p.requires_grad for p in model.parameters())
    ):
        return None
    encoder = _linear_layers(model.encoder.body, model.encoder.head)
    decoder = _linear_layers(model.decoder.body, model.decoder.out)
    if encoder is None or decoder is None:
        return None
    return ManualStep(model, encoder, decoder)


class ManualStep:
    """forward(x, beta) -> LossTerms, then backward() sets every parameter's .grad (replacing
    what was there, as after zero_grad and autograd's backward)."""

    def __init__(self, model: GaussianVAE, encoder: list[nn.Linear], decoder: list[nn.Linear]):
        self.model = model
        self.encoder, self.decoder = encoder, decoder
        self.saved: dict[str, Any] | None = None

    @torch.no_grad()
    def forward(self, x: torch.Tensor, beta: float) -> LossTerms:
        batch = x.shape[0]
        target = x.reshape(batch, -1)  # (B, D)
        stats, encoder_inputs = _mlp_forward(self.encoder, target)  # (B, 2Z)
        z_mean, z_log_var = stats.chunk(2, dim=1)
        std = torch.exp(0.5 * z_log_var)
        eps = randn_batch(z_mean.shape, 0, None, z_mean.device, z_mean.dtype)
        z = torch.addcmul(z_mean, std, eps)
        logits, decoder_inputs = _mlp_forward(self.decoder, z)  # (B, D)
        recon = self.model.likelihood.nll_sum(logits, target) / batch
        kl = gaussian_kl(z_mean, z_log_var).sum() / batch
        var = std * std  # exp(z_log_var), for the backward
        self.saved = dict(
            target=target, logits=logits, z_mean=z_mean, std=std, var=var, eps=eps, beta=beta,
            encoder_inputs=encoder_inputs, decoder_inputs=decoder_inputs,
        )  # fmt: skip
        return LossTerms(loss=recon + beta * kl, recon=recon, kl=kl)

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


def _mlp_forward(
    layers: list[nn.Linear], h: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Linear layers with ReLU between them (none after the last); also each layer's input."""
    inputs = []
    for i, layer in enumerate(layers):
        inputs.append(h)
        h = torch.addmm(layer.bias, h, layer.weight.t())
        if i < len(layers) - 1:
            h = h.relu_()
    return h, inputs


def _mlp_backward(
    layers: list[nn.Linear], inputs: list[torch.Tensor], g: torch.Tensor, need_input: bool
) -> torch.Tensor | None:
    """Set each layer's weight and bias gradients from the output gradient g; return the
    gradient with respect to the first layer's input when `need_input`."""
    for i in range(len(layers) - 1, -1, -1):
        layer, h = layers[i], inputs[i]
        layer.weight.grad = g.t().mm(h)
        layer.bias.grad = g.sum(0)
        if i > 0:
            g = _threshold_backward(g.mm(layer.weight), h, 0)  # h is a ReLU output
        elif need_input:
            return g.mm(layer.weight)
    return None
