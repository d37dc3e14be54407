"""The sentence VAE (Bowman et al., 2016): one global latent z per sequence, RNN encoder and RNN decoder.

    q(z|x)   = Normal(μ(h_T), diag σ(h_T)²),  h_T the last state of a GRU/LSTM reading x_1..x_T
    p(z)     = Normal(0, I)
    p(x|z)   = Π_t p(x_t | x_<t, z): a GRU/LSTM whose state starts at tanh(W z) and whose input at step t is
               [embed(x_{t-1}), z]  (x_0 = BOS, or a zero vector for real values)
    ELBO     = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)),   sums over the steps of each sequence only (masks)
    loss     = −E_q[log p(x|z)] + β_t · Σ_d max(λ, KL_d)

with the remedies for posterior collapse as options: KL annealing β_t (linear, Bowman et al. 2016; cyclical,
Fu et al. 2019), word dropout (each decoder input token replaced by UNK with probability p; real-valued steps
zeroed), and free bits λ per latent unit (Kingma et al., 2016; on the batch-mean KL of each unit).
The annealing step counter is a buffer of the model, so a saved or resumed run continues its schedule exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence
from torch.nn.utils.rnn import pack_padded_sequence

from ..registry import register_model
from ..data.tokens import EOS, PAD, UNK
from .sequences import (ANNEAL, LIKELIHOODS, SequenceModel, StepInput, StepOutput, check_input, free_bits_kl, kl_weight, lengths, mask, masked_log_prob, trim, vocab_size)

MAX_IW_ROWS = 8192      # sequences decoded at once when estimating log p(x)


@dataclass
class SeqVAEConfig:
    likelihood: str = field(default="categorical", metadata={"choices": LIKELIHOODS, "help": "p(x_t | ...) (set by the data)"})
    alphabet: str = field(default="", metadata={"help": "characters of the vocabulary (set by text data)"})
    input_dim: int = field(default=1, metadata={"help": "values per step of real-valued data (set by the data)"})
    max_len: int = field(default=32, metadata={"help": "longest training sequence (set by the data)"})
    cell: str = field(default="gru", metadata={"choices": ("gru", "lstm"), "help": "recurrent cell"})
    embed_dim: int = 32
    hidden: int = 128
    latent_dim: int = 16
    anneal: str = field(default="none", metadata={"choices": ANNEAL, "help": "KL annealing schedule"})
    anneal_steps: int = field(default=1000, metadata={"help": "steps of the linear ramp, or the cyclical period"})
    word_dropout: float = field(default=0.0, metadata={"help": "probability of replacing a decoder input by UNK "
                                                               "(1: the inputless decoder)"})
    free_bits: float = field(default=0.0, metadata={"help": "λ, nats per latent unit below which KL is not pushed"})
    beta: float = field(default=1.0, metadata={"help": "weight of the KL term (after annealing)"})
    min_sigma: float = field(default=0.01, metadata={"help": "smallest σ of a Gaussian output"})


def check_common(c) -> None:
    """Validate the fields shared by the sequence models' configs (ValueError -> a one-line CLI error)."""
    if c.likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {c.likelihood!r}")
    if c.likelihood == "categorical" and not c.alphabet:
        raise ValueError("a categorical model needs an alphabet: train it on text data (names, text)")
    for name in ("input_dim", "max_len", "embed_dim", "hidden", "latent_dim"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
    if not c.min_sigma > 0:
        raise ValueError(f"min_sigma must be > 0, got {c.min_sigma}")


class Autoregressive(Distribution):
    """p(x | z) of a sequence model: log_prob(x) by teacher forcing, sample() by ancestral generation.

    z may carry extra leading dimensions (importance samples): z (..., N, d) scores x (N, T[, D]) -> (..., N).
    """

    arg_constraints: dict = {}

    def __init__(self, model: "SeqVAE", z: torch.Tensor):
        self.model, self.z = model, z
        super().__init__(batch_shape=z.shape[:-1], validate_args=False)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        lead = self.z.shape[:-1]
        xs = x.expand(*lead, *x.shape[1:]).reshape(-1, *x.shape[1:])
        return self.model.decoder_log_prob(xs, self.z.reshape(-1, self.z.shape[-1])).reshape(lead)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.model.generate(self.z)


@register_model("seqvae", data=("tokens", "sequences"), default_data="names")
class SeqVAE(SequenceModel):
    """Sentence VAE (Bowman et al., 2016): RNN encoder -> global z -> RNN decoder, with collapse remedies."""

    Config = SeqVAEConfig

    def __init__(self, config: SeqVAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        check_common(c)
        if c.anneal not in ANNEAL:
            raise ValueError(f"anneal must be one of {', '.join(ANNEAL)}, got {c.anneal!r}")
        if c.cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be gru or lstm, got {c.cell!r}")
        if c.anneal_steps < 1 or not 0 <= c.word_dropout <= 1 or c.free_bits < 0 or c.beta < 0:
            raise ValueError("need anneal_steps >= 1, 0 <= word_dropout <= 1 (1: Bowman's inputless decoder), "
                             "free_bits >= 0 and beta >= 0")
        vocab = vocab_size(c.alphabet) if c.likelihood == "categorical" else 0
        rnn = nn.GRU if c.cell == "gru" else nn.LSTM
        self.embed = StepInput(c.likelihood, vocab, c.input_dim, c.embed_dim)
        self.encoder = rnn(c.embed_dim, c.hidden, batch_first=True)
        self.to_q = nn.Linear(c.hidden, 2 * c.latent_dim)
        self.z_to_h = nn.Linear(c.latent_dim, c.hidden)
        self.decoder = rnn(c.embed_dim + c.latent_dim, c.hidden, batch_first=True)
        self.out = StepOutput(c.likelihood, c.hidden, vocab, c.input_dim, c.min_sigma)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))      # training steps taken (annealing)
        self.checked = False                                                  # data shape checked once
        self.register_buffer("prior_loc", torch.zeros(c.latent_dim), persistent=False)
        self.register_buffer("prior_scale", torch.ones(c.latent_dim), persistent=False)

    @property
    def prior(self) -> Distribution:
        return Independent(Normal(self.prior_loc, self.prior_scale), 1)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x) from the encoder's state after each sequence's last real step (packed: padding is never read)."""
        lens = lengths(x).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.embed(x), lens, batch_first=True, enforce_sorted=False)
        _, h = self.encoder(packed)
        h = h[0] if isinstance(h, tuple) else h
        mu, s = self.to_q(h[-1]).chunk(2, dim=-1)
        return Independent(Normal(mu, F.softplus(s) + 1e-6), 1)

    def decode(self, z: torch.Tensor) -> Autoregressive:
        return Autoregressive(self, z)

    def initial_state(self, z: torch.Tensor):
        h = torch.tanh(self.z_to_h(z))[None]
        return h if self.config.cell == "gru" else (h, torch.zeros_like(h))

    def decoder_log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Σ_t log p(x_t | x_<t, z) over each sequence's real steps, by teacher forcing (word dropout in training)."""
        n, t = x.shape[:2]
        inputs = torch.cat([self.out.first_input(n, x), x[:, :-1]], dim=1)
        drop = None
        if self.training and self.config.word_dropout > 0:
            drop = torch.rand(n, t, device=x.device) < self.config.word_dropout
            drop[:, 0] = False                                     # BOS is always seen
            if inputs.dtype == torch.long:
                inputs = torch.where(drop & (inputs != PAD), UNK, inputs)
        e = self.embed(inputs)
        if drop is not None and inputs.dtype != torch.long:
            e = e * (~drop)[..., None]
        o, _ = self.decoder(torch.cat([e, z[:, None].expand(-1, t, -1)], dim=-1), self.initial_state(z))
        return masked_log_prob(self.out(o), x, mask(x))

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence: recon = −log p(x|z) with z ~ q (reparameterised), kl (closed form), kl_units, elbo;
        activity = E_q[z] (for the active-unit count)."""
        q = self.encode(x)
        z = q.rsample()
        recon = -self.decoder_log_prob(x, z)
        kl_units = kl_divergence(q.base_dist, self.prior.base_dist)
        kl = kl_units.sum(-1)
        return {"recon": recon, "kl": kl, "elbo": -(recon + kl), "kl_units": kl_units, "activity": q.mean}

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence: loss = recon + β_t · KL (free bits applied in training), and the terms to log.

        Under word dropout in training the reconstruction term scores x behind UNK-corrupted decoder inputs:
        that is the objective, not the model's likelihood, so it is logged as recon_word_dropout and no
        recon/elbo is reported for such batches (validation rows and `vgm evaluate` give the model's ELBO).
        The annealing step advances only on training steps that can take a gradient, as betavae's does."""
        c = self.config
        if self.training and not self.checked:
            check_input(x, c)                                   # once, at the first training step
            self.checked = True
        t = self.terms(trim(x))
        beta = c.beta * kl_weight(self.step, c.anneal, c.anneal_steps)
        if self.training and torch.is_grad_enabled():
            self.step += 1
        kl_term = free_bits_kl(t["kl_units"], c.free_bits) if self.training else t["kl"]
        loss = t["recon"] + beta * kl_term
        out = {"loss": loss}
        if self.training and c.word_dropout > 0:
            out["recon_word_dropout"] = t["recon"]
            out["kl"] = t["kl"]
        else:
            out.update(recon=t["recon"], kl=t["kl"], elbo=t["elbo"])
        out["kl_weight"] = torch.as_tensor(beta, device=loss.device).expand_as(loss)
        return out

    @torch.no_grad()
    def log_px(self, x: torch.Tensor, k: int = 1000) -> torch.Tensor:
        """L_K = log (1/K) Σ_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al., 2016), in chunks of samples."""
        q, prior = self.encode(x), self.prior
        chunk = max(1, MAX_IW_ROWS // x.shape[0])
        parts = []
        for s in range(0, k, chunk):
            z = q.sample((min(chunk, k - s),))
            log_w = self.decode(z).log_prob(x) + prior.log_prob(z) - q.log_prob(z)
            parts.append(torch.logsumexp(log_w, 0))
        return torch.logsumexp(torch.stack(parts), 0) - math.log(k)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, greedy: bool = False) -> torch.Tensor:
        """Decode z step by step, feeding each output back: tokens (sampled, or argmax if greedy) until EOS
        (at most 2 x max_len; PAD after EOS), or max_len real-valued steps (the means)."""
        c, n = self.config, z.shape[0]
        categorical = c.likelihood == "categorical"
        steps = 2 * c.max_len if categorical else c.max_len
        state, inp = self.initial_state(z), self.out.first_input(n, z if categorical else z.new_zeros(n, 1, c.input_dim))
        done = torch.zeros(n, dtype=torch.bool, device=z.device)
        out = []
        for _ in range(steps):
            o, state = self.decoder(torch.cat([self.embed(inp), z[:, None]], dim=-1), state)
            xt = self.out.draw(o[:, 0], greedy)
            if categorical:
                xt = torch.where(done, PAD, xt)
                done = done | (xt == EOS)
            out.append(xt)
            inp = xt[:, None]
            if categorical and bool(done.all()):
                break
        return torch.stack(out, 1)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.generate(self.prior.sample((n,)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Greedy decoding of z = the mean of q(z|x)."""
        return self.generate(self.encode(trim(x)).mean, greedy=True)

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Greedy decodings along the line between the posterior means of sequences a and b (each (1, T...))."""
        za, zb = self.encode(trim(a)).mean, self.encode(trim(b)).mean
        w = torch.linspace(0, 1, steps, device=za.device)[:, None]
        return self.generate((1 - w) * za + w * zb, greedy=True)
