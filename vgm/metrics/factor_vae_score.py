"""The FactorVAE score (Kim & Mnih, 2018): does the least varying code reveal which factor was held fixed?

As disentanglement_lib (evaluation/metrics/factor_vae.py with its study's `prune_dims.threshold = 0.05`):
  * global scale: s_j = std of representation dimension j over `n_variance` random images (ddof = 1);
  * pruning: dimension j is active when s_j >= `prune`, on the raw, un-normalised codes (normalised codes
    all have s_j = 1). The threshold assumes codes on the prior's scale, where a collapsed dimension has
    s_j ≈ 0; a β-VAE's unused dimensions can keep s_j of 0.05–0.2, so 'active_dims' counts what this test
    keeps, not what the model uses (vgm metrics reports the dimensions active by KL beside it);
  * one vote: pick a factor k, fix it at a random value, draw `batch_size` images, and take the active
    dimension of least variance after dividing by s_j² (ddof = 1);
  * a majority-vote classifier maps each active dimension to the factor it most often voted for; the score
    is its accuracy on `n_eval` fresh votes (defaults: 10,000 training and 5,000 evaluation votes, batches
    of 64), and 0 with no active dimension.
One difference: disentanglement_lib reports num_active_dims = len(mask), i.e. every dimension; vgm counts
the active ones.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import VgmError
from .beta_vae_score import check_sizes, represent


def votes(encode, dataset, n: int, batch_size: int, scale: np.ndarray, active: np.ndarray,
          rng: np.random.Generator, chunk_votes: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """n votes: (argmin dimension among the active ones, fixed factor)."""
    sizes = np.asarray(dataset.factor_sizes)
    dims, factors = [], []
    for start in range(0, n, chunk_votes):
        m = min(chunk_votes, n - start)
        k = rng.integers(0, len(sizes), size=m)
        f = dataset.sample_factors(m * batch_size, rng).reshape(m, batch_size, -1)
        value = rng.integers(0, sizes[k])                   # the value factor k is fixed at, per vote
        f[np.arange(m), :, k] = value[:, None]
        z = represent(encode, dataset, f.reshape(m * batch_size, -1)).reshape(m, batch_size, -1)
        var = np.var(z[..., active] / scale[active], axis=1, ddof=1)
        dims.append(np.argmin(var, axis=1))
        factors.append(k)
    return np.concatenate(dims), np.concatenate(factors)


def factor_vae_score(encode: Callable, dataset, n_train: int = 10000, n_eval: int = 5000, batch_size: int = 64,
                     n_variance: int = 10000, prune: float = 0.05, seed: int = 0) -> dict[str, float]:
    """{'train_accuracy', 'eval_accuracy', 'active_dims'}; eval_accuracy is the score (0 with no active dims).

    encode: images (N, C, H, W) -> representation (N, d); dataset: factor_sizes, sample_factors(n, rng),
    images(factors) (e.g. vgm.dsprites.DSprites).
    """
    check_sizes(n_train=n_train, n_eval=n_eval, batch_size=batch_size, n_variance=n_variance)
    if batch_size < 2 or n_variance < 2:
        raise VgmError("batch-size and n-variance must be >= 2 (a variance needs two points)")
    rng = np.random.default_rng(seed)
    z = represent(encode, dataset, dataset.sample_factors(n_variance, rng))
    variance = np.var(z, axis=0, ddof=1)
    active = np.sqrt(variance) >= prune
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "active_dims": 0}
    scale = np.sqrt(variance)
    n_factors = len(dataset.factor_sizes)
    d_train, k_train = votes(encode, dataset, n_train, batch_size, scale, active, rng)
    d_eval, k_eval = votes(encode, dataset, n_eval, batch_size, scale, active, rng)
    table = np.zeros((int(active.sum()), n_factors), dtype=np.int64)
    np.add.at(table, (d_train, k_train), 1)
    vote_of = table.argmax(1)                           # the majority-vote classifier: dimension -> factor
    return {"train_accuracy": float(table.max(1).sum() / n_train),
            "eval_accuracy": float(np.mean(vote_of[d_eval] == k_eval)), "active_dims": int(active.sum())}
