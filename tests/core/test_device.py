"""Devices and precision: `auto` precision follows the hardware's native bf16."""

from __future__ import annotations

import importlib

import torch

from conftest import tiny_config
from vaekit.models import build_model
from vaekit.training.trainer import Trainer


def test_auto_precision_follows_the_hardware(monkeypatch, synth):
    train_module = importlib.import_module("vaekit.core.device")

    cpu = torch.device("cpu")
    assert train_module.resolve_precision("fp32", cpu) == "fp32"
    assert train_module.resolve_precision("bf16", cpu) == "bf16"
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(train_module, "native_bf16", lambda device, native=native: native)
        assert train_module.resolve_precision("auto", cpu) == expected
        config = tiny_config(precision="auto", epochs=1, device="cpu")
        model = build_model(config.model, synth.shape)
        trainer = Trainer(config, model, synth, run=None, progress=False)
        assert trainer.precision == expected
        expected_dtype = torch.bfloat16 if expected == "bf16" else torch.float32
        with trainer.autocast():  # the networks run in the resolved precision
            assert model.encoder(synth.test.x[:4])[0].dtype == expected_dtype
