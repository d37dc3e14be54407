"""The variational autoencoder (Kingma & Welling, 2014).

    q(z|x) = Normal(μ(x), diag σ(x)²),   p(z) = Normal(0, I),   p(x|z) = decoder likelihood
    z = μ + ε ⊙ σ,  ε ~ N(0, I)          (reparameterisation, via rsample)
    loss = −E_q[log p(x|z)] + β · KL(q(z|x) ‖ p(z))     (= −ELBO when β = 1), KL in closed form.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Normal

from .base import Model
from .elbo import elbo
from .likelihood import Likelihood
from .nets import Decoder, Encoder
from .registry import register_model


@dataclass
class VAEConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 16
    arch: str = "mlp"                      # mlp | conv
    hidden: tuple[int, ...] = (512, 256)   # encoder widths; the decoder mirrors them
    likelihood: str = "bernoulli"          # bernoulli | gaussian
    sigma: float = 0.1                     # gaussian σ (its initial value when learned)
    learn_sigma: bool = False
    beta: float = 1.0                      # weight of the KL term (β-VAE when > 1)


@register_model("vae")
class VAE(Model):
    """Gaussian-posterior VAE with an MLP or convolutional backbone."""

    Config = VAEConfig

    def __init__(self, config: VAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        c.input_shape, c.hidden = tuple(c.input_shape), tuple(c.hidden)
        if c.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {c.latent_dim}")
        if c.beta < 0:
            raise ValueError(f"beta must be >= 0, got {c.beta}")
        self.encoder = Encoder(c.arch, c.input_shape, c.hidden, 2 * c.latent_dim)
        self.decoder = Decoder(c.arch, c.input_shape, c.hidden, c.latent_dim)
        self.likelihood = Likelihood(c.likelihood, len(c.input_shape), c.sigma, c.learn_sigma)
        self.register_buffer("prior_loc", torch.zeros(c.latent_dim), persistent=False)
        self.register_buffer("prior_scale", torch.ones(c.latent_dim), persistent=False)

    @property
    def prior(self) -> Distribution:
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1)

    def encode(self, x: torch.Tensor) -> Distribution:
        mu, s = self.encoder(x).chunk(2, dim=-1)
        return Independent(Normal(mu, F.softplus(s) + 1e-6, validate_args=False), 1)

    def decode(self, z: torch.Tensor) -> Distribution:
        return self.likelihood(self.decoder(z))

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example: recon = −log p(x|z), kl = KL(q‖p), elbo = −(recon + kl), loss = recon + β·kl."""
        terms = elbo(self, x)
        terms["loss"] = terms["recon"] + self.config.beta * terms["kl"]
        return terms
