"""Evaluation of a trained model on a data split: per-example ELBO terms, importance-weighted log p(x), bits/dim."""
from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli

from .ae import PointMass
from .elbo import elbo, log_px


@torch.no_grad()
def evaluate(model, x: torch.Tensor, iw_samples: int = 1000, batch_size: int = 500) -> dict:
    """Means over the examples of x, in nats per example (bits per dimension for log p(x)).

    elbo, recon, kl      the ELBO and its two terms (one reparameterised sample per example)
    log_px               the importance-weighted bound L_K with K = iw_samples (≥ elbo in expectation)
    elbo_gap             log_px − elbo: an estimate of E_x KL(q(z|x) ‖ p(z|x)) (from below, as L_K ≤ log p(x))
    bits_per_dim         −log_px / (D ln 2), D = values per example
    For a deterministic encoder (AE) only the reconstruction error is defined.
    """
    was_training = model.training
    model.eval()
    n, dims = x.shape[0], x[0].numel()
    out: dict = {"n_examples": n, "dims": dims}
    q1 = model.encode(x[:1])
    deterministic = isinstance(q1, PointMass)
    px1 = model.decode(q1.mean)
    if isinstance(getattr(px1, "base_dist", px1), Bernoulli) and not ((x == 0) | (x == 1)).all():
        out["note"] = ("Bernoulli likelihood on grey levels: recon, elbo and log_px are cross-entropies, not "
                       "log-likelihoods of the data; binarize (--binarize dynamic) for comparable numbers")
    keys = ("recon",) if deterministic else ("elbo", "recon", "kl", "log_px")
    sums = dict.fromkeys(keys, 0.0)
    sq_err = 0.0
    for i in range(0, n, batch_size):
        xb = x[i:i + batch_size]
        if deterministic:
            sums["recon"] += model.loss(xb)["recon"].sum().item()
        else:
            t = elbo(model, xb)
            for k in ("elbo", "recon", "kl"):
                sums[k] += t[k].sum().item()
            if iw_samples:
                sums["log_px"] += log_px(model, xb, iw_samples).sum().item()
        sq_err += ((model.reconstruct(xb) - xb) ** 2).sum().item()
    out.update({k: v / n for k, v in sums.items()})
    out["mse"] = sq_err / (n * dims)      # per value, of the reconstruction from the posterior mean
    if deterministic:
        out.update(elbo=None, kl=None, log_px=None, bits_per_dim=None, elbo_gap=None, iw_samples=0)
    else:
        if not iw_samples:
            out["log_px"] = None
        out["iw_samples"] = iw_samples
        out["bits_per_dim"] = None if out["log_px"] is None else -out["log_px"] / (dims * math.log(2))
        out["elbo_gap"] = None if out["log_px"] is None else out["log_px"] - out["elbo"]
    model.train(was_training)
    return out
