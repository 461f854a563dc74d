"""Training runs: save/load, resume after interruption, config round trips, safe checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

import vaekit
from conftest import RUN_FILES, read_jsonl, tiny_config
from helpers import assert_same_weights, interrupt_after, without_timing
from vaekit.config import RunConfig
from vaekit.core.errors import RunError
from vaekit.training.trainer import Interrupted


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


# --- 10. configuration ----------------------------------------------------------------------


# --- precision ------------------------------------------------------------------------------


def test_bf16_training_learns_and_keeps_fp32_weights(synth, tmp_path):
    run = vaekit.train(tiny_config(precision="bf16"), tmp_path / "bf16", progress=False, data=synth)
    rows = run.history
    assert all(torch.isfinite(torch.tensor(r["test_neg_elbo"])) for r in rows)
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    assert json.loads((run.path / "config.json").read_text())["train"]["precision"] == "bf16"
