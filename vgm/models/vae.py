"""The variational autoencoder (Kingma & Welling, 2014).

    q(z|x) = Normal(μ(x), diag σ(x)²),   p(z) = Normal(0, I),   p(x|z) = decoder likelihood
    z = μ + ε ⊙ σ,  ε ~ N(0, I)          (reparameterisation, via rsample)
    loss = −E_q[log p(x|z)] + β · KL(q(z|x) ‖ p(z))     (= −ELBO when β = 1), KL in closed form.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Normal

from ..base import Model
from ..data.dequantize import dequantize, log_scale
from ..elbo import elbo
from .likelihood import LIKELIHOODS, PARAMS_PER_VALUE, Likelihood
from .nets import Decoder, Encoder
from ..registry import register_model


@dataclass
class VAEConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 16
    arch: str = field(default="mlp", metadata={"choices": ("mlp", "conv"), "help": "backbone"})
    hidden: tuple[int, ...] = field(default=(512, 256), metadata={"help": "encoder widths; the decoder mirrors them"})
    likelihood: str = field(default="bernoulli", metadata={"choices": LIKELIHOODS, "help": "p(x|z)"})
    sigma: float = field(default=0.1, metadata={"help": "gaussian σ (its initial value when learned)"})
    learn_sigma: bool = field(default=False, metadata={"help": "learn one σ shared by all values"})
    beta: float = field(default=1.0, metadata={"help": "weight of the KL term (β-VAE when > 1)"})
    levels: int = field(default=0, metadata={"help": "grey levels of the data; set from the dataset (0: continuous)"})
    dequantize: bool = field(default=False, metadata={"help": "model y = (k + u)/L with a gaussian likelihood, "
                                                      "scored on the discrete scale, comparable with flows"})


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
        if c.dequantize and (c.likelihood not in ("gaussian", "continuous-bernoulli") or c.levels < 2):
            raise ValueError("dequantize needs a density on [0, 1] (likelihood gaussian or continuous-bernoulli) "
                             f"and data with grey levels (digits, mnist); got likelihood {c.likelihood!r}, "
                             f"levels {c.levels}")
        self.encoder = Encoder(c.arch, c.input_shape, c.hidden, 2 * c.latent_dim)
        self.decoder = Decoder(c.arch, c.input_shape, c.hidden, c.latent_dim, PARAMS_PER_VALUE.get(c.likelihood, 1))
        self.likelihood = Likelihood(c.likelihood, len(c.input_shape), c.sigma, c.learn_sigma, c.levels)
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
        """Per example: recon = −log p(x|z), kl = KL(q‖p), elbo = −(recon + kl), loss = recon + β·kl.

        With dequantize, x is replaced by y = (k + u)/L and recon by −(log p(y|z) − D log L), the discrete scale.
        """
        if self.config.dequantize:
            x = dequantize(x, self.config.levels)
        terms = elbo(self, x)
        if self.config.dequantize:
            terms["recon"] = terms["recon"] - log_scale(self.config.levels, x[0].numel())
            terms["elbo"] = -(terms["recon"] + terms["kl"])
        terms["loss"] = terms["recon"] + self.config.beta * terms["kl"]
        return terms
