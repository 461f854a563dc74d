"""Training control: step budget, learning-rate warm-up and plateau cuts, early stopping on
the validation -ELBO, and the k best validation epochs' weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import vaekit
from conftest import read_jsonl, tiny_config
from helpers import run_cli
from vaekit.core.errors import ConfigError, RunError


def train(synth, path, **train_options):
    config = tiny_config(**train_options)
    return vaekit.train(config, path, progress=False, outputs=False, data=synth)


def test_step_budget_stops_after_exactly_that_many_steps(synth, tmp_path):
    run = train(synth, tmp_path / "r", epochs=100, max_steps=13)  # 8 steps per epoch
    last = run.history[-1]
    assert last["step"] == 13 and last["epoch"] == 2
    assert last["stopped"] == "step budget of 13 steps spent"
    with pytest.raises(RunError, match="step budget"):
        vaekit.train(resume=run.path, progress=False, outputs=False, data=synth)
    longer = vaekit.RunConfig.load(run.path / "config.json")
    longer.train.max_steps = 20
    more = vaekit.train(longer, resume=run.path, progress=False, outputs=False, data=synth)
    assert more.history[-1]["step"] == 20


def test_warmup_ramps_the_learning_rate_linearly(synth, tmp_path):
    seen = []

    class Record(vaekit.training.callbacks.Callback):
        def on_step_end(self, trainer):
            seen.append(trainer.optimizer.param_groups[0]["lr"])

    config = tiny_config(epochs=2, lr_warmup_steps=10, lr=1e-2)
    vaekit.train(
        config, tmp_path / "r", progress=False, outputs=False, data=synth, callbacks=[Record()]
    )
    expected = [1e-2 * min(1.0, (k + 1) / 10) for k in range(16)]
    assert seen == pytest.approx(expected)


def test_kl_warmup_over_a_fraction_of_the_run_follows_its_progress(synth, tmp_path):
    seen = []

    class Record(vaekit.training.callbacks.Callback):
        def on_step_end(self, trainer):  # the step just taken was global_step - 1
            seen.append(trainer.beta_at(trainer.state.global_step - 1))

    config = tiny_config(epochs=100, max_steps=20, kl_warmup_fraction=0.5, beta=2.0)
    vaekit.train(
        config, tmp_path / "r", progress=False, outputs=False, data=synth, callbacks=[Record()]
    )
    # step k of 20 is k / 20 of the run: the weight reaches beta at step 10, half the run
    assert seen == pytest.approx([2.0 * min(1.0, k / 10) for k in range(20)])
    with pytest.raises(ConfigError, match="one of train.kl_warmup"):
        tiny_config(kl_warmup_fraction=0.2, kl_warmup_steps=5).validate()


def test_plateau_cuts_the_learning_rate_when_validation_stalls(synth, tmp_path):
    # lr 0 after warm-up is impossible; a tiny lr makes the validation -ELBO stall instead
    config = tiny_config(epochs=6, lr=1e-9, lr_schedule="plateau", lr_patience=1, lr_factor=0.5)
    config.data.valid_size = 64
    run = vaekit.train(config, tmp_path / "r", progress=False, outputs=False, data=synth)
    lrs = [row["lr"] for row in run.history]
    cuts = [b / a for a, b in zip(lrs, lrs[1:]) if b != a]
    assert cuts and all(c == pytest.approx(0.5) for c in cuts)
    assert lrs[-1] < lrs[0]


def test_early_stopping_ends_the_run_and_keeps_the_best_weights(synth, tmp_path):
    # a learning rate so large that the validation -ELBO stops improving after a few epochs
    config = tiny_config(epochs=200, lr=0.05, early_stop=2, keep_best=3)
    config.data.valid_size = 64
    run = vaekit.train(config, tmp_path / "r", progress=False, outputs=True, data=synth)
    last = run.history[-1]
    assert last["epoch"] < 200
    assert last["stopped"].startswith("early stopping: no better validation -ELBO in 2")
    valid = [row["valid_neg_elbo"] for row in run.history]
    best_epoch = run.history[valid.index(min(valid))]["epoch"]
    assert len(run.history) - valid.index(min(valid)) - 1 == 2  # two evaluations without better
    assert run.final["epoch"] == best_epoch  # the kept weights are the best epoch's
    final = load_file(run.path / "model.safetensors")
    best = load_file(run.path / "best.safetensors")
    assert all(torch.equal(final[k], best[k]) for k in best)
    # the 3 best epochs' weights, and no other
    kept = sorted(int(p.stem.split("-")[1]) for p in (run.path / "best").iterdir())
    ranked = sorted(zip(valid, (row["epoch"] for row in run.history)))[:3]
    assert kept == sorted(epoch for _, epoch in ranked)
    assert read_jsonl(run.path / "metrics.jsonl")[-1]["stopped"] == last["stopped"]
    with pytest.raises(RunError, match="stopped early"):
        vaekit.train(resume=run.path, progress=False, outputs=False, data=synth)


def test_early_stopping_without_a_validation_split_is_refused(synth, tmp_path):
    with pytest.raises(ConfigError, match="--valid-size"):
        train(synth, tmp_path / "r", early_stop=3)
    assert not (tmp_path / "r").exists()


def test_cli_training_control_flags_reach_the_config(tmp_path, capsys, monkeypatch):
    captured = {}

    def fake_train(config, run_dir=None, **kwargs):
        captured["config"] = config
        raise ConfigError("stop here")

    monkeypatch.setattr("vaekit.training.fit.train", fake_train)
    args = ["train", "--steps", "50", "--lr-warmup", "5", "--early-stop", "3"]
    args += ["--lr-schedule", "plateau", "--lr-patience", "4", "--lr-factor", "0.3"]
    args += ["--keep-best", "2", "--valid-size", "100", "--kl-warmup-fraction", "0.2"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "stop here" in err
    train_config = captured["config"].train
    assert (train_config.max_steps, train_config.lr_warmup_steps, train_config.early_stop) == (
        50,
        5,
        3,
    )
    assert (train_config.lr_schedule, train_config.lr_patience, train_config.lr_factor) == (
        "plateau",
        4,
        0.3,
    )
    assert train_config.keep_best == 2 and train_config.kl_warmup_fraction == 0.2


@pytest.mark.parametrize(
    "flag",
    [
        ["--lr-factor", "1"],
        ["--lr-factor", "0"],
        ["--steps", "0"],
        ["--kl-warmup-fraction", "1.5"],
    ],
)
def test_bad_training_control_values_are_refused(flag, capsys):
    code, _, err = run_cli(["train", *flag], capsys)
    assert code == 2 and "Traceback" not in err
