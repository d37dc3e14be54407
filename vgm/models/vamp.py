"""The VampPrior (Tomczak & Welling, 2018): the prior is the mixture of the encoder's posteriors at K learned
pseudo-inputs u_1..u_K,

    p(z) = (1/K) Σ_k q(z | u_k),     log p(z) = logsumexp_k log q(z | u_k) − log K,
the form the aggregate posterior (1/N) Σ_n q(z|x_n), the ELBO's optimal prior, takes with K ≪ N "inputs".
The prior is a torch MixtureSameFamily, so vgm.elbo (whose KL is then the one-sample estimate
log q(z|x) − log p(z): no closed form exists), vgm.log_px and vgm.evaluate work unchanged; the gradient reaches
the pseudo-inputs and the encoder through the prior too. Pseudo-inputs of [0, 1] data (Bernoulli-type
likelihoods) are kept in [0, 1] by a hard tanh and start at N(0.05, 0.01²) per value, Tomczak & Welling's MNIST
set-up; other data get unbounded pseudo-inputs starting at N(0, 1).

log p(z) needs all K component densities of every z. torch's MixtureSameFamily.log_prob forms them as an
(..., K, d) tensor; VampMixture writes Σ_d log N(z_d; μ_kd, σ_kd) as three matrix products instead,
    −½ [ (z²) · aᵀ − 2 z · (aμ)ᵀ + Σ_d a μ² ] − Σ_d log σ − (d/2) log 2π,     a = 1/σ²,
in float64 (the expansion cancels large terms), about 40× faster for K = 500 and equal to the direct form to
rounding (tested), which makes `vgm evaluate --iw-samples 5000` affordable.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily

from ..registry import register_model
from .vae import VAE, VAEConfig

UNIT_INTERVAL = ("bernoulli", "continuous-bernoulli")
PSEUDO_INIT = (0.05, 0.01)     # mean and standard deviation of the [0, 1] pseudo-inputs at the start


class VampMixture(MixtureSameFamily):
    """(1/K) Σ_k N(z; μ_k, diag σ_k²): a MixtureSameFamily of Independent Normals whose log_prob uses matrix
    products (module docstring); sampling, mean and variance are torch's."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        comp = self.component_distribution.base_dist                  # Normal, (K, d)
        mu, sd = comp.loc.double(), comp.scale.double()
        a = sd.pow(-2)
        zz = z.double()
        quad = zz.pow(2) @ a.T - 2 * zz @ (a * mu).T + (a * mu.pow(2)).sum(-1)      # (..., K)
        log_comp = -0.5 * quad - sd.log().sum(-1) - 0.5 * mu.shape[-1] * math.log(2 * math.pi)
        log_mix = torch.log_softmax(self.mixture_distribution.logits.double(), dim=-1)
        return torch.logsumexp(log_comp + log_mix, dim=-1).to(z.dtype)


@dataclass
class VampConfig(VAEConfig):
    hidden: tuple[int, ...] = field(default=(200, 200), metadata={"help": "encoder widths; the decoder mirrors them"})
    latent_dim: int = 50
    prior: str = field(default="vamp", metadata={"choices": ("vamp",), "help": "p(z): the VampPrior"})
    pseudo_inputs: int = field(default=500, metadata={"help": "K, the number of learned pseudo-inputs"})


@register_model("vamp")
class Vamp(VAE):
    """VAE with the VampPrior: p(z) = (1/K) Σ_k q(z | u_k) over K learned pseudo-inputs."""

    Config = VampConfig
    priors = ("vamp",)

    def __init__(self, config: VampConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if c.pseudo_inputs < 1:
            raise ValueError(f"pseudo_inputs must be >= 1, got {c.pseudo_inputs}")
        self.bounded = c.likelihood in UNIT_INTERVAL
        mean, std = PSEUDO_INIT if self.bounded else (0.0, 1.0)
        self.pseudo = nn.Parameter(mean + std * torch.randn(c.pseudo_inputs, *c.input_shape))

    def pseudo_inputs(self) -> torch.Tensor:
        """u_1..u_K, (K, *input_shape): hard-tanh'ed into [0, 1] for [0, 1] data."""
        return F.hardtanh(self.pseudo, 0.0, 1.0) if self.bounded else self.pseudo

    @property
    def prior(self) -> Distribution:
        components = self.encode(self.pseudo_inputs())                 # batch (K,), event (latent_dim,)
        weights = Categorical(logits=self.pseudo.new_zeros(self.config.pseudo_inputs),
                              validate_args=False)
        return VampMixture(weights, components, validate_args=False)
