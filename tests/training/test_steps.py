"""The hand-written training step (training/steps.py) computes what autograd computes, and
hands over to autograd if it ever fails."""

from __future__ import annotations

import pytest
import torch

import vaekit
from conftest import tiny_config
from vaekit.config import ModelConfig, RunConfig, TrainConfig
from vaekit.core.errors import ConfigError
from vaekit.models import build_model
from vaekit.training.denoising import add_denoising
from vaekit.training.steps import ManualStep, manual_step
from vaekit.training.trainer import Trainer

SHAPE = (1, 6, 5)


def model_and_step(train: TrainConfig | None = None, precision: str = "fp32", **model: object):
    torch.manual_seed(0)
    config = ModelConfig(**({"hidden": [24, 12], "latent_dim": 3} | model))
    vae = build_model(config, SHAPE)
    return vae, manual_step(vae, train or TrainConfig(), precision)


@pytest.mark.parametrize("hidden", [[24, 12], [16]])
def test_loss_and_gradients_equal_autograd(hidden):
    vae, step = model_and_step(hidden=hidden)
    assert step is not None
    x = torch.rand(40, *SHAPE)
    x[:5] = (x[:5] > 0.5).float()  # binary and grey-level targets alike
    beta = 0.7

    torch.manual_seed(3)  # the same noise draws for both
    terms = step.forward(x, None, beta)
    step.backward()
    manual = {name: p.grad.clone() for name, p in vae.named_parameters()}
    vae.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    expected = vae.loss(x, beta)
    expected.loss.backward()

    for field in ("loss", "recon", "kl"):
        assert getattr(terms, field).item() == pytest.approx(getattr(expected, field).item(), 1e-6)
    assert terms.kl.item() > 0.01  # the KL path carries gradient too
    for name, p in vae.named_parameters():
        assert p.grad.abs().max() > 0, name
        torch.testing.assert_close(manual[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_backward_needs_a_forward_and_replaces_old_gradients():
    """The Trainer skips zero_grad before this step's backward: stale gradients must go."""
    vae, step = model_and_step()
    with pytest.raises(RuntimeError, match="forward first"):
        step.backward()
    x = torch.rand(8, *SHAPE)
    torch.manual_seed(0)
    step.forward(x, None, 1.0)
    step.backward()
    once = {n: p.grad.clone() for n, p in vae.named_parameters()}
    for p in vae.parameters():
        p.grad = torch.full_like(p, 123.0)
    torch.manual_seed(0)
    step.forward(x, None, 1.0)
    step.backward()
    for n, p in vae.named_parameters():
        torch.testing.assert_close(p.grad, once[n])


@pytest.mark.parametrize(
    "train, model",
    [
        ({"step": "autograd"}, {}),
        ({"iw_k": 5}, {}),
        ({"free_bits": 0.1}, {}),
        ({}, {"likelihood": "gaussian"}),
        ({}, {"name": "cvae", "n_classes": 4}),
        ({}, {"name": "ae"}),
        ({}, {"arch": "conv", "hidden": []}),
        ({}, {"prior": "vamp"}),
    ],
)
def test_other_models_and_objectives_keep_autograd(train, model):
    _, step = model_and_step(TrainConfig(**train), **model)
    assert step is None


def test_mixed_precision_hooks_frozen_weights_and_ddp_keep_autograd():
    vae, _ = model_and_step()
    assert manual_step(vae, TrainConfig(precision="auto"), "fp32") is not None
    for precision in ("bf16", "fp16"):
        assert manual_step(vae, TrainConfig(precision="auto"), precision) is None
    assert manual_step(vae, TrainConfig(), "fp32", parallel=True) is None
    add_denoising(vae, "gaussian:0.3", torch.rand(10, *SHAPE))  # a forward pre-hook
    assert manual_step(vae, TrainConfig(denoise="gaussian:0.3"), "fp32") is None
    vae, _ = model_and_step()
    vae.decoder.out.bias.requires_grad_(False)
    assert manual_step(vae, TrainConfig(), "fp32") is None


def test_unknown_step_is_a_config_error():
    with pytest.raises(ConfigError, match="train.step must be one of auto, autograd"):
        tiny_config(step="fast").validate()


def test_trainer_uses_it_for_the_reference_vae(synth):
    config = RunConfig.from_dict(tiny_config().to_dict() | {"data": {"shape": [1, 8, 8]}})
    model = build_model(config.model, synth.shape)
    assert Trainer(config, model, synth, progress=False).step.name == "hand-written"
    config.train.step = "autograd"
    assert Trainer(config, model, synth, progress=False).step.name == "autograd"


@pytest.mark.parametrize(
    "binarize, train",
    [
        ("none", {"kl_warmup_epochs": 1, "lr_schedule": "cosine"}),
        ("dynamic", {"grad_clip": 1.0, "weight_decay": 0.01, "beta": 2.0}),
    ],
)
def test_a_run_is_the_same_run_with_either_step(synth, tmp_path, binarize, train):
    """Same seed, same noise draws: the metrics agree to rounding after 2 epochs."""
    runs = {}
    for step in ("auto", "autograd"):
        config = tiny_config(step=step, **train)
        config.data.binarize = binarize
        runs[step] = vaekit.train(
            config, tmp_path / step, progress=False, outputs=False, data=synth
        )
    fast, slow = runs["auto"].history, runs["autograd"].history
    assert len(fast) == len(slow) == 2
    for a, b in zip(fast, slow):
        for key in ("train_loss", "train_kl", "test_neg_elbo", "test_kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert fast[-1]["test_neg_elbo"] < fast[0]["test_neg_elbo"]


@pytest.mark.parametrize("failing", ["forward", "backward"])
def test_a_failing_step_hands_over_to_autograd_with_one_warning(
    synth, tmp_path, monkeypatch, capsys, failing
):
    """From the failed step on, the run is autograd's: same batch, same noise draws."""
    calls = {"n": 0}
    original = getattr(ManualStep, failing)

    def fails_at_the_third(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("no kernel for this\nsecond line")
        return original(self, *args)

    autograd = vaekit.train(
        tiny_config(step="autograd"), tmp_path / "a", progress=False, outputs=False, data=synth
    )
    capsys.readouterr()
    monkeypatch.setattr(ManualStep, failing, fails_at_the_third)
    handed = vaekit.train(tiny_config(), tmp_path / "h", progress=False, outputs=False, data=synth)
    err = capsys.readouterr().err
    assert calls["n"] == 3  # never tried again
    assert err.count("\n") == 1 and "hand-written training step failed" in err
    assert "no kernel for this" in err and "continues with autograd" in err
    for a, b in zip(autograd.history, handed.history, strict=True):
        for key in ("train_loss", "test_neg_elbo"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
