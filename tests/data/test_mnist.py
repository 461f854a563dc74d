"""End to end on the real built-in MNIST: the reference VAE learns (slow: trains 2 epochs)."""

from __future__ import annotations

import pytest

import vaekit
from conftest import RUN_FILES, read_jsonl

# Measured: test -ELBO 115.71 nats per image (recon 92.5 + KL 23.20), 20/20 active units,
# after 2 epochs of the reference preset (784-400-20, batch 128, Adam 1e-3, seed 0) on all
# 60000 training images, evaluated on all 10000 test images (torch 2.13 CPU).
# The threshold leaves 4 nats for other CPUs / BLAS libraries / thread counts.
NEG_ELBO_THRESHOLD = 120.0


@pytest.mark.slow
def test_reference_vae_learns_mnist(mnist, tmp_path):
    config = vaekit.preset("reference")
    config.train.epochs = 2
    run = vaekit.train(config, tmp_path / "ref", progress=False, data=mnist)

    final = run.final
    assert final["epoch"] == 2 and final["step"] == 2 * 469  # ceil(60000 / 128) per epoch
    assert 90.0 < final["test_neg_elbo"] < NEG_ELBO_THRESHOLD, final
    assert final["test_kl"] > 1.0, "posterior collapse: the KL term is ~0"
    assert final["active_units"] >= 10
    assert "warning" not in final
    assert final["test_neg_elbo"] < run.history[0]["test_neg_elbo"]
    assert final["test_bits_per_dim"] == pytest.approx(
        final["test_neg_elbo"] / (784 * 0.6931471805599453)
    )
    assert read_jsonl(run.path / "metrics.jsonl") == run.history
    for name in RUN_FILES:
        assert (run.path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
