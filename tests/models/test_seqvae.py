"""The sequence VAE: its loss against a hand computation, decoding, training on a small
grammar, and outputs that survive saving and loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import vaekit
from conftest import synthetic_splits
from helpers import grammar_lines, write_lines
from vaekit.config.schema import ModelConfig
from vaekit.core.errors import ConfigError
from vaekit.data.sequences import BOS, EOS, PAD, SPECIALS, UNK, Vocabulary
from vaekit.evaluation.metrics import evaluate_elbo, iwae_bounds
from vaekit.evaluation.sequences import exact_match_rate, sample_strings
from vaekit.models.registry import build_model, configure_model
from vaekit.models.seqvae import SequenceVAE

VOCAB = 9  # the 4 specials and 5 tokens
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny GRUs, one thread


def tiny_model(**options) -> SequenceVAE:
    torch.manual_seed(0)
    config = ModelConfig(
        name="seqvae", hidden=[6, 7], latent_dim=3, embedding_dim=4, vocab_size=VOCAB, **options
    )
    return SequenceVAE(config, (6,))


def tiny_batch() -> torch.Tensor:
    """Three sequences of 3, 1 and 5 tokens, each with <eos>, padded to width 6."""
    return torch.tensor(
        [[4, 5, 6, EOS, PAD, PAD], [8, EOS, PAD, PAD, PAD, PAD], [4, 4, 7, 8, 5, EOS]]
    )


def hand_nll(model: SequenceVAE, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) of each sequence, one token at a time through the decoder's modules
    (no padding, no batching): the sum over its tokens and <eos> of -log softmax."""
    decoder = model.likelihood
    total = []
    for zi, row in zip(z, x):
        tokens = row[row != PAD].tolist()
        state = torch.tanh(decoder.initial(zi)).view(decoder.layers, 1, decoder.hidden)
        previous, nll = BOS, 0.0
        for target in tokens:
            embedded = decoder.embedding(torch.tensor([[previous]]))
            step = torch.cat([embedded, zi.view(1, 1, -1)], dim=2)
            out, state = decoder.gru(step, state)
            nll = nll - F.log_softmax(decoder.out(out[0, 0]), dim=0)[target]
            previous = target
        total.append(nll)
    return torch.stack(total)


def test_loss_is_categorical_nll_summed_over_tokens_plus_kl():
    model = tiny_model()
    x = tiny_batch()
    torch.manual_seed(3)
    terms = model.loss(x, beta=0.5)
    torch.manual_seed(3)
    z_mean, z_log_var = model.encode(x)
    z = z_mean + torch.exp(0.5 * z_log_var) * torch.randn(3, 3)
    recon = hand_nll(model, z, x)
    kl = 0.5 * (z_log_var.exp() + z_mean.square() - 1 - z_log_var).sum(1)
    assert torch.allclose(terms.recon, recon.mean(), atol=1e-5)
    assert torch.allclose(terms.kl, kl.mean(), atol=1e-5)
    assert torch.allclose(terms.loss, recon.mean() + 0.5 * kl.mean(), atol=1e-5)
    assert torch.allclose(model.likelihood.nll(z, x), recon, atol=1e-5)


def test_padding_is_ignored():
    """Extra padding columns change neither the codes nor the likelihood."""
    model = tiny_model().eval()
    x = tiny_batch()
    wider = torch.cat([x, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    z = torch.randn(3, 3)
    assert torch.allclose(model.encode(x)[0], model.encode(wider)[0], atol=1e-6)
    assert torch.allclose(model.likelihood.nll(z, x), model.likelihood.nll(z, wider), atol=1e-6)


def test_free_bits_floor_each_dimension_and_elbo_terms_per_dimension():
    model = tiny_model()
    x = tiny_batch()
    torch.manual_seed(1)
    plain = model.loss(x)
    torch.manual_seed(1)
    floored = model.loss(x, free_bits=5.0)  # far above each dimension's KL
    assert torch.allclose(floored.loss, plain.recon + 3 * 5.0)
    terms = model.elbo_terms(x, generator=torch.Generator().manual_seed(0))
    assert terms["kl_per_dim"].shape == (3, 3)
    assert torch.allclose(terms["kl_per_dim"].sum(1), terms["kl"])


def test_word_dropout_applies_in_training_only():
    dropping = tiny_model(word_dropout=0.9)
    plain = tiny_model()
    x, z = tiny_batch(), torch.randn(3, 3)
    inputs = dropping.likelihood.teacher_inputs(x)
    assert (inputs[:, 0] == BOS).all() and (inputs == UNK).any()
    assert ((inputs == UNK) <= (x != PAD)).all()  # padding is never replaced
    dropping.eval()
    assert torch.equal(dropping.likelihood.teacher_inputs(x)[:, 1:], x[:, :-1])
    assert torch.allclose(dropping.likelihood.nll(z, x), plain.likelihood.nll(z, x))


def test_generation_is_batched_well_formed_and_reproducible():
    model = tiny_model().eval()
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    greedy = model.generate(z)
    assert greedy.shape == (50, 6)
    for row in greedy.tolist():
        end = row.index(EOS)  # every row ends, within the width
        assert all(t > UNK for t in row[:end])  # no <pad>, <bos>, <unk> inside
        assert all(t == PAD for t in row[end + 1 :])
    assert torch.equal(model.generate(z, temperature=1.0, top_k=1), greedy)
    draw = lambda seed: model.generate(  # noqa: E731
        z, temperature=1.0, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(draw(5), draw(5)) and not torch.equal(draw(5), draw(6))
    # <unk> is what word dropout feeds the decoder, never a target: never drawn either
    assert not (draw(7) == UNK).any()
    assert torch.equal(
        model.reconstruct(tiny_batch()), model.generate(model.encode(tiny_batch())[0])
    )


def test_model_and_data_kinds_must_match(tmp_path):
    config = vaekit.RunConfig.from_dict(
        {"data": {"name": "sequences", "path": str(write_lines(tmp_path / "g.txt", ["ab", "c"]))}}
    )
    with pytest.raises(ConfigError, match="use --model seqvae"):
        vaekit.train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="seqvae trains on sequence data"):
        configure_model(ModelConfig(name="seqvae"), synthetic_splits())
    with pytest.raises(ConfigError, match="model.vocab_size"):
        build_model(ModelConfig(name="seqvae"), (5,))


# --- training ---------------------------------------------------------------------------
GRAMMAR_ENTROPY = math.log(3) + 3 * math.log(4)  # nats per string: its length, 2-4 letters
UNIFORM_NLL = 4 * math.log(8)  # nats per string of a decoder guessing among the 8 tokens


@pytest.fixture(scope="module")
def grammar_run(tmp_path_factory) -> vaekit.Run:
    """seqvae trained for 15 short epochs (about 3 s) on 1,000 grammar strings; free bits
    (0.5 nats per dimension) keep the decoder from ignoring z."""
    root = tmp_path_factory.mktemp("grammar")
    path = write_lines(root / "g.txt", grammar_lines(1000))
    config = vaekit.RunConfig.from_dict(
        {
            "name": "grammar",
            "data": {"name": "sequences", "path": str(path)},
            "model": {"name": "seqvae", "hidden": [64], "latent_dim": 4, "embedding_dim": 16},
            "train": {"epochs": 15, "batch_size": 32, "lr": 1e-2, "free_bits": 0.5}
            | {"eval_every": 5, "seed": 0, "eval_batch_size": 500},
            "n_samples": 16,
        }
    )
    return vaekit.train(config, root / "run", progress=False)


def test_training_lowers_the_elbo_and_greedy_decoding_reconstructs(grammar_run):
    last = grammar_run.history[-1]
    assert GRAMMAR_ENTROPY - 0.3 < last["test_neg_elbo"] < 6.0 < UNIFORM_NLL  # nats per string
    assert last["test_nats_per_token"] == pytest.approx(last["test_neg_elbo"] / 4.0, rel=0.05)
    assert last["active_units"] == 4 and last["test_kl"] > 1.5  # z is used
    data = vaekit.load_data(grammar_run.config.data)
    rate = exact_match_rate(grammar_run.model, data.test)
    assert rate["exact_match"] > 0.3  # a decoder ignoring z: 1/16 at best (its likeliest pair)
    lines = (grammar_run.path / "reconstructions.txt").read_text().splitlines()
    assert lines[0].startswith("# exact match of greedy decoding:") and len(lines) == 101
    samples = (grammar_run.path / "samples.txt").read_text().splitlines()
    assert len(samples) == 16 and all(set(s) <= set("abcd\ufffd") for s in samples)


def test_kl_warmup_ramps_beta_for_sequences(tmp_path):
    path = write_lines(tmp_path / "g.txt", grammar_lines(64))
    config = vaekit.RunConfig.from_dict(
        {
            "data": {"name": "sequences", "path": str(path)},
            "model": {"name": "seqvae", "hidden": [8], "latent_dim": 2, "embedding_dim": 4},
            "train": {"epochs": 2, "batch_size": 29, "kl_warmup_epochs": 2},
        }
    )
    run = vaekit.train(config, tmp_path / "run", progress=False, outputs=False)
    assert [row["beta"] for row in run.history] == [0.5, 1.0]
    config.train.kl_warmup_epochs, config.train.kl_warmup_steps = 0, 8  # 2 steps per epoch
    run = vaekit.train(config, tmp_path / "steps", progress=False, outputs=False)
    assert [row["beta"] for row in run.history] == [0.25, 0.5]


def test_saved_and_loaded_model_gives_identical_outputs(grammar_run):
    loaded = vaekit.load(grammar_run.path)
    trained = grammar_run.model.eval()
    vocabulary = Vocabulary(tuple(grammar_run.config.data.vocabulary))
    assert sample_strings(loaded, vocabulary, 20, seed=4) == sample_strings(
        trained, vocabulary, 20, seed=4
    )
    test = vaekit.load_data(grammar_run.config.data).test
    x = test.x[:50]
    assert torch.equal(loaded.reconstruct(x), trained.reconstruct(x))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(
        loaded.elbo_terms(x, generator=g())["neg_elbo"],
        trained.elbo_terms(x, generator=g())["neg_elbo"],
    )


def test_evaluation_numbers_for_sequences(grammar_run):
    test = vaekit.load_data(grammar_run.config.data).test.head(100)
    elbo = evaluate_elbo(grammar_run.model, test, batch_size=40)
    tokens = (test.storage != PAD).sum().item() / len(test)
    assert elbo["nats_per_token"] == pytest.approx(elbo["neg_elbo"] / tokens)
    assert elbo["bits_per_dim"] == pytest.approx(elbo["nats_per_token"] / math.log(2))
    assert len(elbo["kl_per_dim"]) == 4
    one, many = iwae_bounds(grammar_run.model, test, ks=(1, 100))
    assert many["nll"] < one["nll"]  # more importance samples, a tighter bound
    assert many["nats_per_token"] == pytest.approx(many["nll"] / tokens)


def test_decoding_stops_at_eos_and_marks_unk():
    vocabulary = Vocabulary((*SPECIALS, "a", "b"))
    ids = torch.tensor([[4, UNK, 5, EOS, 4], [EOS, 0, 0, 0, 0], [BOS, 4, 4, 4, 4]])
    assert vocabulary.decode(ids) == ["a\ufffdb", "", "aaaa"]
