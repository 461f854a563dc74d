"""Recurrent networks for token sequences (Bowman et al. 2016; Gomez-Bombarelli et al. 2018).

`RecurrentEncoder`: token embedding -> bidirectional GRU over each sequence's real tokens
(packed, so padding never enters) -> the final states of both directions -> a linear map
to z_mean and z_log_var.

`RecurrentDecoder` is the likelihood p(x | z) = prod_t Cat(x_t | x_<t, z): a GRU whose
initial state is tanh(W z + b) and whose input at every step is the previous token's
embedding concatenated with z. Training feeds the true previous tokens (teacher forcing);
with word dropout a share of them (never <bos>) is replaced by <unk>, so the decoder must
lean on z (Bowman et al. 2016). -log p(x | z) is the cross-entropy summed over the real
tokens, <eos> included and padding left out: nats per sequence. `generate` decodes a batch
of codes step by step, all sequences together, greedily or by sampling (temperature,
top-k), until every row has emitted <eos>.

Token ids: <pad> 0, <bos> 1, <eos> 2, <unk> 3 (`vaekit.data.sequences`); a stored sequence
is its tokens, <eos>, then padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from vaekit.core.noise import rand_batch
from vaekit.data.sequences import BOS, EOS, PAD, UNK, token_counts


def trimmed(tokens: torch.Tensor) -> torch.Tensor:
    """`tokens` (B, L) cut after the batch's longest sequence: no step runs on padding alone."""
    return tokens[:, : int(token_counts(tokens).max())]


class RecurrentEncoder(nn.Module):
    """Token ids (B, L) -> `heads` tensors (B, latent_dim) through a bidirectional GRU."""

    def __init__(
        self, vocab_size: int, embedding_dim: int, hidden: int, latent_dim: int, heads: int = 2
    ) -> None:
        super().__init__()
        self.heads = heads
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.gru = nn.GRU(embedding_dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, heads * latent_dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lengths = token_counts(tokens).cpu()  # pack_padded_sequence takes them on the CPU
        embedded = self.embedding(trimmed(tokens))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        _, final = self.gru(packed)  # (2, B, hidden): forward and backward directions
        features = torch.cat([final[0], final[1]], dim=1)
        return tuple(self.head(features).chunk(self.heads, dim=1))


class RecurrentDecoder(nn.Module):
    """The autoregressive categorical likelihood p(x | z); its parameters are z itself."""

    name = "categorical"

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden: int,
        layers: int,
        latent_dim: int,
        length: int,
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.length = length  # steps of generation: the stored width L (tokens + <eos>)
        self.word_dropout = word_dropout
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.initial = nn.Linear(latent_dim, layers * hidden)
        self.gru = nn.GRU(embedding_dim + latent_dim, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def initial_state(self, z: torch.Tensor) -> torch.Tensor:
        """The GRU's initial state from z: (layers, B, hidden)."""
        state = torch.tanh(self.initial(z)).view(len(z), self.layers, self.hidden)
        return state.transpose(0, 1).contiguous()

    def step_inputs(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Each step's input (B, T, embedding_dim + latent_dim): the token's embedding and z."""
        embedded = self.embedding(tokens)
        return torch.cat([embedded, z.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=2)

    def teacher_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        """The decoder's inputs for `targets` (B, T): <bos> then the targets shifted right,
        with word dropout's <unk> in training."""
        bos = torch.full_like(targets[:, :1], BOS)
        inputs = torch.cat([bos, targets[:, :-1]], dim=1)
        if self.training and self.word_dropout > 0:
            drop = rand_batch(inputs.shape, device=inputs.device) < self.word_dropout
            drop[:, 0] = False  # <bos> stays
            inputs = inputs.masked_fill(drop & (inputs != PAD), UNK)
        return inputs

    def logits(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, vocab) of `targets` (B, T) given z (B, latent_dim)."""
        inputs = self.step_inputs(self.teacher_inputs(targets), z)
        outputs, _ = self.gru(inputs, self.initial_state(z))
        return self.out(outputs)

    def token_nll(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x_t | x_<t, z) of every position (B, T), 0 at padding, in fp32."""
        targets = trimmed(x)
        logits = self.logits(z, targets).float()
        return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD, reduction="none")

    def nll(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per sequence (B,): summed over its tokens and <eos>."""
        return self.token_nll(z, x).sum(1)

    def nll_sum(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) summed over the batch's sequences."""
        return self.token_nll(z, x).sum()

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """The greedy decoding of z (B, L) (what "E[x | z]" is for images: the decoder's
        single best guess; a sequence has no mean)."""
        return self.generate(z)

    @torch.no_grad()
    def generate(
        self,
        z: torch.Tensor,
        temperature: float = 0.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Token ids (B, L) decoded from z, every row a sequence, <eos>, padding.

        temperature 0: greedy (the most likely token each step); > 0: sampled from the
        softmax of logits / temperature, among the `top_k` most likely tokens (0: all).
        <pad> and <bos> are never emitted; a row still open at the last step ends there
        with <eos>."""
        batch = len(z)
        state = self.initial_state(z)
        token = torch.full((batch, 1), BOS, dtype=torch.long, device=z.device)
        out = torch.full((batch, self.length), PAD, dtype=torch.long, device=z.device)
        done = torch.zeros(batch, dtype=torch.bool, device=z.device)
        eos = torch.tensor([EOS], device=z.device)
        for t in range(self.length):
            outputs, state = self.gru(self.step_inputs(token, z), state)
            logits = self.out(outputs[:, 0]).float()
            logits[:, [PAD, BOS, UNK]] = -torch.inf  # never targets in training
            if t == self.length - 1:  # the stored width holds no longer sequence
                logits = torch.full_like(logits, -torch.inf).index_fill_(1, eos, 0.0)
            token = choose_tokens(logits, temperature, top_k, generator).unsqueeze(1)
            out[:, t] = token[:, 0].masked_fill(done, PAD)
            done |= token[:, 0] == EOS
            if bool(done.all()):
                break
        return out


def choose_tokens(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of `logits` (B, V): the argmax (temperature 0), else a draw from
    softmax(logits / temperature) restricted to the top_k largest (0: all)."""
    if temperature <= 0:
        return logits.argmax(1)
    if 0 < top_k < logits.shape[1]:
        cut = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < cut, -torch.inf)
    probabilities = torch.softmax(logits / temperature, dim=1)
    return torch.multinomial(probabilities, 1, generator=generator)[:, 0]
