"""Bounds and estimates of log p(x) that use only the model interface (encode, decode, prior).

    ELBO(x)   = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))                          ≤ log p(x)
    L_K(x)    = E[ log (1/K) Σ_k p(x, z_k) / q(z_k|x) ],  z_k ~ q(z|x)        (Burda et al., 2016)
ELBO = L_1 ≤ L_K ≤ log p(x), and L_K → log p(x) as K → ∞. Any object with encode/decode/prior works.
"""
from __future__ import annotations

import functools
import math

import torch
from torch.distributions import Bernoulli, Distribution, Independent, kl_divergence


def elbo(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example recon = −log p(x|z) (one reparameterised z ~ q), kl = KL(q(z|x) ‖ p(z)), elbo = −(recon + kl).

    The KL is in closed form when torch.distributions knows it, else the one-sample estimate log q(z) − log p(z).
    This is the differentiable training objective: the tensors keep their autograd graph (they require grad when
    the model has parameters), so read numbers from them with .detach() or under torch.no_grad(); the evaluation
    helpers (vgm.evaluate, vgm.train.evaluate_terms) do so and return plain floats.
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


@functools.lru_cache(maxsize=64)
def largest_divisor(d: int, at_most: int) -> int:
    """The largest divisor of d that is at most `at_most` (the size of log_likelihood's groups)."""
    return max(g for g in range(1, min(d, at_most) + 1) if d % g == 0)


def log_likelihood(px: Distribution, x: torch.Tensor) -> torch.Tensor:
    """px.log_prob(x), computed in about half the time for a Bernoulli on logits with event dimensions (besides
    the decoder's matrix products, what IWAE spends its time on). Per value, x·l − softplus(l) (−BCE, for any
    x in [0, 1]) is split as (x·l − relu(l)) + log σ(|l|); σ(|l|) lies in [½, 1], so a product of up to 126 of
    them cannot underflow, and one log per such group replaces a log and an exp per value. Any other
    distribution is left to its own log_prob."""
    base, dims = (px.base_dist, px.reinterpreted_batch_ndims) if type(px) is Independent else (px, 0)
    if type(base) is not Bernoulli or dims == 0:
        return px.log_prob(x)
    logits = base.logits                      # what Bernoulli.log_prob uses, also when built from probs
    if x.dtype != logits.dtype or torch.broadcast_shapes(logits.shape, x.shape) != logits.shape:
        return px.log_prob(x)
    l, xs = logits.flatten(-dims), x.flatten(-dims)
    d = l.shape[-1]
    group = largest_divisor(d, 126)
    misfit = l.relu().addcmul_(l, xs, value=-1).sum(-1)                 # Σ relu(l) − x·l
    log_sigma = l.abs().sigmoid_().unflatten(-1, (d // group, group)).prod(-1).log_().sum(-1)
    return log_sigma - misfit


# bytes: as glibc's mmap threshold, above any one buffer of a log_px chunk (2^21 float32 values: 8 MiB), and as its
# trim threshold (twice that), above all of a chunk's buffers together; glibc raises the thresholds up to 32 MiB
HEAP_HINT = 30 * 2 ** 20


def keep_buffers_in_heap() -> None:
    """Allocate and free one untouched block of HEAP_HINT bytes. glibc's malloc maps every block above its mmap
    threshold afresh and hands freed heap memory above twice that back to the system, so the buffers that each
    chunk of log_px allocates and frees would be page-faulted in again, chunk after chunk (measured: up to a
    third of log_px's time); freeing a mapped block raises both thresholds to its size (mallopt(3), dynamic
    thresholds, up to 32 MiB), once for the process. One mmap/munmap; under other allocators, nothing."""
    torch.empty(HEAP_HINT, dtype=torch.uint8)


@torch.no_grad()
def log_px(model, x: torch.Tensor, k: int = 1000, max_elements: int = 2 ** 21) -> torch.Tensor:
    """Per-example importance-weighted estimate L_K of log p(x) with K = k samples from q(z|x).

    The samples are decoded in chunks of s samples × all n examples (one decoder call on s·n latent codes,
    s·n·D decoded values, at most `max_elements` unless s = 1), so the decoder's matrix products are large
    while its outputs stay near the cache and in malloc's heap (keep_buffers_in_heap); the chunks are combined
    with a running log-sum-exp, so K = 5000 costs time but not memory.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    keep_buffers_in_heap()
    q = model.encode(x)
    prior = model.prior
    n = x.shape[0]
    chunk = max(1, min(k, max_elements // (max(1, x[0].numel()) * n)))
    draw = q.rsample if getattr(q, "has_rsample", False) else q.sample   # one vectorised normal_ for a Gaussian q
    total = None
    for done in range(0, k, chunk):
        z = draw((min(chunk, k - done),))                          # (s, n, d)
        log_w = log_likelihood(model.decode(z), x) + prior.log_prob(z) - q.log_prob(z)
        part = torch.logsumexp(log_w, dim=0)
        total = part if total is None else torch.logaddexp(total, part)
    return total - math.log(k)
