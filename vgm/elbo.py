"""Bounds and estimates of log p(x) that use only the model interface (encode, decode, prior).

    ELBO(x)   = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))                          ≤ log p(x)
    L_K(x)    = E[ log (1/K) Σ_k p(x, z_k) / q(z_k|x) ],  z_k ~ q(z|x)        (Burda et al., 2016)
ELBO = L_1 ≤ L_K ≤ log p(x), and L_K → log p(x) as K → ∞. Any object with encode/decode/prior works.
"""
from __future__ import annotations

import math

import torch
from torch.distributions import kl_divergence


def elbo(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example recon = −log p(x|z) (one reparameterised z ~ q), kl = KL(q(z|x) ‖ p(z)), elbo = −(recon + kl).

    The KL is in closed form when torch.distributions knows it, else the one-sample estimate log q(z) − log p(z).
    """
    q = model.encode(x)
    z = q.rsample()
    recon = -model.decode(z).log_prob(x)
    prior = model.prior
    try:
        kl = kl_divergence(q, prior)
    except NotImplementedError:
        kl = q.log_prob(z) - prior.log_prob(z)
    return {"recon": recon, "kl": kl, "elbo": -(recon + kl)}


@torch.no_grad()
def log_px(model, x: torch.Tensor, k: int = 1000, max_elements: int = 2 ** 20) -> torch.Tensor:
    """Per-example importance-weighted estimate L_K of log p(x) with K = k samples from q(z|x).

    Samples are drawn in chunks (at most `max_elements` decoded values per chunk) and combined with a
    running log-sum-exp, so K = 5000 costs time but not memory.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = model.encode(x)
    prior = model.prior
    n = x.shape[0]
    per_example = max(1, x[0].numel())
    chunk = max(1, min(k, max_elements // (per_example * n)))
    total = torch.full((n,), -torch.inf, device=x.device)
    done = 0
    while done < k:
        s = min(chunk, k - done)
        z = q.sample((s,))                                   # (s, n, d)
        log_w = model.decode(z).log_prob(x) + prior.log_prob(z) - q.log_prob(z)
        total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
        done += s
    return total - math.log(k)
