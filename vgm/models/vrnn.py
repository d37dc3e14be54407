"""The variational RNN (Chung et al., 2015): a latent variable z_t at every step of a recurrent model.

    prior      p(z_t | h_{t-1})       = Normal(μ_p(h_{t-1}), σ_p(h_{t-1}))      (learned, not N(0, I))
    posterior  q(z_t | x_t, h_{t-1})  = Normal(μ_q(φ_x(x_t), h_{t-1}), σ_q(...))
    decoder    p(x_t | z_t, h_{t-1})  = Categorical or diagonal Normal of (φ_z(z_t), h_{t-1})
    recurrence h_t = GRU([φ_x(x_t), φ_z(z_t)], h_{t-1}),  h_0 = 0
    ELBO(x)    = Σ_t m_t ( E_q[log p(x_t | z_t, h_{t-1})] − KL(q(z_t | x_t, h_{t-1}) ‖ p(z_t | h_{t-1})) )
with m_t the mask of real steps, one reparameterised z_t per step (the KL of each step in closed form).
log p(x) is bounded by L_K = log (1/K) Σ_k Π_t p(x_t, z_t^k | h^k_{t-1}) / q(z_t^k | x_t, h^k_{t-1}),
K independent trajectories drawn from the filtering posterior.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from .nets import mlp
from ..registry import register_model
from .seqvae import check_common
from ..data.tokens import EOS, PAD
from .sequences import (LIKELIHOODS, SequenceModel, StepInput, StepOutput, check_input, mask, step_target, trim,
                        vocab_size)

MAX_IW_ROWS = 8192


@dataclass
class VRNNConfig:
    likelihood: str = field(default="categorical", metadata={"choices": LIKELIHOODS, "help": "p(x_t | ...) (set by the data)"})
    alphabet: str = field(default="", metadata={"help": "characters of the vocabulary (set by text data)"})
    input_dim: int = field(default=1, metadata={"help": "values per step of real-valued data (set by the data)"})
    max_len: int = field(default=32, metadata={"help": "longest training sequence (set by the data)"})
    embed_dim: int = 32
    hidden: int = 128
    latent_dim: int = 16
    beta: float = field(default=1.0, metadata={"help": "weight of the KL terms"})
    min_sigma: float = field(default=0.01, metadata={"help": "smallest σ of a Gaussian output"})


def normal(params: torch.Tensor) -> Normal:
    mu, s = params.chunk(2, dim=-1)
    return Normal(mu, F.softplus(s) + 1e-4)


@register_model("vrnn", data=("tokens", "sequences"), default_data="names")
class VRNN(SequenceModel):
    """Variational RNN (Chung et al., 2015): a latent per step, learned prior p(z_t | h_{t-1})."""

    Config = VRNNConfig

    def __init__(self, config: VRNNConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        check_common(c)
        if c.beta < 0:
            raise ValueError(f"beta must be >= 0, got {c.beta}")
        vocab = vocab_size(c.alphabet) if c.likelihood == "categorical" else 0
        e, h, d = c.embed_dim, c.hidden, c.latent_dim
        self.phi_x = StepInput(c.likelihood, vocab, c.input_dim, e)
        self.phi_z = mlp([d, e], final_activation=True)
        self.prior_net = mlp([h, h, 2 * d])
        self.enc_net = mlp([e + h, h, 2 * d])
        self.dec_net = mlp([e + h, h], final_activation=True)
        self.out = StepOutput(c.likelihood, h, vocab, c.input_dim, c.min_sigma)
        self.rnn = nn.GRUCell(2 * e, h)
        self.checked = False                      # data shape checked once

    def filter(self, x: torch.Tensor, use_mean: bool = False) -> dict[str, torch.Tensor]:
        """Run the model over x with z_t ~ q(z_t | x_t, h_{t-1}) (reparameterised; the mean if use_mean).

        Returns per sequence: log_px_z = Σ_t m_t log p(x_t|z_t,h), kl_units (N, d) = Σ_t m_t KL_t per unit,
        log_w = Σ_t m_t [log p(x_t|z_t,h) + log p(z_t|h) − log q(z_t|x_t,h)], activity rows μ_q − μ_p of the
        real steps, and recon: the mode/mean of p(x_t | z_t, h_{t-1}) at each step."""
        m = mask(x)
        n, steps = m.shape
        fx = self.phi_x(x)                                     # all steps at once
        h = fx.new_zeros(n, self.config.hidden)
        log_px_z = fx.new_zeros(n)
        log_w = fx.new_zeros(n)
        kl_units = fx.new_zeros(n, self.config.latent_dim)
        activity, recon = [], []
        for t in range(steps):
            mt = m[:, t]
            p = normal(self.prior_net(h))
            q = normal(self.enc_net(torch.cat([fx[:, t], h], -1)))
            z = q.mean if use_mean else q.rsample()
            fz = self.phi_z(z)
            px = self.out(self.dec_net(torch.cat([fz, h], -1)))
            lp = torch.where(mt, px.log_prob(step_target(x[:, t])), 0.0)
            log_px_z = log_px_z + lp
            kl_units = kl_units + torch.where(mt[:, None], kl_divergence(q, p), 0.0)
            log_w = log_w + lp + torch.where(mt, (p.log_prob(z) - q.log_prob(z)).sum(-1), 0.0)
            activity.append((q.mean - p.mean)[mt])
            recon.append(px.probs.argmax(-1) if self.out.categorical else px.mean)
            h = torch.where(mt[:, None], self.rnn(torch.cat([fx[:, t], fz], -1), h), h)
        return {"log_px_z": log_px_z, "kl_units": kl_units, "log_w": log_w,
                "activity": torch.cat(activity), "recon": torch.stack(recon, 1)}

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence: recon = −Σ_t log p(x_t|z_t,h_{t-1}), kl = Σ_t KL_t, elbo; kl_units; activity rows."""
        f = self.filter(x)
        kl = f["kl_units"].sum(-1)
        recon = -f["log_px_z"]
        return {"recon": recon, "kl": kl, "elbo": -(recon + kl), "kl_units": f["kl_units"], "activity": f["activity"]}

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per sequence: loss = recon + β · kl (= −ELBO when β = 1)."""
        if self.training and not self.checked:
            check_input(x, self.config)                         # once, at the first training step
            self.checked = True
        t = self.terms(trim(x))
        return {"loss": t["recon"] + self.config.beta * t["kl"], "recon": t["recon"], "kl": t["kl"], "elbo": t["elbo"]}

    @torch.no_grad()
    def log_px(self, x: torch.Tensor, k: int = 1000) -> torch.Tensor:
        """L_K with K trajectories per sequence, run as one batch of K·N rows (in chunks)."""
        n = x.shape[0]
        chunk = max(1, MAX_IW_ROWS // n)
        parts = []
        for s in range(0, k, chunk):
            c = min(chunk, k - s)
            log_w = self.filter(x.repeat(c, *[1] * (x.dim() - 1)))["log_w"].view(c, n)
            parts.append(torch.logsumexp(log_w, 0))
        return torch.logsumexp(torch.stack(parts), 0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Ancestral generation: z_t ~ p(z_t|h_{t-1}), x_t ~ p(x_t|z_t,h_{t-1}) (real values: the mean);
        tokens until EOS (at most 2 x max_len; PAD after), real values for max_len steps."""
        c = self.config
        categorical = c.likelihood == "categorical"
        dev = next(self.parameters()).device
        h = torch.zeros(n, c.hidden, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        out = []
        for _ in range(2 * c.max_len if categorical else c.max_len):
            z = normal(self.prior_net(h)).sample()
            fz = self.phi_z(z)
            xt = self.out.draw(self.dec_net(torch.cat([fz, h], -1)))
            if categorical:
                xt = torch.where(done, PAD, xt)
                done = done | (xt == EOS)
            out.append(xt)
            h = self.rnn(torch.cat([self.phi_x(xt), fz], -1), h)
            if categorical and bool(done.all()):
                break
        return torch.stack(out, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mode (tokens) or mean (real values) of p(x_t | z_t, h_{t-1}) with z_t the posterior mean."""
        x = trim(x)
        r = self.filter(x, use_mean=True)["recon"]
        return torch.where(mask(x), r, PAD) if r.dtype == torch.long else r
