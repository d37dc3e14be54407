"""The β-VAE score (Higgins et al., 2017): can a linear classifier tell which factor was held fixed?

One point: pick a factor k; draw `batch_size` pairs of factor vectors that agree on k and are otherwise
independent; z_diff = mean over the pairs of |r(x1) − r(x2)|, with r the representation (the encoder mean).
The score is the accuracy, on `n_eval` fresh points, of a logistic regression trained on `n_train` points
to predict k from z_diff (standardised first, so that the score does not depend on the code's units).
Defaults as in the literature: 10,000 training / 5,000 evaluation points, batches of 64.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import VgmError


def check_sizes(**sizes: int) -> None:
    for name, v in sizes.items():
        if v < 1:
            raise VgmError(f"{name.replace('_', '-')} must be >= 1, got {v}")


def represent(encode: Callable, dataset, factors: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """encode(images) for the images of `factors`, rendered and encoded in chunks: (N, d) floats."""
    out = [np.asarray(encode(dataset.images(factors[i:i + chunk])), dtype=np.float64)
           for i in range(0, len(factors), chunk)]
    z = np.concatenate(out)
    if z.ndim != 2 or len(z) != len(factors):
        raise VgmError(f"encode must map N images to an (N, d) array, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise VgmError("the representation contains NaN or infinite values")
    return z


def points(encode, dataset, n: int, batch_size: int, rng: np.random.Generator, chunk_points: int = 64):
    """n (z_diff, k) training points of the β-VAE score."""
    sizes = np.asarray(dataset.factor_sizes)
    feats, labels = [], []
    for start in range(0, n, chunk_points):
        m = min(chunk_points, n - start)
        k = rng.integers(0, len(sizes), size=m)
        f1 = dataset.sample_factors(m * batch_size, rng)
        f2 = dataset.sample_factors(m * batch_size, rng)
        fixed = np.repeat(k, batch_size)
        f2[np.arange(len(f2)), fixed] = f1[np.arange(len(f1)), fixed]
        z = represent(encode, dataset, np.concatenate([f1, f2]))
        diff = np.abs(z[:len(f1)] - z[len(f1):]).reshape(m, batch_size, -1).mean(1)
        feats.append(diff)
        labels.append(k)
    return np.concatenate(feats), np.concatenate(labels)


def beta_vae_score(encode: Callable, dataset, n_train: int = 10000, n_eval: int = 5000, batch_size: int = 64,
                   seed: int = 0) -> dict[str, float]:
    """{'train_accuracy', 'eval_accuracy'}; eval_accuracy is the score (chance: 1 / number of factors).

    encode: images (N, C, H, W) -> representation (N, d); dataset: factor_sizes, sample_factors(n, rng),
    images(factors) (e.g. vgm.dsprites.DSprites).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_sizes(n_train=n_train, n_eval=n_eval, batch_size=batch_size)
    rng = np.random.default_rng(seed)
    x_train, y_train = points(encode, dataset, n_train, batch_size, rng)
    if len(np.unique(y_train)) < 2:
        raise VgmError(f"β-VAE score: all {n_train} training point(s) hold the same factor fixed, and a classifier "
                       "needs two classes; use more training points (n-train; 10000 is standard)")
    x_eval, y_eval = points(encode, dataset, n_eval, batch_size, rng)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    return {"train_accuracy": float(clf.score(x_train, y_train)), "eval_accuracy": float(clf.score(x_eval, y_eval))}
