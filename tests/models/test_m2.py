"""The semi-supervised M2 model: its bound, labelled-example choice, training, classify."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from safetensors.torch import load_file

import vaekit
from conftest import tiny_config
from vaekit.cli import main
from vaekit.core.errors import ConfigError
from vaekit.models import build_model
from vaekit.models.m2 import M2, UNLABELLED, balanced_choice


def m2_config(**model: object) -> vaekit.RunConfig:
    config = tiny_config(epochs=6)
    config.model.name = "m2"
    config.model.n_classes = 4
    config.model.labeled = 8
    config.model.hidden = [32]
    for key, value in model.items():
        setattr(config.model, key, value)
    return config


@pytest.fixture(scope="module")
def m2_run(synth, tmp_path_factory):
    path = tmp_path_factory.mktemp("m2") / "run"
    return vaekit.train(m2_config(), path, progress=False, data=synth)


def test_balanced_choice_takes_each_class_equally_and_is_seeded(synth):
    chosen = balanced_choice(synth.train.y, 12, 4, seed=3)
    assert torch.bincount(synth.train.y[chosen], minlength=4).tolist() == [3, 3, 3, 3]
    assert torch.equal(chosen, balanced_choice(synth.train.y, 12, 4, seed=3))
    assert not torch.equal(chosen, balanced_choice(synth.train.y, 12, 4, seed=4))
    with pytest.raises(ConfigError, match="at least the number of classes"):
        balanced_choice(synth.train.y, 3, 4, seed=0)


def test_prepare_data_hides_labels_and_repeats_the_labelled(synth):
    config = m2_config()
    prepared = M2.prepare_data(config, synth)
    y = prepared.train.y
    labelled = y != UNLABELLED
    n = len(synth.train)
    assert (y[:n] != UNLABELLED).sum() == 8  # 8 of the 256 labels kept
    repeat = config.model.label_repeat
    assert repeat == round(0.1 * n / 8)
    assert labelled.sum() == 8 * repeat and len(y) == n + 8 * (repeat - 1)
    kept = (y[:n] != UNLABELLED).nonzero().squeeze(1)
    assert torch.equal(y[kept], synth.train.y[kept])  # the kept labels are the true ones
    assert synth.train.y.min() >= 0  # the caller's data is untouched


def test_unlabelled_bound_sums_the_label_out(synth):
    """U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)), computed by hand from labelled bounds."""
    config = m2_config()
    torch.manual_seed(0)
    model = build_model(config.model, synth.shape).eval()
    x = synth.test.x[:5]
    gen = torch.Generator().manual_seed(1)
    terms = model.elbo_terms(x, generator=gen)
    q = model.classify(x)
    expected = torch.zeros(5)
    for c in range(4):
        y = torch.full((5,), c)
        # the same z noise: elbo_terms draws one (B*K, D) block, b-major, class-minor
        gen_c = torch.Generator().manual_seed(1)
        eps = torch.randn(5 * 4, config.model.latent_dim, generator=gen_c).view(5, 4, -1)[:, c]
        z_mean, z_log_var = vaekit.models.ConditionalVAE.encode(model, x, y)
        z = z_mean + torch.exp(0.5 * z_log_var) * eps
        recon = model.likelihood.nll(vaekit.models.ConditionalVAE.decode(model, z, y), x)
        kl = vaekit.models.gaussian_kl(z_mean, z_log_var).sum(1)
        expected += q[:, c] * (recon + kl + math.log(4))
    expected -= -(q * q.log()).sum(1)  # minus the entropy
    assert torch.allclose(terms["neg_elbo"], expected, atol=1e-4)


def test_importance_bound_tightens_and_matches_the_elbo_at_k1(synth, m2_run):
    from vaekit.evaluation.metrics import evaluate_elbo, iwae_bounds

    test = synth.test
    elbo = evaluate_elbo(m2_run.model, test)["neg_elbo"]
    rows = {row["k"]: row["nll"] for row in iwae_bounds(m2_run.model, test, (1, 10, 100))}
    assert rows[1] == pytest.approx(elbo, abs=3.0)  # both unbiased estimates of -ELBO
    assert rows[100] < rows[10] < rows[1]


def test_m2_learns_to_classify_from_few_labels(m2_run, synth):
    from vaekit.evaluation.metrics import classification_accuracy

    accuracy = classification_accuracy(m2_run.model, synth.test)["accuracy"]
    assert accuracy > 0.9  # 8 labels (2 per class) of 4 clearly distinct patterns
    untrained = build_model(m2_run.config.model, synth.shape)
    assert classification_accuracy(untrained, synth.test)["accuracy"] < 0.6


def test_m2_run_folder_has_analogies_and_reloads(m2_run, synth):
    assert (m2_run.path / "analogies.png").exists()
    loaded = vaekit.load(m2_run.path)
    x = synth.test.x[:8]
    assert torch.equal(loaded.classify(x), m2_run.model.classify(x))
    assert loaded.analogies(x[:2]).shape == (2 * 4, *synth.shape)


def test_classify_command_writes_predictions(m2_run, synth, tmp_path, capsys, monkeypatch):
    import numpy as np

    data = tmp_path / "test.npz"
    np.savez(data, x=synth.test.x.numpy(), y=synth.test.y.numpy())
    out = tmp_path / "pred.csv"
    assert main(["classify", str(m2_run.path), "--data", str(data), "-o", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(synth.test)
    assert {"id", "label", "predicted"} <= set(rows[0])
    assert sum(float(rows[0][f"p_{c}"]) for c in range(4)) == pytest.approx(1.0, abs=1e-4)


def test_classify_refuses_a_model_without_a_classifier(tiny_run, capsys):
    assert main(["classify", str(tiny_run.path)]) == 2
    assert "no classifier" in capsys.readouterr().err


def test_evaluate_reports_classifier_accuracy(m2_run, synth):
    from vaekit.evaluation.run import evaluate_run, format_report

    report = evaluate_run(
        m2_run.model, data=synth, k=(1, 10), quality=False, probes=False, progress=False
    )
    assert 0.9 < report["classification"]["accuracy"] <= 1.0
    assert "classifier q(y|x) accuracy" in format_report(report)


def test_anomaly_scores_of_an_m2_model(m2_run, synth):
    from vaekit.apps.anomaly import anomaly_scores

    x = synth.test.x[:20]
    scores = anomaly_scores(m2_run.model, x, ("elbo", "iwae", "recon"), samples=50)
    assert all(s.shape == (20,) and torch.isfinite(s).all() for s in scores.values())
    assert (scores["iwae"] <= scores["elbo"] + 1e-6).all()


def test_each_condition_shortcut_equals_the_repeated_pairs(synth):
    config = m2_config()
    model = build_model(config.model, synth.shape)
    x = synth.test.x[:6]
    classes = torch.eye(4)
    fast = model.encoder.forward_each_condition(x, classes)
    slow = model.encoder(x.repeat_interleave(4, dim=0), classes.repeat(6, 1))
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-6)


# --- M1 + M2: M2 on a frozen VAE's latent space ------------------------------------------------
@pytest.fixture(scope="module")
def m1m2_run(synth, tmp_path_factory):
    root = tmp_path_factory.mktemp("m1m2")
    m1 = tiny_config(epochs=10)
    m1.model.hidden, m1.model.latent_dim = [32], 6
    m1_run = vaekit.train(m1, root / "m1", progress=False, outputs=False, data=synth)
    config = m2_config()
    config.model.name, config.model.features = "m1m2", str(m1_run.path)
    config.model.hidden, config.model.latent_dim = [32], 4
    return m1_run, vaekit.train(config, root / "m1m2", progress=False, data=synth)


def test_m1m2_copies_and_freezes_the_feature_vae(m1m2_run):
    m1_run, run = m1m2_run
    assert run.config.model.features_model["latent_dim"] == 6  # recorded in the run's config
    trained = load_file(str(m1_run.path / "model.safetensors"))
    stacked = load_file(str(run.path / "model.safetensors"))
    for key, value in trained.items():
        assert torch.equal(stacked[f"m1.{key}"], value), key  # copied, and not trained further


def test_m1m2_run_stands_alone_and_classifies(m1m2_run, synth, tmp_path):
    import shutil

    from vaekit.evaluation.metrics import classification_accuracy

    _, run = m1m2_run
    copy = shutil.copytree(run.path, tmp_path / "copy")
    loaded = vaekit.load(copy)  # no access to the M1 run needed
    x = synth.test.x[:8]
    assert torch.equal(loaded.classify(x), run.model.classify(x))
    assert classification_accuracy(loaded, synth.test)["accuracy"] > 0.9
    assert loaded.analogies(x[:2]).shape == (8, *synth.shape)
    assert loaded.sample(3).shape == (3, *synth.shape)
    assert (run.path / "analogies.png").exists()


def test_m1m2_bounds_are_bounds_on_the_images(m1m2_run, synth):
    from vaekit.evaluation.metrics import evaluate_elbo, iwae_bounds

    _, run = m1m2_run
    elbo = evaluate_elbo(run.model, synth.test)["neg_elbo"]
    rows = {row["k"]: row["nll"] for row in iwae_bounds(run.model, synth.test, (1, 10, 100))}
    assert rows[1] == pytest.approx(elbo, abs=3.0)
    assert rows[100] < rows[10] < rows[1]


def test_m1m2_needs_a_vae_run(synth, tmp_path, tiny_run):
    config = m2_config()
    config.model.name = "m1m2"
    with pytest.raises(ConfigError, match="--features"):
        vaekit.train(config, tmp_path / "a", progress=False, data=synth)
    config.model.features = str(tiny_run.path)  # an 8x8 VAE... of the right shape: accepted
    m2_run = vaekit.train(m2_config(), tmp_path / "m2", progress=False, outputs=False, data=synth)
    config.model.features = str(m2_run.path)
    with pytest.raises(ConfigError, match="must come from a vae run"):
        vaekit.train(config, tmp_path / "b", progress=False, data=synth)


def test_own_data_with_unlabelled_examples(synth, tmp_path, capsys):
    """Labels named "unlabelled" (or "?") mark the examples M2 learns from without a label."""
    import numpy as np

    names = np.array(["hbar", "vbar", "diag", "square"], dtype="<U10")[synth.train.y.numpy()]
    names[16:] = "unlabelled"  # 16 of 256 labelled
    data = tmp_path / "own.npz"
    np.savez(data, x_train=synth.train.x.numpy(), y_train=names,
             x_test=synth.test.x.numpy(), y_test=np.array(["hbar", "vbar", "diag", "square"])[synth.test.y.numpy()])  # fmt: skip
    argv = ["train", "--model", "m2", "--data", str(data), "--hidden", "32", "--latent-dim", "2"]
    argv += ["--epochs", "8", "--batch-size", "32", "--lr", "0.003", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    config = vaekit.RunConfig.load(tmp_path / "run" / "config.json")
    assert config.model.n_classes == 4  # "unlabelled" is not a class
    assert main(["classify", str(tmp_path / "run"), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "run" / "predictions.csv").open()))
    assert {row["predicted"] for row in rows} <= {"hbar", "vbar", "diag", "square"}
    assert "p_unlabelled" not in rows[0]
    accuracy = float(out.split("accuracy ")[1].split("%")[0]) / 100
    assert accuracy > 0.8  # over the labelled examples only (the 240 hidden ones excluded)


def test_report_of_an_m2_run_shows_style_and_content(m2_run, synth):
    from vaekit.apps.report import write_report

    page = write_report(m2_run.path, m2_run.path / "r.html", data=synth).read_text()
    for section in ("Style and content", "Manifold", "Latent traversal", "Interpolation"):
        assert f"<h2>{section}</h2>" in page, section
