"""The posterior-collapse warning says what the numbers say (no "N/N units active" beside
"the decoder ignores z")."""

from __future__ import annotations

from vaekit.evaluation.metrics import collapse_warning


def metrics(kl: float, active: int, total: int = 2) -> dict:
    return {"kl": kl, "active_units": active, "latent_dim": total, "n_examples": 100}


def test_no_active_unit_is_a_collapse():
    message = collapse_warning(metrics(0.01, 0))
    assert message.startswith("posterior collapse: no latent unit is active")


def test_active_units_with_little_kl_are_a_near_collapse_not_a_contradiction():
    message = collapse_warning(metrics(0.125, 2))
    assert message.startswith("posterior nearly collapsed")
    assert "0.125 nats" in message and "2/2 units vary" in message
    assert "the decoder ignores z" not in message


def test_a_healthy_posterior_gets_no_warning_and_few_active_units_are_named():
    assert collapse_warning(metrics(20.0, 20, 20)) is None
    assert collapse_warning(metrics(20.0, 3, 20)).startswith("only 3/20 latent units")
