"""The variational autoencoder (Kingma & Welling, 2014).

    q(z|x) = Normal(μ(x), diag σ(x)²),   p(z) = Normal(0, I),   p(x|z) = decoder likelihood
    z = μ + ε ⊙ σ,  ε ~ N(0, I)          (reparameterisation, via rsample)
    loss = −E_q[log p(x|z)] + β · KL(q(z|x) ‖ p(z))     (= −ELBO when β = 1), KL in closed form.
With --prior flow, p(z) is a learned MAF or NSF (vgm.models.flow_prior) and the KL its one-sample estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Normal

from ..base import Model
from ..data.dequantize import dequantize, log_scale
from ..elbo import elbo
from .flow_prior import FLOW_PRIORS, flow_prior
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
    prior: str = field(default="standard", metadata={"choices": ("standard", "flow"), "help": "p(z): Normal(0, I), "
                                                     "or a flow on it learned with the model"})
    prior_flow: str = field(default="maf", metadata={"choices": FLOW_PRIORS, "help": "the flow of --prior flow"})
    prior_depth: int = field(default=4, metadata={"help": "layers of the flow prior"})
    prior_hidden: int = field(default=64, metadata={"help": "hidden units of the flow prior's networks"})


@register_model("vae")
class VAE(Model):
    """Gaussian-posterior VAE with an MLP or convolutional backbone."""

    Config = VAEConfig
    priors: ClassVar[tuple[str, ...]] = ("standard", "flow")   # the values of config.prior this model takes

    def __init__(self, config: VAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if c.prior not in self.priors:
            raise ValueError(f"{self.kind} takes prior {' or '.join(self.priors)}, got {c.prior!r}")
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
        self.prior_flow = (flow_prior(c.prior_flow, c.latent_dim, c.prior_depth, c.prior_hidden)
                           if c.prior == "flow" else None)

    @property
    def prior(self) -> Distribution:
        if self.prior_flow is not None:
            return self.prior_flow
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n draws z ~ prior decoded to the mean of p(x|z); under a flow prior, T scales the base draws
        (z = f⁻¹(T·ε), as flows sample), a Gaussian prior's spread as in Model.sample."""
        if self.prior_flow is None:
            return super().sample(n, temperature)
        z = self.prior_flow.inverse(temperature * self.prior_flow.base.sample((n,)))[0]
        return self.decode(z).mean

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
