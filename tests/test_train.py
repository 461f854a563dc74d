"""Training runs: save/load, resume after interruption, config round trips, safe checkpoints."""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shutil
import signal
import struct
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import vaekit
from conftest import RUN_FILES, read_jsonl, tiny_config
from vaekit.config import RunConfig
from vaekit.config.schema import CONFIG_VERSION
from vaekit.core.errors import ConfigError, RunError
from vaekit.models import build_model
from vaekit.training.trainer import Interrupted, Trainer

TIMING_FIELDS = {"train_seconds"}


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


# --- the tiny run ---------------------------------------------------------------------------
def test_tiny_run_writes_a_complete_folder(tiny_run):
    for name in ("config.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl"):
        assert (tiny_run.path / name).is_file(), name
    for name in RUN_FILES:
        assert (tiny_run.path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    rows = read_jsonl(tiny_run.path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and rows == tiny_run.history
    assert rows[-1]["step"] == 16  # 256 examples / batch 32 = 8 steps per epoch
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]  # it learned something
    assert not any(p.name.endswith(".tmp") for p in tiny_run.path.iterdir())


# --- 5. save -> load ------------------------------------------------------------------------
def test_load_gives_identical_outputs(tiny_run, synth):
    loaded = vaekit.load(tiny_run.path)
    original = tiny_run.model.eval()
    assert not loaded.training
    x = synth.test.x[:20]
    with torch.no_grad():
        for a, b in zip(original.encode(x), loaded.encode(x)):
            assert torch.equal(a, b)
        z = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))
        assert torch.equal(original.decode(z), loaded.decode(z))
    s1 = original.sample(8, generator=torch.Generator().manual_seed(3))
    s2 = loaded.sample(8, generator=torch.Generator().manual_seed(3))
    assert s1.shape == (8, 1, 8, 8) and torch.equal(s1, s2)


def test_load_falls_back_to_the_checkpoint(tiny_run, tmp_path):
    copy = shutil.copytree(tiny_run.path, tmp_path / "copy")
    (copy / "model.safetensors").unlink()
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(vaekit.load(copy).decode(z), tiny_run.model.decode(z))


def test_load_rejects_missing_or_mismatched_runs(tiny_run, tmp_path):
    with pytest.raises(RunError, match="run folder not found"):
        vaekit.load(tmp_path / "absent")
    copy = shutil.copytree(tiny_run.path, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    config["model"]["latent_dim"] = 3
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="weights do not match the config"):
        vaekit.load(copy)


def test_refuses_to_overwrite_a_run(tiny_run, synth):
    before = (tiny_run.path / "metrics.jsonl").read_bytes()
    with pytest.raises(RunError, match="already exists"):
        vaekit.train(tiny_config(), tiny_run.path, progress=False, data=synth)
    assert (tiny_run.path / "metrics.jsonl").read_bytes() == before


# --- 6. resume and config round trip --------------------------------------------------------
def interrupt_after(monkeypatch, steps: int, how: str) -> None:
    """Make the trainer stop at its `steps`+1-th train_step: like Ctrl-C (SIGINT, the
    trainer saves a checkpoint and stops) or like a crash (nothing saved at that point)."""
    if how == "sigint" and threading.current_thread() is not threading.main_thread():
        pytest.skip("the trainer only handles SIGINT when it runs in the main thread")
    calls = {"n": 0}
    original = Trainer.train_step

    def train_step(self, x):
        calls["n"] += 1
        if calls["n"] > steps and how == "crash":
            raise KeyboardInterrupt
        result = original(self, x)
        if calls["n"] == steps and how == "sigint":
            os.kill(os.getpid(), signal.SIGINT)  # handled by the trainer's stop_requests
        return result

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.fixture(scope="module")
def uninterrupted(synth, tmp_path_factory):
    config = tiny_config(checkpoint_every_steps=3)
    path = tmp_path_factory.mktemp("resume") / "a"
    return vaekit.train(config, path, progress=False, outputs=False, data=synth)


@pytest.mark.parametrize(
    ("how", "steps", "resumes_at"),
    [("sigint", 5, 5), ("crash", 11, 9)],  # mid-epoch 1 / mid-epoch 2 (8 steps per epoch)
)
def test_resume_matches_an_uninterrupted_run(
    uninterrupted, synth, tmp_path, monkeypatch, how, steps, resumes_at
):
    config = tiny_config(checkpoint_every_steps=3)
    path = tmp_path / "b"
    with monkeypatch.context() as patch:
        interrupt_after(patch, steps, how)
        expected_error = Interrupted if how == "sigint" else KeyboardInterrupt
        with pytest.raises(expected_error):
            vaekit.train(config, path, progress=False, outputs=False, data=synth)
    checkpoint_meta = json.loads(
        safe_open(str(path / "checkpoint.safetensors"), "pt").metadata()["vaekit"]
    )
    assert checkpoint_meta["state"]["global_step"] == resumes_at
    assert not (path / "model.safetensors").exists()

    resumed = vaekit.train(resume=path, progress=False, outputs=False, data=synth)
    expected = without_timing(read_jsonl(uninterrupted.path / "metrics.jsonl"))
    assert without_timing(read_jsonl(path / "metrics.jsonl")) == expected
    assert without_timing(resumed.history) == expected
    assert_same_weights(path / "model.safetensors", uninterrupted.path / "model.safetensors")


def test_interrupt_message_says_how_to_resume(synth, tmp_path, monkeypatch):
    interrupt_after(monkeypatch, 2, "sigint")
    with pytest.raises(Interrupted, match=r"epoch 1, step 2.*--resume") as info:
        vaekit.train(tiny_config(), tmp_path / "c", progress=False, outputs=False, data=synth)
    assert info.value.exit_code == 130


def test_config_json_repeats_the_run(tiny_run, synth, tmp_path):
    config = RunConfig.load(tiny_run.path / "config.json")
    assert config.to_dict() == tiny_run.config.to_dict()
    again = vaekit.train(config, tmp_path / "again", progress=False, outputs=False, data=synth)
    assert without_timing(again.history) == without_timing(tiny_run.history)
    assert_same_weights(again.path / "model.safetensors", tiny_run.path / "model.safetensors")


def test_resume_rejects_data_of_another_shape(tiny_run, tmp_path):
    from conftest import synthetic_splits

    copy = shutil.copytree(tiny_run.path, tmp_path / "copy")
    other = synthetic_splits()
    other.train.x = other.train.x[:, :, :4, :4]
    with pytest.raises(RunError, match="shape"):
        vaekit.train(resume=copy, progress=False, outputs=False, data=other)


# --- 7. checkpoints are safetensors, pickles are refused ------------------------------------
class Payload:
    """Unpickling this creates the marker file (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_weights_and_checkpoints_are_safetensors(tiny_run):
    for name in ("model.safetensors", "checkpoint.safetensors"):
        raw = (tiny_run.path / name).read_bytes()
        (header_len,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + header_len])
        assert "__metadata__" in header and "vaekit" in header["__metadata__"]


@pytest.mark.parametrize("target", ["model.safetensors", "checkpoint.safetensors"])
def test_a_pickle_in_place_of_weights_is_refused_and_not_executed(
    tiny_run, synth, tmp_path, target
):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"state_dict": Payload(marker)})
    pickle.loads(evil)  # the payload works: loading it with pickle creates the marker
    assert marker.exists()
    marker.unlink()

    copy = shutil.copytree(tiny_run.path, tmp_path / "copy")
    (copy / target).write_bytes(evil)
    torch.save({"state_dict": Payload(marker)}, tmp_path / "evil.pt")  # torch's own format
    for evil_file in (None, tmp_path / "evil.pt"):
        if evil_file is not None:
            shutil.copy(evil_file, copy / target)
        with pytest.raises(RunError, match=f"{target}: not a readable safetensors file"):
            if target == "model.safetensors":
                vaekit.load(copy)
            else:
                vaekit.train(resume=copy, progress=False, outputs=False, data=synth)
    assert not marker.exists()


# --- 10. configuration ----------------------------------------------------------------------
def test_config_round_trips_through_dict_and_file(tmp_path):
    config = tiny_config(kl_warmup_epochs=2, beta=0.5)
    config.data.limit_train = 100
    config.data.shape = [1, 8, 8]
    assert RunConfig.from_dict(config.to_dict()) == config
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config
    assert RunConfig.from_dict(json.loads(json.dumps(RunConfig().to_dict()))) == RunConfig()


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"train": {"epochz": 3}}, "epochz"),
        ({"model": {"hidden": "400"}}, "model.hidden"),
        ({"model": {"hidden": [400, "x"]}}, "model.hidden[1]"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"epochs": True}}, "train.epochs"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"data": {"limit_train": "all"}}, "data.limit_train"),
        ({"train": "fast"}, "train"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"lr": -1.0}}, "train.lr"),
        ({"train": {"beta": -0.1}}, "train.beta"),
        ({"model": {"latent_dim": 0}}, "model.latent_dim"),
        ({"model": {"hidden": []}}, "model.hidden"),
        ({"data": {"binarize": "static"}}, "data.binarize"),
        ({"data": {"limit_test": 0}}, "data.limit_test"),
        ({"train": {"precision": "fp8"}}, "train.precision"),
        ({"train": {"device": "tpu"}}, "train.device"),
        ({"n_samples": 0}, "n_samples"),
    ],
)
def test_bad_config_values_name_the_key(patch, key):
    raw = RunConfig().to_dict()
    for section, value in patch.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section].update(value)
        else:
            raw[section] = value
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(raw)
    assert key in str(info.value)


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"epochz": 3}}))
    with pytest.raises(ConfigError, match=f"{path}.*epochz"):
        RunConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=f"{path}: not valid JSON"):
        RunConfig.load(path)
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.load(tmp_path / "absent.json")


def test_newer_config_version_is_refused(tmp_path):
    raw = RunConfig().to_dict() | {"version": CONFIG_VERSION + 1}
    with pytest.raises(ConfigError, match="newer"):
        RunConfig.from_dict(raw)
    run = tmp_path / "future"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(raw))
    with pytest.raises(RunError, match="newer"):
        vaekit.load(run)


# --- precision ------------------------------------------------------------------------------
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


def test_bf16_training_learns_and_keeps_fp32_weights(synth, tmp_path):
    run = vaekit.train(tiny_config(precision="bf16"), tmp_path / "bf16", progress=False, data=synth)
    rows = run.history
    assert all(torch.isfinite(torch.tensor(r["test_neg_elbo"])) for r in rows)
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    assert json.loads((run.path / "config.json").read_text())["train"]["precision"] == "bf16"
