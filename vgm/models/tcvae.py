"""β-TCVAE (Chen et al., 2018): penalise the total correlation of the aggregate posterior, not the whole KL.

    E_p(x) KL(q(z|x) ‖ p(z)) = I_q(x; z)                      index-code mutual information
                              + KL(q(z) ‖ Π_j q(z_j))          total correlation (TC)
                              + Σ_j KL(q(z_j) ‖ p(z_j))        dimension-wise KL
    loss = −E_q[log p(x|z)] + α · MI + β · TC + γ · dimension-wise KL        (α = γ = 1 by default)
q(z) and q(z_j) are estimated on each minibatch by minibatch-weighted sampling: for a batch of M examples
drawn from N, log q(z_i) ≈ logsumexp_j log q(z_i | x_j) − log(N·M), and likewise per dimension.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.distributions import Normal

from ..registry import register_model
from .vae import VAE, VAEConfig


@dataclass
class TCVAEConfig(VAEConfig):
    input_shape: tuple[int, ...] = (1, 64, 64)
    latent_dim: int = 10
    arch: str = "conv"
    hidden: tuple[int, ...] = (256,)
    beta: float = field(default=6.0, metadata={"help": "weight of the total correlation"})
    alpha: float = field(default=1.0, metadata={"help": "weight of the index-code mutual information"})
    gamma: float = field(default=1.0, metadata={"help": "weight of the dimension-wise KL"})
    dataset_size: int = field(default=0, metadata={"help": "N of the minibatch-weighted estimator; set from "
                                                           "the data (0: the batch size)"})


@register_model("tcvae", data=("images",), default_data="dsprites32")
class TCVAE(VAE):
    """β-TCVAE with the minibatch-weighted sampling estimate of the KL decomposition."""

    Config = TCVAEConfig
    default_iw_samples = 50     # conv decoders on 64x64 / 32x32 images: K = 50 takes about a minute on a CPU

    def __init__(self, config: TCVAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if c.dequantize:
            raise ValueError(f"{self.kind} models binary images (dSprites); dequantize does not apply")
        if c.alpha < 0 or c.gamma < 0 or c.dataset_size < 0:
            raise ValueError("alpha, gamma and dataset_size must be >= 0")

    def decomposition(self, q, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example (MWS estimates): mi, tc, dwkl, which sum to log q(z|x) − log p(z)."""
        m = z.shape[0]
        n = max(self.config.dataset_size, m)
        base = q.base_dist                                                   # Normal over (M, d)
        pairs = Normal(base.loc[None], base.scale[None]).log_prob(z[:, None])  # (M, M, d): log q(z_i,k | x_j,k)
        log_nm = math.log(n * m)
        log_qz = torch.logsumexp(pairs.sum(-1), dim=1) - log_nm
        log_qz_prod = (torch.logsumexp(pairs, dim=1) - log_nm).sum(-1)
        log_qzx, log_pz = q.log_prob(z), self.prior.log_prob(z)
        return {"mi": log_qzx - log_qz, "tc": log_qz - log_qz_prod, "dwkl": log_qz_prod - log_pz}

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example: recon, kl (closed form), elbo, mi, tc, dwkl, loss = recon + α·mi + β·tc + γ·dwkl."""
        c = self.config
        q = self.encode(x)
        z = q.rsample()
        recon = -self.decode(z).log_prob(x)
        kl = torch.distributions.kl_divergence(q, self.prior)
        terms = {"recon": recon, "kl": kl, "elbo": -(recon + kl), **self.decomposition(q, z)}
        terms["loss"] = recon + c.alpha * terms["mi"] + c.beta * terms["tc"] + c.gamma * terms["dwkl"]
        return terms
