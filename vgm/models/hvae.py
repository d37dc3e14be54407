"""hvae2: two stochastic layers, the 2-layer architecture of the IWAE paper (Burda et al., 2016), trained on
the (M)IWAE bound of vgm.models.iwae (K = 1: the ELBO).

    generative:  z2 ~ N(0, I),  z1 | z2 ~ N(μ_p(z2), σ_p(z2)²),  x | z1 ~ likelihood(decoder(z1))
    inference:   z1 | x ~ N(μ_q(x), σ_q(x)²),  z2 | z1 ~ N(μ_r(z1), σ_r(z1)²)
    log w = log p(x|z1) + log p(z1|z2) + log p(z2) − log q(z1|x) − log q(z2|z1)
Burda et al.: x –100–100→ z1 (100 units) –50–50→ z2 (50 units), mirrored in the generative model.
For the interface z is one vector (z1, z2), of latent_dim + latent2_dim values: encode(x) is the joint
q(z1, z2 | x), `prior` the joint p(z1, z2), decode(z) reads z1 only. So vgm.elbo (one-sample KL estimate),
vgm.log_px (importance sampling over both layers) and vgm.evaluate apply unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal, constraints
from torch.func import functional_call

from ..base import Model
from ..registry import register_model
from .iwae import ESTIMATORS, check_samples, iw_terms
from .likelihood import LIKELIHOODS, PARAMS_PER_VALUE, Likelihood
from .nets import Decoder, Encoder, mlp
from .sampled_mean import sampled_mean


def gaussian(params: torch.Tensor) -> Normal:
    """Normal(μ, softplus(s) + 1e-6) from the last axis split in two halves [μ, s] (a diagonal Gaussian layer)."""
    mu, s = params.chunk(2, dim=-1)
    return Normal(mu, F.softplus(s) + 1e-6, validate_args=False)


class TwoLayerPosterior(Distribution):
    """q(z1, z2 | x) = q(z1|x) q(z2|z1) on z = (z1, z2); batch (N,), event (d1 + d2,).

    `frozen`: the density with the parameters of q(z2|z1)'s network (and of q(z1|x)) detached, gradient flowing
    only through z (what DReG's stop-gradient means for a hierarchical posterior)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc1: torch.Tensor, scale1: torch.Tensor, layer2: nn.Module, frozen: bool = False):
        self.q1 = Normal(loc1, scale1, validate_args=False)
        self.layer2, self.frozen = layer2, frozen
        self.d1 = loc1.shape[-1]
        d2 = layer2[-1].out_features // 2
        super().__init__(loc1.shape[:-1], torch.Size([self.d1 + d2]), validate_args=False)

    def q2(self, z1: torch.Tensor) -> Normal:
        if not self.frozen:
            return gaussian(self.layer2(z1))
        detached = {name: p.detach() for name, p in self.layer2.named_parameters()}
        return gaussian(functional_call(self.layer2, detached, (z1,)))

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        z1 = self.q1.rsample(torch.Size(sample_shape))
        return torch.cat([z1, self.q2(z1).rsample()], dim=-1)

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z[..., :self.d1], z[..., self.d1:]
        return self.q1.log_prob(z1).sum(-1) + self.q2(z1).log_prob(z2).sum(-1)

    def detached(self) -> "TwoLayerPosterior":
        return TwoLayerPosterior(self.q1.loc.detach(), self.q1.scale.detach(), self.layer2, frozen=True)

    @property
    def mean(self) -> torch.Tensor:
        """E[z1] = μ_q(x) exactly; E[z2] = E_q(z1|x)[μ_r(z1)] by Monte Carlo (vgm.models.sampled_mean)."""
        return torch.cat([self.q1.loc, sampled_mean(self)[..., self.d1:]], dim=-1)


class TwoLayerPrior(Distribution):
    """p(z1, z2) = N(z2; 0, I) p(z1|z2) on z = (z1, z2); event (d1 + d2,)."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, layer1: nn.Module, loc2: torch.Tensor, scale2: torch.Tensor):
        self.layer1, self.p2 = layer1, Normal(loc2, scale2, validate_args=False)
        self.d1 = layer1[-1].out_features // 2
        super().__init__(torch.Size(), torch.Size([self.d1 + loc2.shape[-1]]), validate_args=False)

    def sample(self, sample_shape: torch.Size | tuple = torch.Size(), temperature: float = 1.0) -> torch.Tensor:
        """z2 = T·ε2, z1 = μ_p(z2) + T·σ_p(z2)·ε1: T = 1 draws from p; T < 1 shrinks each layer's noise."""
        with torch.no_grad():
            z2 = temperature * self.p2.sample(torch.Size(sample_shape))
            p1 = gaussian(self.layer1(z2))
            z1 = p1.loc + temperature * p1.scale * torch.randn_like(p1.loc)
            return torch.cat([z1, z2], dim=-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z[..., :self.d1], z[..., self.d1:]
        return self.p2.log_prob(z2).sum(-1) + gaussian(self.layer1(z2)).log_prob(z1).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """E[z1] = E[μ_p(z2)] by Monte Carlo (vgm.models.sampled_mean); E[z2] = 0."""
        return sampled_mean(self)


@dataclass
class HVAE2Config:
    input_shape: tuple[int, ...] = (1, 28, 28)
    hidden: tuple[int, ...] = field(default=(100, 100), metadata={"help": "layers between x and z1 (the decoder "
                                                                          "mirrors them)"})
    latent_dim: int = field(default=100, metadata={"help": "units of z1"})
    hidden2: tuple[int, ...] = field(default=(50, 50), metadata={"help": "layers between z1 and z2, both ways"})
    latent2_dim: int = field(default=50, metadata={"help": "units of z2"})
    likelihood: str = field(default="bernoulli", metadata={"choices": LIKELIHOODS, "help": "p(x|z1)"})
    sigma: float = field(default=0.1, metadata={"help": "gaussian σ (its initial value when learned)"})
    learn_sigma: bool = field(default=False, metadata={"help": "learn one σ shared by all values"})
    levels: int = field(default=0, metadata={"help": "grey levels of the data; set from the dataset (0: continuous)"})
    k: int = field(default=1, metadata={"help": "importance samples K per bound (1: the ELBO)"})
    m: int = field(default=1, metadata={"help": "M independent K-sample bounds averaged (MIWAE)"})
    estimator: str = field(default="standard", metadata={"choices": ESTIMATORS, "help": "encoder gradient: "
                                                         "autograd of L_K, or the doubly reparameterised one"})


@register_model("hvae2")
class HVAE2(Model):
    """Two stochastic layers z1, z2 (Burda et al.'s 2-layer model), trained on L_K (K = 1: the ELBO)."""

    Config = HVAE2Config

    def __init__(self, config: HVAE2Config | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        c.input_shape, c.hidden, c.hidden2 = tuple(c.input_shape), tuple(c.hidden), tuple(c.hidden2)
        if c.latent_dim < 1 or c.latent2_dim < 1:
            raise ValueError(f"latent_dim and latent2_dim must be >= 1, got {c.latent_dim} and {c.latent2_dim}")
        check_samples(c.k, c.m)
        if c.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {c.estimator!r} (choose {' or '.join(ESTIMATORS)})")
        d1, d2 = c.latent_dim, c.latent2_dim
        self.encoder = Encoder("mlp", c.input_shape, c.hidden, 2 * d1)               # q(z1|x)
        self.encoder2 = mlp([d1, *c.hidden2, 2 * d2])                                 # q(z2|z1)
        self.decoder2 = mlp([d2, *reversed(c.hidden2), 2 * d1])                       # p(z1|z2)
        self.decoder = Decoder("mlp", c.input_shape, c.hidden, d1, PARAMS_PER_VALUE.get(c.likelihood, 1))
        self.likelihood = Likelihood(c.likelihood, len(c.input_shape), c.sigma, c.learn_sigma, c.levels)
        self.register_buffer("prior_loc", torch.zeros(d2), persistent=False)
        self.register_buffer("prior_scale", torch.ones(d2), persistent=False)

    @property
    def prior(self) -> TwoLayerPrior:
        return TwoLayerPrior(self.decoder2, self.prior_loc, self.prior_scale)

    def encode(self, x: torch.Tensor) -> TwoLayerPosterior:
        q1 = gaussian(self.encoder(x))
        return TwoLayerPosterior(q1.loc, q1.scale, self.encoder2)

    def decode(self, z: torch.Tensor) -> Distribution:
        return self.likelihood(self.decoder(z[..., :self.config.latent_dim]))

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The (M)IWAE terms (vgm.models.iwae.iw_terms) over both layers; K = M = 1 is the one-sample ELBO."""
        c = self.config
        return iw_terms(self, x, c.k, c.m, c.estimator)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n draws (z1, z2) ~ p decoded to the mean of p(x|z1); T scales the noise of both layers."""
        return self.decode(self.prior.sample((n,), temperature)).mean
