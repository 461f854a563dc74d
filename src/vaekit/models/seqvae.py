"""The sequence VAE (Bowman et al. 2016; Gomez-Bombarelli et al. 2018): SMILES and text.

q(z | x) is a diagonal Gaussian from a bidirectional GRU over the tokens; p(z) = N(0, I);
p(x | z) is an autoregressive categorical distribution, a GRU decoder conditioned on z
through its initial state and at every step (`vaekit.nn.recurrent`). Everything else is
the Gaussian VAE's: the loss is the batch mean of -log p(x | z) + beta * KL, with the
reconstruction term summed over each sequence's tokens and <eos> (padding left out), so
-ELBO is in nats per sequence; KL warm-up, free bits, the IWAE objective and bound, the KL
per latent dimension and active units all apply unchanged.

The decoder is the likelihood: `decode(z)` returns z itself as p(x | z)'s parameters, and
`likelihood.nll(z, x)` runs the decoder on x with teacher forcing. `decode_mean`,
`reconstruct` and `sample` give token ids (B, L) decoded greedily; `generate` decodes by
sampling too (temperature, top-k).

Sizes: `model.hidden` = [encoder GRU size (per direction), decoder GRU layer sizes...]
(one value: both, one decoder layer), `model.embedding_dim`, `model.latent_dim`,
`model.word_dropout`; the vocabulary size is recorded as `model.vocab_size` when training
starts.
"""

from __future__ import annotations

import torch

from vaekit.config.schema import ModelConfig
from vaekit.core.errors import ConfigError
from vaekit.data.datasets import DataSplits
from vaekit.models.base import GaussianVAE, Model
from vaekit.nn.recurrent import RecurrentDecoder, RecurrentEncoder

# Sizes `vaekit train` gives a seqvae when neither flags nor a config name them: small
# enough for CPUs (GRU backward passes dominate there), large enough for SMILES.
DEFAULT_SIZES = {"hidden": [128, 256], "latent_dim": 64}


class SequenceVAE(GaussianVAE):
    """A Gaussian VAE on token sequences (B, L) with a recurrent encoder and decoder."""

    data_kinds = ("sequence",)

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        Model.__init__(self)  # GaussianVAE's networks are images' and tables': built here
        if config.vocab_size is None:
            raise ConfigError(
                "model seqvae needs model.vocab_size, recorded when it starts training on "
                "sequences (data kind sequence)"
            )
        self.config = config
        self.shape = tuple(shape)
        self.latent_dim = config.latent_dim
        encoder_size, *decoder_sizes = config.hidden
        decoder_sizes = decoder_sizes or [encoder_size]
        vocab, embedding = config.vocab_size, config.embedding_dim
        self.encoder = RecurrentEncoder(vocab, embedding, encoder_size, config.latent_dim)
        self.likelihood = RecurrentDecoder(
            vocab,
            embedding,
            decoder_sizes[0],
            len(decoder_sizes),
            config.latent_dim,
            length=self.shape[0],
            word_dropout=config.word_dropout,
        )

    @staticmethod
    def configure(config: ModelConfig, data: DataSplits) -> None:
        """Record the vocabulary size and the likelihood's name."""
        if not data.vocabulary:
            raise ConfigError(f"model seqvae needs token sequences; {data.name} has no vocabulary")
        config.vocab_size = len(data.vocabulary)
        config.likelihood = "categorical"

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """p(x | z)'s parameters: z itself (the likelihood is the autoregressive decoder)."""
        return z

    @torch.no_grad()
    def generate(
        self,
        z: torch.Tensor,
        temperature: float = 0.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Token ids (B, L) decoded from codes z: greedy (temperature 0) or sampled."""
        return self.likelihood.generate(z, temperature, top_k, generator)

    @torch.no_grad()
    def sample_tokens(
        self,
        n: int,
        temperature: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """n sequences (n, L) from the model: z ~ p(z), then x ~ p(x | z) at `temperature`
        (1: the model's own distribution; 0: greedy)."""
        return self.generate(self.sample_prior(n, generator), temperature, top_k, generator)

    def extra_repr(self) -> str:
        return f"vocabulary {self.config.vocab_size} tokens, length {self.shape[0]}"
