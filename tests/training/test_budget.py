"""Long-run features: time budget, cosine learning rate, validation split with best weights,
evaluation every N epochs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vaekit
from conftest import read_jsonl, tiny_config
from helpers import assert_same_weights, interrupt_after, without_timing
from vaekit.cli import main
from vaekit.cli.args import duration
from vaekit.core.errors import ConfigError, RunError
from vaekit.data import Dataset, DataSplits
from vaekit.models import build_model
from vaekit.models.vamp import VampPriorVAE
from vaekit.training.trainer import Trainer


def test_time_budget_stops_the_run_cleanly(synth, tmp_path):
    config = tiny_config(epochs=100_000, time_budget=1.0)
    run = vaekit.train(config, tmp_path / "r", progress=False, outputs=False, data=synth)
    last = run.history[-1]
    assert last["epoch"] < 100_000
    assert "time budget" in last["stopped"]
    assert 1.0 <= last["train_seconds"] < 3.0  # one more step at most, not another epoch
    assert math.isfinite(last["test_neg_elbo"])
    assert (run.path / "model.safetensors").exists()
    rows = read_jsonl(run.path / "metrics.jsonl")
    assert rows[-1]["stopped"] == last["stopped"]
    # a spent budget is a finished run; a larger one continues it
    with pytest.raises(RunError, match="time budget"):
        vaekit.train(resume=run.path, progress=False, outputs=False, data=synth)
    longer = vaekit.RunConfig.load(run.path / "config.json")
    longer.train.time_budget = 2.0
    more = vaekit.train(longer, resume=run.path, progress=False, outputs=False, data=synth)
    assert 2.0 <= more.history[-1]["train_seconds"] < 4.0
    assert more.history[-1]["step"] > last["step"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("60m", 3600), ("1.5h", 5400), ("45", 45), ("2min", 120)]
)
def test_durations_parse(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5m", "abc", "5x", "nanm", "infh"])
def test_bad_durations_are_refused(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", f"--time-budget={text}"])
    assert exit_info.value.code == 2
    assert "duration" in capsys.readouterr().err


def test_cosine_schedule_decays_to_lr_min(synth):
    config = tiny_config(lr=1e-2, lr_schedule="cosine", lr_min=1e-4)
    trainer = Trainer(config, build_model(config.model, synth.shape), synth, progress=False)
    steps = config.train.epochs * len(trainer.batches)
    rates = []
    for step in range(steps + 1):
        trainer.state.global_step = step
        rates.append(trainer.lr_now())
    assert rates[0] == pytest.approx(1e-2)
    assert rates[steps // 2] == pytest.approx(0.5 * (1e-2 + 1e-4))
    assert rates[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_cosine_schedule_is_applied_and_resumes_identically(synth, tmp_path, monkeypatch):
    config = tiny_config(lr_schedule="cosine", lr_min=1e-4, checkpoint_every_steps=3)
    whole = vaekit.train(config, tmp_path / "a", progress=False, outputs=False, data=synth)
    assert whole.history[-1]["lr"] < 2e-4  # the last step ran near lr_min
    with monkeypatch.context() as patch:
        interrupt_after(patch, 11, "crash")
        with pytest.raises(KeyboardInterrupt):
            vaekit.train(config, tmp_path / "b", progress=False, outputs=False, data=synth)
    resumed = vaekit.train(resume=tmp_path / "b", progress=False, outputs=False, data=synth)
    assert without_timing(resumed.history) == without_timing(whole.history)
    assert_same_weights(tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors")


def test_validation_split_keeps_the_best_weights(synth, tmp_path, capsys):
    config = tiny_config(epochs=6, lr=3e-2)
    config.data.valid_size = 64
    run = vaekit.train(config, tmp_path / "r", progress=False, data=synth)
    rows = run.history
    assert all("valid_neg_elbo" in row for row in rows)
    best = min(rows, key=lambda row: row["valid_neg_elbo"])
    assert run.final == best and best["best"]
    final = load_file(str(run.path / "model.safetensors"))
    kept = load_file(str(run.path / "best.safetensors"))
    assert all(torch.equal(final[k], kept[k]) for k in final)
    # the model returned and its validation number are those of the best epoch
    from vaekit.evaluation.metrics import evaluate_elbo

    valid = synth.train.x[-64:]
    measured = evaluate_elbo(run.model, Dataset(valid, None, "v"), 64)["neg_elbo"]
    assert measured == pytest.approx(best["valid_neg_elbo"], rel=1e-5)
    assert main(["info", str(run.path)]) == 0
    assert f"weights of epoch {best['epoch']} (best validation -ELBO" in capsys.readouterr().out


def test_validation_split_is_taken_from_the_end_of_the_training_set(tmp_path):
    config = vaekit.DataConfig(valid_size=10_000)
    splits = vaekit.load_data(config)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (50_000, 10_000, 10_000)
    full = vaekit.load_data(vaekit.DataConfig())
    assert torch.equal(splits.valid.x, full.train.x[50_000:])
    assert torch.equal(splits.valid.y, full.train.y[50_000:])


def test_validation_split_size_is_checked(synth):
    from vaekit.data.registry import hold_out_validation

    for size in (256, 1000):
        with pytest.raises(ConfigError, match="valid_size"):
            hold_out_validation(synth, size)
    held = hold_out_validation(synth, 56)
    assert (len(held.train), len(held.valid), synth.valid) == (200, 56, None)  # a copy
    has_own = DataSplits(synth.train, synth.test, synth.name, synth.source, valid=synth.test)
    with pytest.raises(ConfigError, match="validation split of its own"):
        hold_out_validation(has_own, 10)


def test_eval_every_writes_a_row_per_evaluation(synth, tmp_path):
    every = vaekit.train(
        tiny_config(epochs=5, eval_every=2), tmp_path / "a", progress=False, data=synth
    )
    assert [row["epoch"] for row in every.history] == [2, 4, 5]
    each = vaekit.train(tiny_config(epochs=5), tmp_path / "b", progress=False, data=synth)
    # same training either way; a row's train loss averages the epochs since the last row
    assert every.history[-1]["test_neg_elbo"] == each.history[-1]["test_neg_elbo"]
    mean_34 = (each.history[2]["train_loss"] + each.history[3]["train_loss"]) / 2
    assert every.history[1]["train_loss"] == pytest.approx(mean_34, rel=1e-6)


@pytest.mark.parametrize("name", sorted(vaekit.PRESETS))
def test_every_preset_builds_its_model(name):
    """Each preset validates, round-trips through its dict and builds for MNIST's shape
    (m1m2 needs a feature run, so its M2 part is checked through m2-mnist)."""
    config = vaekit.preset(name)
    assert vaekit.RunConfig.from_dict(config.to_dict()) == config
    if config.model.name in ("cvae", "m2"):
        config.model.n_classes = 10
    if config.model.name != "m1m2":
        model = build_model(config.model, (1, 28, 28))
        assert sum(p.numel() for p in model.parameters()) > 0


def test_likelihood_presets_hold_out_validation_and_spend_an_hour():
    for name in ("likelihood-mlp", "likelihood-hvae"):
        config = vaekit.preset(name)
        assert config.data.valid_size == 10_000 and config.data.binarize == "dynamic"
        assert config.train.time_budget == 3600 and config.train.lr_schedule == "cosine"
        # the recipe measured in benchmarks/RESULTS.md
        assert (config.train.batch_size, config.train.weight_decay) == (256, 0.01)
        assert (config.model.prior, config.model.prior_components) == ("vamp", 100)
    assert vaekit.preset("likelihood-hvae").model.latent_layers == [32, 16]
    # bf16 only where the hardware has it natively; the one-layer preset stays fp32
    assert vaekit.preset("likelihood-hvae").train.precision == "auto"
    assert vaekit.preset("likelihood-mlp").train.precision == "fp32"
    mlp = build_model(vaekit.preset("likelihood-mlp").model, (1, 28, 28))
    assert isinstance(mlp, VampPriorVAE)


@pytest.mark.slow
def test_likelihood_benchmark_trains_evaluates_and_redoes_its_curve(tmp_path):
    """benchmarks/likelihood.py end to end on MNIST with a tiny network and a 4 s budget."""
    root = Path(__file__).resolve().parents[2]
    script = [sys.executable, str(root / "benchmarks" / "likelihood.py")]
    common = ["--preset", "likelihood-mlp", "--seeds", "0", "--threads", "1", "--budget", "4s",
              "--set", "model.hidden=[32]", "--set", "model.latent_dim=4",
              "--set", "model.prior_components=5", "--set", "train.eval_every=1",
              "--out", str(tmp_path), "--quiet"]  # fmt: skip
    first = ["--k", "20", "--curve", "0.02", "--curve-k", "5", "--curve-n", "300"]
    subprocess.run(script + common + first, check=True, cwd=tmp_path, capture_output=True)
    (folder,) = tmp_path.glob("likelihood-mlp-mnist-s0")
    result = json.loads((folder / "likelihood.json").read_text())
    final = result["final"]
    assert (final["k"], final["n_examples"]) == (20, 10_000)  # the whole test set
    assert math.isfinite(final["nll"]) and final["nll"] < result["test_neg_elbo"]  # IWAE <= ELBO
    assert 4.0 <= result["train_seconds"] < 10.0
    (point,) = result["curve"]
    assert (point["k"], point["n_examples"]) == (5, 300) and point["minutes"] >= 0.02
    redo = [
        "--curve-only",
        "--curve-k",
        "5",
        "--curve-n",
        "200",
        "--record",
        str(tmp_path / "kept"),
    ]
    subprocess.run(script + common + redo, check=True, cwd=tmp_path, capture_output=True)
    again = json.loads((folder / "likelihood.json").read_text())
    assert again["final"] == final and again["curve"][0]["n_examples"] == 200
    assert json.loads((tmp_path / "kept" / f"{folder.name}.json").read_text()) == again
    table = subprocess.run(
        script + ["--summary", str(tmp_path)], check=True, capture_output=True, text=True
    ).stdout
    assert f"{final['nll']:.2f}" in table and "| likelihood-mlp | mnist (dynamic) | 1 |" in table
    recorded = tmp_path / "recorded"  # result files copied out of their run folders
    recorded.mkdir()
    for seed in (0, 1):
        (recorded / f"s{seed}.json").write_text(json.dumps({**again, "seed": seed}))
    table = subprocess.run(
        script + ["--summary", str(recorded)], check=True, capture_output=True, text=True
    ).stdout
    assert "| likelihood-mlp | mnist (dynamic) | 2 |" in table
    absent = subprocess.run(script + ["--summary", str(tmp_path / "gone")], capture_output=True)
    assert absent.returncode != 0 and b"no such file or folder" in absent.stderr
    missing = subprocess.run(
        script + common[:-3] + ["--out", str(tmp_path / "none"), "--curve-only"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode != 0 and "no likelihood.json" in missing.stderr
