"""FactorVAE (Kim & Mnih, 2018): the VAE loss plus γ times the total correlation of q(z), estimated by a discriminator.

    loss = −E_q[log p(x|z)] + KL(q(z|x) ‖ p(z)) + γ · TC,     TC = KL(q(z) ‖ Π_j q(z_j))
A discriminator D(z) = σ(l(z)) learns to tell samples z ~ q(z) (label 1) from samples of Π_j q(z_j) (label 0),
which are the batch's z with each dimension independently permuted across the batch. At its optimum
D/(1 − D) = q(z) / Π_j q(z_j), so l(z) = log D − log(1 − D) is the density-ratio estimate and
TC ≈ E_q[l(z)]: the per-example term "tc" is l(z_i). Its loss (binary cross-entropy on the two sets) is
terms["aux_loss"], computed from the detached z, so it trains only the discriminator; the trainer steps it with
an optimizer of its own (auxiliary_parameters, lr = --aux-lr), and the main loss never updates the discriminator.
The paper draws the permuted samples from a second batch; here they come from the same batch (as in
disentanglement_lib), which halves the encoder passes. Defaults: the β-VAE architecture for dSprites, γ = 35,
a discriminator of 6 layers of 1000 units with LeakyReLU(0.2), Adam lr 1e-4 for it (the paper's set-up).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VgmError
from ..registry import register_model
from .vae import VAE, VAEConfig


@dataclass
class FactorVAEConfig(VAEConfig):
    input_shape: tuple[int, ...] = (1, 64, 64)
    latent_dim: int = 10
    arch: str = "conv"
    hidden: tuple[int, ...] = (256,)
    gamma: float = field(default=35.0, metadata={"help": "weight of the total-correlation estimate"})
    disc_hidden: int = field(default=1000, metadata={"help": "units per hidden layer of the discriminator"})
    disc_layers: int = field(default=6, metadata={"help": "hidden layers of the discriminator"})
    aux_lr: float = field(default=1e-4, metadata={"help": "the discriminator's Adam learning rate"})


def discriminator(latent_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """z (..., d) -> one logit l(z) (..., 1): an MLP with LeakyReLU(0.2)."""
    sizes = [latent_dim] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*mods, nn.Linear(sizes[-1], 1))


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each column of z (M, d) independently shuffled across the M rows: a sample of Π_j q(z_j)."""
    order = torch.rand(z.shape, device=z.device).argsort(dim=0)
    return z.gather(0, order)


@register_model("factorvae", data=("images",), default_data="dsprites32")
class FactorVAE(VAE):
    """VAE + γ·TC with a density-ratio discriminator trained alongside by its own optimizer."""

    Config = FactorVAEConfig
    per_rank_statistics = "its discriminator learns from codes permuted across the batch, and each process would " \
                          "permute only its share"
    priors = ("standard",)
    default_iw_samples = 50     # conv decoders on 64x64 / 32x32 images, as betavae
    min_batch = 2               # its loss couples the batch: never a batch of one (vgm.base.Model.min_batch)

    def __init__(self, config: FactorVAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if c.dequantize:
            raise ValueError(f"{self.kind} models binary images (dSprites); dequantize does not apply")
        if c.gamma < 0 or c.disc_hidden < 1 or c.disc_layers < 1 or not c.aux_lr > 0:
            raise ValueError("gamma must be >= 0, disc_hidden and disc_layers >= 1, aux_lr > 0")
        self.discriminator = discriminator(c.latent_dim, c.disc_hidden, c.disc_layers)

    def auxiliary_parameters(self):
        return self.discriminator.parameters()

    def tc_logits(self, z: torch.Tensor) -> torch.Tensor:
        """l(z) = log D(z) − log(1 − D(z)) per row: the discriminator's estimate of log q(z) / Π_j q(z_j)."""
        return self.discriminator(z).squeeze(-1)

    def discriminator_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Per example: −log D(z_i) − log(1 − D(z̃_i)), z̃ the dimension-wise permutation of the (detached) batch."""
        if z.shape[0] < 2 and self.training and torch.is_grad_enabled():   # (scoring one example is harmless)
            raise VgmError(f"{self.kind} needs batches of at least 2 examples: its discriminator compares q(z) "
                           "samples with their dimension-wise permutations across the batch (--batch-size >= 2)")
        z = z.detach()
        real, fake = self.tc_logits(z), self.tc_logits(permute_dims(z))
        return F.softplus(-real) + F.softplus(fake)     # BCE with labels 1 (real) and 0 (permuted)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example: recon, kl, elbo, tc = l(z), loss = recon + kl + γ·tc, aux_loss (the discriminator's)."""
        q = self.encode(x)
        z = q.rsample()
        recon = -self.decode(z).log_prob(x)
        kl = torch.distributions.kl_divergence(q, self.prior)
        tc = self.tc_logits(z)
        return {"recon": recon, "kl": kl, "elbo": -(recon + kl), "tc": tc,
                "loss": recon + kl + self.config.gamma * tc, "aux_loss": self.discriminator_loss(z)}
