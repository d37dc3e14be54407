"""DIP-VAE (Kumar et al., 2018): the VAE loss plus a penalty pulling the aggregate posterior's covariance to I.

    loss = −E_q[log p(x|z)] + KL(q(z|x) ‖ p(z)) + λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²
    type i:   C = Cov_p(x)[μ(x)]                          the covariance of the posterior means
    type ii:  C = Cov_q(z)[z] = E_p(x)[diag σ²(x)] + Cov_p(x)[μ(x)]     the covariance of the aggregate posterior
with the expectations over the batch (population covariance, divided by M). The penalty is a property of the
batch; each example's loss carries it whole, so the batch mean of the loss is the paper's objective exactly.
The paper's settings: λ_d = 10 λ_od for type i, λ_d = λ_od for type ii. Defaults: the β-VAE architecture for
dSprites, type i, λ_od = 10, λ_d = 100.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..distributed import gather_rows
from ..registry import register_model
from .vae import VAE, VAEConfig

DIP_TYPES = ("i", "ii")


@dataclass
class DIPVAEConfig(VAEConfig):
    input_shape: tuple[int, ...] = (1, 64, 64)
    latent_dim: int = 10
    arch: str = "conv"
    hidden: tuple[int, ...] = (256,)
    dip_type: str = field(default="i", metadata={"choices": DIP_TYPES, "help": "i: covariance of the posterior "
                                                 "means; ii: of the aggregate posterior"})
    lambda_od: float = field(default=10.0, metadata={"help": "weight of the off-diagonal penalty"})
    lambda_d: float = field(default=100.0, metadata={"help": "weight of the diagonal penalty (paper: 10·λ_od for "
                                                     "type i, λ_od for type ii)"})


def dip_covariance(mu: torch.Tensor, var: torch.Tensor, dip_type: str) -> torch.Tensor:
    """(d, d) batch covariance of the means (type i), plus the mean posterior variance on the diagonal (type ii)."""
    centred = mu - mu.mean(0)
    cov = centred.T @ centred / mu.shape[0]
    return cov + torch.diag(var.mean(0)) if dip_type == "ii" else cov


def dip_penalty(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²."""
    diag = cov.diagonal()
    off = (cov ** 2).sum() - (diag ** 2).sum()
    return lambda_od * off + lambda_d * ((diag - 1) ** 2).sum()


@register_model("dipvae", data=("images",), default_data="dsprites32")
class DIPVAE(VAE):
    """VAE + the DIP penalty on the covariance of the aggregate posterior (type i or ii)."""

    Config = DIPVAEConfig
    priors = ("standard",)
    default_iw_samples = 50
    min_batch = 2               # its loss couples the batch: never a batch of one (vgm.base.Model.min_batch)

    def __init__(self, config: DIPVAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if c.dequantize:
            raise ValueError(f"{self.kind} models binary images (dSprites); dequantize does not apply")
        if c.dip_type not in DIP_TYPES:
            raise ValueError(f"unknown dip_type {c.dip_type!r} (choose i or ii)")
        if c.lambda_od < 0 or c.lambda_d < 0:
            raise ValueError("lambda_od and lambda_d must be >= 0")

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example: recon, kl, elbo, dip (the batch's penalty), loss = recon + kl + dip."""
        c = self.config
        q = self.encode(x)
        z = q.rsample()
        recon = -self.decode(z).log_prob(x)
        kl = torch.distributions.kl_divergence(q, self.prior)
        both, _ = gather_rows(torch.cat([q.base_dist.loc, q.base_dist.scale ** 2], dim=-1))   # the global batch's
        cov = dip_covariance(*both.chunk(2, dim=-1), c.dip_type)
        dip = dip_penalty(cov, c.lambda_od, c.lambda_d).expand_as(recon)
        return {"recon": recon, "kl": kl, "elbo": -(recon + kl), "dip": dip, "loss": recon + kl + dip}
