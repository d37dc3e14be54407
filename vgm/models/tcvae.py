"""β-TCVAE (Chen et al., 2018): penalise the total correlation of the aggregate posterior, not the whole KL.

    E_p(x) KL(q(z|x) ‖ p(z)) = I_q(x; z)                      index-code mutual information
                              + KL(q(z) ‖ Π_j q(z_j))          total correlation (TC)
                              + Σ_j KL(q(z_j) ‖ p(z_j))        dimension-wise KL
    loss = −E_q[log p(x|z)] + α · MI + β · TC + γ · dimension-wise KL        (α = γ = 1 by default)
with q(z) = (1/N) Σ_n q(z|x_n), the mixture of the N training examples' posteriors, and q(z_j) its marginals.

Training estimates q(z_i) on each minibatch of M examples, z_i ~ q(z|x_i), by stratified sampling: the
example's own posterior is one of the N terms (N = dataset_size, the training set's size, which `vgm train`
fills from the data; 0 takes each batch as the whole data set), the M − 1 others stand for the other N − 1, so
    q(z_i) ≈ (1/N) q(z_i|x_i) + (N − 1)/(N (M − 1)) Σ_{j≠i} q(z_i|x_j)                (weights sum to 1)
and likewise per dimension: unbiased for q(z_i) given a uniformly drawn batch, and the exact mixture when
the batch is the whole training set (M = N). Its log is biased low when M ≪ N (Jensen), so the minibatch
mi / tc / dwkl are training signals, not measurements; `decomposition(model, x, pool)` measures them against
the whole mixture. (Chen et al.'s minibatch-weighted formula, logsumexp_j log q(z_i|x_j) − log(N M), is off by
−log N in expectation: with all posteriors equal it gives log q(z) − log N. That shifts MI by +log N, TC by
(d − 1) log N and the dimension-wise KL by −d log N: constants for the gradients, but not for the numbers.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.distributions import Normal

from ..distributed import gather_rows
from ..errors import VgmError
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
    dataset_size: int = field(default=0, metadata={"help": "N, the number of training examples (set from the "
                                                           "data; 0: each batch is taken as the whole data set)"})


@register_model("tcvae", data=("images",), default_data="dsprites32")
class TCVAE(VAE):
    """β-TCVAE with the stratified minibatch estimate of the KL decomposition."""

    Config = TCVAEConfig
    priors = ("standard",)    # its loss takes the closed-form KL against N(0, I): no flow prior
    default_iw_samples = 50     # conv decoders on 64x64 / 32x32 images: K = 50 takes about a minute on a CPU
    min_batch = 2               # its loss couples the batch: never a batch of one (vgm.base.Model.min_batch)
    training_note = ("(mi, tc, dwkl above are minibatch estimates, biased for batches much smaller than the data; "
                     "`vgm evaluate {run}` estimates them against the training set's aggregate posterior)")

    def __init__(self, config: TCVAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if c.dequantize:
            raise ValueError(f"{self.kind} models binary images (dSprites); dequantize does not apply")
        if c.alpha < 0 or c.gamma < 0 or c.dataset_size < 0:
            raise ValueError("alpha, gamma and dataset_size must be >= 0")

    def decomposition(self, q, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example of the batch (stratified estimates): mi, tc, dwkl, summing to log q(z|x) − log p(z).
        Under torchrun the batch is the global one: this rank's z against every rank's posteriors."""
        base = q.base_dist                                                   # Normal over (B, d): this rank's rows
        both, start = gather_rows(torch.cat([base.loc, base.scale], dim=-1)) # (M, 2d): the whole batch's
        loc, scale = both.chunk(2, dim=-1)
        b, m = z.shape[0], loc.shape[0]
        n = self.config.dataset_size or m
        pairs = Normal(loc[None], scale[None]).log_prob(z[:, None])          # (B, M, d): log q(z_i,k | x_j,k)
        log_w = stratified_log_weights(m, n, z)[start:start + b]
        log_qz = torch.logsumexp(pairs.sum(-1) + log_w, dim=1)
        log_qz_prod = torch.logsumexp(pairs + log_w[..., None], dim=1).sum(-1)
        return split_kl(q.log_prob(z), log_qz, log_qz_prod, self.prior.log_prob(z))

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


def stratified_log_weights(m: int, n: int, ref: torch.Tensor) -> torch.Tensor:
    """(M, M) log weights, in ref's dtype and device: 1/N on the diagonal (an example's own posterior),
    (N − 1)/(N (M − 1)) elsewhere; each row sums to 1."""
    own = torch.full((m,), -math.log(n), dtype=ref.dtype, device=ref.device)
    other = math.log(n - 1) - math.log(n) - math.log(m - 1) if m > 1 and n > 1 else -math.inf
    return torch.full((m, m), other, dtype=ref.dtype, device=ref.device).diagonal_scatter(own)


def split_kl(log_qzx, log_qz, log_qz_prod, log_pz) -> dict[str, torch.Tensor]:
    """The three parts of log q(z|x) − log p(z): mi, tc, dwkl (per example)."""
    return {"mi": log_qzx - log_qz, "tc": log_qz - log_qz_prod, "dwkl": log_qz_prod - log_pz}


@torch.no_grad()
def decomposition(model, x: torch.Tensor, pool: torch.Tensor, batch_size: int = 500,
                  max_elements: int = 2 ** 22) -> dict[str, torch.Tensor]:
    """Per example of x: mi, tc, dwkl against the aggregate posterior of `pool` (the training set, or a
    sample of it), the exact mixture q(z) = (1/N) Σ_n q(z|x_n) and its marginals, with one z ~ q(z|x) each.

    They sum to log q(z|x) − log p(z), whose mean is the KL. For x drawn from the pool, the means are
    Chen et al.'s decomposition (estimated with |x| samples, as in their evaluation code); for held-out x,
    the decomposition of each KL(q(z|x) ‖ p(z)) against the training set's q(z). `model` needs only encode
    (a factorised Normal q(z|x)) and prior; nothing is trained, and any chunking gives the same numbers.
    Cost: |x| · N · d posterior densities, in chunks of at most `max_elements`.
    """
    if len(x) == 0 or len(pool) == 0:
        raise VgmError("the β-TCVAE decomposition needs examples to score and a pool to mix")
    device = model.prior.mean.device
    x, pool = x.to(device), pool.to(device)
    posts = [model.encode(pool[i:i + batch_size]).base_dist for i in range(0, len(pool), batch_size)]
    loc, scale = torch.cat([p.loc for p in posts]), torch.cat([p.scale for p in posts])   # (N, d)
    log_norm = scale.log() + 0.5 * math.log(2 * math.pi)
    n, d = loc.shape
    out: dict[str, list[torch.Tensor]] = {"mi": [], "tc": [], "dwkl": []}
    for i in range(0, len(x), batch_size):
        q = model.encode(x[i:i + batch_size])
        z = q.sample()
        b = z.shape[0]
        chunk = max(1, max_elements // (b * d))
        joint = z.new_full((b,), -math.inf)
        marginal = z.new_full((b, d), -math.inf)
        for j in range(0, n, chunk):
            u = (z[:, None] - loc[None, j:j + chunk]) / scale[None, j:j + chunk]
            lp = -0.5 * u * u - log_norm[None, j:j + chunk]                   # (b, c, d): log q(z_ik | x_jk)
            joint = torch.logaddexp(joint, torch.logsumexp(lp.sum(-1), dim=1))
            marginal = torch.logaddexp(marginal, torch.logsumexp(lp, dim=1))
        log_qz, log_qz_prod = joint - math.log(n), (marginal - math.log(n)).sum(-1)
        for k, v in split_kl(q.log_prob(z), log_qz, log_qz_prod, model.prior.log_prob(z)).items():
            out[k].append(v)
    return {k: torch.cat(v) for k, v in out.items()}
