"""The deterministic autoencoder: x -> z = f(x) -> x̂ = g(z), trained on MSE or BCE reconstruction error.

It has no prior of its own; `prior` (N(0, I)) and `sample` exist so that its samples can be compared with a
VAE's — decoding z ~ N(0, I) is exactly what shows that an AE's latent space is not a generative model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Distribution, Independent, Normal, constraints

from ..base import Model
from .nets import Decoder, Encoder
from ..registry import register_model


class PointMass(Distribution):
    """A distribution with all its mass on `loc`: the 'posterior' of a deterministic encoder."""

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor):
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return torch.zeros_like(self.loc)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.loc.expand(*sample_shape, *self.loc.shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.where((value == self.loc).all(-1), 0.0, -torch.inf)


@dataclass
class AEConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 16
    arch: str = field(default="mlp", metadata={"choices": ("mlp", "conv"), "help": "backbone"})
    hidden: tuple[int, ...] = field(default=(512, 256), metadata={"help": "encoder widths; the decoder mirrors them"})
    recon_loss: str = field(default="bce", metadata={"choices": ("bce", "mse"), "help": "reconstruction error"})


@register_model("ae")
class AE(Model):
    """loss = Σ_i (x_i − x̂_i)²  (mse)   or   −Σ_i [x_i log x̂_i + (1 − x_i) log(1 − x̂_i)]  (bce)."""

    Config = AEConfig
    deterministic = True          # q(z|x) is a point mass: evaluation reports the reconstruction error only

    def __init__(self, config: AEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        c.input_shape, c.hidden = tuple(c.input_shape), tuple(c.hidden)
        if c.recon_loss not in ("bce", "mse"):
            raise ValueError(f"unknown recon_loss {c.recon_loss!r} (choose bce or mse)")
        if c.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {c.latent_dim}")
        self.encoder = Encoder(c.arch, c.input_shape, c.hidden, c.latent_dim)
        self.decoder = Decoder(c.arch, c.input_shape, c.hidden, c.latent_dim)
        self.register_buffer("prior_loc", torch.zeros(c.latent_dim), persistent=False)

    @property
    def prior(self) -> Distribution:
        return Independent(Normal(self.prior_loc, torch.ones_like(self.prior_loc)), 1)

    def encode(self, x: torch.Tensor) -> Distribution:
        return PointMass(self.encoder(x))

    def decode(self, z: torch.Tensor) -> Distribution:
        out = self.decoder(z)
        dims = len(self.config.input_shape)
        if self.config.recon_loss == "bce":
            return Independent(Bernoulli(logits=out, validate_args=False), dims)
        return Independent(Normal(out, torch.ones_like(out), validate_args=False), dims)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.decoder(self.encoder(x))
        if self.config.recon_loss == "bce":
            err = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            err = (out - x) ** 2
        recon = err.flatten(1).sum(1)
        return {"recon": recon, "loss": recon}
