"""A VAE whose posterior is a Gaussian followed by inverse autoregressive flow steps (Kingma et al., 2016).

    z_0 = μ(x) + σ(x) ⊙ ε,  ε ~ N(0, I);  the encoder also gives a context h(x)
    step t:  [m, s] = MADE_t(z_{t−1}) + (its first hidden layer) C_t h,   σ_t = sigmoid(s + FORGET_BIAS)
             z_t = σ_t ⊙ z_{t−1} + (1 − σ_t) ⊙ m                 (Kingma et al.'s numerically stable update)
    log q(z_T|x) = log N(z_0; μ, σ²) − Σ_t Σ_i log σ_t,i         (exact: ∂z_t/∂z_{t−1} is triangular, diagonal σ_t)
MADE is vgm.flows' masked network: m_i, s_i depend on z_<i only (the order is reversed on every other step).
FORGET_BIAS makes σ_t ≈ 0.88 at the start, so each step first changes z only slightly, as Kingma et al. advise.
Sampling is one parallel pass per step, and log q of the drawn z comes from the same pass; log q of any other z
inverts the steps (latent_dim sequential passes each). E_q[z] has no closed form: `mean` is a Monte Carlo average.
The prior and the likelihood are the VAE's (standard or flow prior); the KL is the one-sample estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal, constraints

from ..flows.made import MADE
from ..registry import register_model
from .nets import Encoder
from .sampled_mean import sampled_mean
from .vae import VAE, VAEConfig

FORGET_BIAS = 2.0


class IAFStep(nn.Module):
    """One IAF step on z (..., d) given the context h (..., H): z' = σ ⊙ z + (1 − σ) ⊙ m, log|det ∂z'/∂z| = Σ log σ."""

    def __init__(self, features: int, hidden: int, context: int, reverse: bool):
        super().__init__()
        self.made = MADE(features, hidden, params=2)
        self.context = nn.Linear(context, hidden)
        self.reverse = reverse

    def params(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """m and log σ, each (..., d); value i a function of z_<i (natural order) or z_>i (reversed) and h."""
        zi = z.flip(-1) if self.reverse else z
        net = self.made.net
        p = net[1:](net[0](zi) + self.context(h)).reshape(*z.shape, 2)
        if self.reverse:
            p = p.flip(-2)
        return p[..., 0], F.logsigmoid(p[..., 1] + FORGET_BIAS)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, log_sigma = self.params(z, h)
        sigma = log_sigma.exp()
        return sigma * z + (1 - sigma) * m, log_sigma.sum(-1)

    def inverse(self, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """z with forward(z) = y: after pass i the first i values (in the step's order) are exact."""
        z = torch.zeros_like(y)
        for _ in range(y.shape[-1]):
            m, log_sigma = self.params(z, h)
            sigma = log_sigma.exp()
            z = (y - (1 - sigma) * m) / sigma
        return z


class IAFPosterior(Distribution):
    """q(z|x): Normal(loc, scale) pushed through the IAF steps with context h; batch (N,), event (d,)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, context: torch.Tensor, steps: nn.ModuleList):
        self.base = Independent(Normal(loc, scale, validate_args=False), 1)
        self.context, self.steps = context, steps
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None      # (z, log q(z)) of the last draw
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def flow(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_T and Σ_t log|det ∂z_t/∂z_{t−1}|."""
        z, log_det = z0, 0.0
        for step in self.steps:
            z, ld = step(z, self.context)
            log_det = log_det + ld
        return z, log_det

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        z0 = self.base.rsample(torch.Size(sample_shape))
        z, log_det = self.flow(z0)
        self._last = (z, self.base.log_prob(z0) - log_det)
        return z

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Exact log q(z|x): from the sampling pass for the last draw, else by inverting the steps."""
        if self._last is not None and z is self._last[0]:
            return self._last[1]
        z0 = z
        for step in reversed(self.steps):
            z0 = step.inverse(z0, self.context)
        return self.base.log_prob(z0) - self.flow(z0)[1]

    @property
    def mean(self) -> torch.Tensor:
        return sampled_mean(self)


@dataclass
class IAFConfig(VAEConfig):
    hidden: tuple[int, ...] = field(default=(200, 200), metadata={"help": "encoder widths; the decoder mirrors them"})
    latent_dim: int = 50
    iaf_depth: int = field(default=2, metadata={"help": "IAF steps after the Gaussian"})
    iaf_hidden: int = field(default=200, metadata={"help": "hidden units of each step's MADE (two layers), and the "
                                                           "width of the encoder's context h"})


@register_model("iaf")
class IAF(VAE):
    """VAE with an inverse-autoregressive-flow posterior: a Gaussian and IAF steps built from MADE."""

    Config = IAFConfig

    def __init__(self, config: IAFConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if c.iaf_depth < 1 or c.iaf_hidden < 1:
            raise ValueError(f"an IAF posterior needs iaf_depth >= 1 and iaf_hidden >= 1, got {c.iaf_depth} "
                             f"and {c.iaf_hidden}")
        self.encoder = Encoder(c.arch, c.input_shape, c.hidden, 2 * c.latent_dim + c.iaf_hidden)
        self.steps = nn.ModuleList(IAFStep(c.latent_dim, c.iaf_hidden, c.iaf_hidden, reverse=i % 2 == 1)
                                   for i in range(c.iaf_depth))

    def encode(self, x: torch.Tensor) -> IAFPosterior:
        d = self.config.latent_dim
        mu, s, h = self.encoder(x).split([d, d, self.config.iaf_hidden], dim=-1)
        return IAFPosterior(mu, F.softplus(s) + 1e-6, h, self.steps)
