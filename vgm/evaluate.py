"""Evaluation of a trained model on a data split: per-example ELBO terms, importance-weighted log p(x), bits/dim.

`evaluate(model, x)` is the one path every command and the API take. Models whose scores are not those of an
image latent-variable model (flows: exact log p(x); sequence models: per-token scores) provide
`model.evaluate(x, iw_samples, batch_size)`, and `evaluate` returns what that gives; every other model is scored
here through encode / decode / prior alone.
"""
from __future__ import annotations

import sys

import torch
from tqdm.auto import tqdm
from torch.distributions import Bernoulli, ContinuousBernoulli

from .data.dequantize import bits_per_dim, dequantize, eval_noise, log_scale
from .elbo import elbo, log_px
from .errors import VgmError
from .models.discretized_logistic import DiscretizedLogistic

ACTIVE_THRESHOLD = 0.01   # a latent unit is active when Var_x E_q[z_d] > 0.01 (Burda et al., 2016)

UNITS = {"elbo": "nats", "recon": "nats", "kl": "nats", "log_px": "nats", "elbo_gap": "nats",
         "bits_per_dim": "bits/dim", "mse": "per value", "active_units": "units", "latent_dim": "units",
         "levels": "grey levels", "sq_error": "per example"}


def evaluate(model, x: torch.Tensor, iw_samples: int = 1000, batch_size: int = 500, progress: bool = False,
             labels: torch.Tensor | None = None) -> dict:
    """Means over the examples of x, in nats per example (bits per dimension for log p(x)); x goes to the model's
    device, and the model's training mode is restored afterwards, also when this raises.

    elbo, recon, kl      the ELBO and its two terms (one reparameterised sample per example)
    log_px               the importance-weighted bound L_K with K = iw_samples (≥ elbo in expectation)
    elbo_gap             log_px − elbo: an estimate of E_x KL(q(z|x) ‖ p(z|x)) (from below, as L_K ≤ log p(x))
    bits_per_dim         −log_px / (D ln 2), only where log_px is the log of a probability of discrete data
                         (Bernoulli on binary data; a dequantized model on its grey levels)
    active_units         latent units with Var_x E_q[z_d | x] > 0.01
    A dequantized VAE is scored on y = (k + u)/L with the fixed evaluation noise of vgm.data.dequantize (what a
    flow is scored on) and shifted by −D log L onto the discrete scale. A deterministic encoder (AE) has only
    its reconstruction error. `units` names the unit of each number.
    A conditional model (`conditional = True`) is scored given the labels: its own evaluate(x, K, batch, labels),
    or the generic path through `model.given(y)`, an object with encode / decode / prior for those labels.
    """
    if iw_samples < 0 or batch_size < 1:
        raise VgmError(f"iw_samples must be >= 0 and batch_size >= 1, got {iw_samples} and {batch_size}")
    if x.shape[0] == 0:
        raise VgmError("nothing to evaluate: the split is empty")
    x = x.to(next(model.parameters()).device)          # streamed data stay on disk (read batch by batch)
    was_training = model.training
    model.eval()
    try:
        device_type = next(model.parameters()).device.type
        with torch.no_grad(), torch.autocast(device_type, enabled=False):     # fp32 whatever the training used
            own = getattr(model, "evaluate", None)
            conditional = getattr(model, "conditional", False)
            if conditional and (labels is None or len(labels) != len(x)):
                raise VgmError(f"{model.kind} is conditioned on labels: give one label per example")
            extra = (labels.to(x.device),) if conditional else ()
            out = own(x, iw_samples, batch_size, *extra) if own is not None else \
                _evaluate_latent(model, x, iw_samples, batch_size, progress, *extra)
    finally:
        model.train(was_training)
    return out


def _evaluate_latent(model, x: torch.Tensor, iw_samples: int, batch_size: int, progress: bool,
                     labels: torch.Tensor | None = None) -> dict:
    n, dims = x.shape[0], x[0].numel()
    device = next(model.parameters()).device
    levels = model.config.levels if getattr(model.config, "dequantize", False) else 0
    streamed = not torch.is_tensor(x)            # read from the disk cache batch by batch
    if levels:
        if streamed:
            raise VgmError("a dequantized model is evaluated on data held in memory: raise --memory-limit")
        x = dequantize(x, levels, eval_noise(x))
    shift = log_scale(levels, dims) if levels else 0.0
    out: dict = {"n_examples": n, "dims": dims}
    deterministic = getattr(model, "deterministic", False)
    given = (lambda i, j: model) if labels is None else (lambda i, j: model.given(labels[i:j]))
    m1 = given(0, 1)
    px = m1.decode(m1.encode(x[:1].to(device)).mean)
    base = getattr(px, "base_dist", px)
    binary = not streamed and bool(((x == 0) | (x == 1)).all())     # streamed data are 8-bit images
    if isinstance(base, Bernoulli) and not binary:
        out["note"] = ("Bernoulli likelihood on grey levels: recon, elbo and log_px are cross-entropies, not "
                       "log-likelihoods of the data (no bits/dim); binarize (--binarize dynamic) or use the "
                       "continuous Bernoulli for a density")
    elif not levels and not isinstance(base, (Bernoulli, DiscretizedLogistic)) and not deterministic:
        kind = "continuous Bernoulli" if isinstance(base, ContinuousBernoulli) else "Gaussian"
        out["note"] = (f"{kind} likelihood on continuous values: log_px is a log density (nats), not the log of "
                       "a probability, so it can be positive and no bits/dim are given (grey-level images: train "
                       "with --dequantize for bits/dim)")
    keys = ("recon",) if deterministic else ("elbo", "recon", "kl", "log_px")
    sums = dict.fromkeys(keys, 0.0)
    sq_err = 0.0
    means = []
    bar = tqdm(total=n, desc=f"evaluating (K={iw_samples})", unit="ex", leave=False,
               disable=not (progress and sys.stderr.isatty()), dynamic_ncols=True)
    for i in range(0, n, batch_size):
        xb, mb = x[i:i + batch_size].to(device, non_blocking=True), given(i, i + batch_size)
        if deterministic:
            sums["recon"] += model.loss(xb)["recon"].sum().item()
        else:
            t = elbo(mb, xb)
            for k in ("elbo", "recon", "kl"):
                sums[k] += t[k].sum().item()
            if iw_samples:
                sums["log_px"] += log_px(mb, xb, iw_samples).sum().item()
            means.append(mb.encode(xb).mean)
        sq_err += ((mb.decode(mb.encode(xb).mean).mean - xb) ** 2).sum().item()
        bar.update(len(xb))
    bar.close()
    out.update({k: v / n for k, v in sums.items()})
    out["mse"] = sq_err / (n * dims)      # per value, of the reconstruction from the posterior mean
    units = dict(UNITS)
    if deterministic:
        out.update(elbo=None, kl=None, log_px=None, bits_per_dim=None, elbo_gap=None, iw_samples=0)
        units["recon"] = "per example (the training loss: summed squared error or cross-entropy)"
        out["units"] = units
        return out
    out["recon"] -= shift
    out["elbo"] += shift
    out["iw_samples"] = iw_samples
    if not iw_samples:
        out["log_px"] = None
    elif levels:
        out["log_px"] += shift
    discrete = levels or (isinstance(base, Bernoulli) and binary) or isinstance(base, DiscretizedLogistic)
    out["bits_per_dim"] = bits_per_dim(out["log_px"], dims) if out["log_px"] is not None and discrete else None
    out["elbo_gap"] = None if out["log_px"] is None else out["log_px"] - out["elbo"]
    mu = torch.cat(means)
    var = mu.var(0) if n > 1 else torch.zeros(mu.shape[1], device=mu.device)
    out["active_units"] = int((var > ACTIVE_THRESHOLD).sum())
    out["latent_dim"] = int(mu.shape[1])
    if levels:
        out["levels"] = levels
    out["units"] = units
    return out
