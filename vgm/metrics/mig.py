"""Mutual information gap (Chen et al., 2018), as computed in the disentanglement literature.

    MIG = (1/K) Σ_k [ I(z_a(k); v_k) − I(z_b(k); v_k) ] / H(v_k)
a(k), b(k): the codes with the largest and second largest mutual information with factor v_k. Codes are
discretised into 20 equal-width bins per dimension (as in disentanglement_lib); MI and entropies come from
scikit-learn's mutual_info_score on the discrete values (nats).

A factor that is constant in the sample has H(v_k) = 0 and no normalised MI (0/0; disentanglement_lib returns
NaN): it is left out of the mean (constant_factors names such factors), and MIG is refused when every factor
is constant.
"""
from __future__ import annotations

import numpy as np

from ..errors import VgmError


def check(codes, factors) -> tuple[np.ndarray, np.ndarray]:
    """codes (N, d) finite floats, factors (N, K) integers, same N."""
    z, v = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    if z.ndim != 2 or v.ndim != 2 or len(z) != len(v) or len(z) < 2:
        raise VgmError(f"codes must be (N, d) and factors (N, K) with the same N >= 2, got {z.shape} and {v.shape}")
    if not np.isfinite(z).all():
        raise VgmError("codes contain NaN or infinite values")
    if not np.issubdtype(v.dtype, np.integer):
        raise VgmError(f"factors must be integer indices, got {v.dtype}")
    return z, v


def constant_factors(factors: np.ndarray) -> list[int]:
    """Indices of the factors (columns) that take one value only in the sample: nothing to find or predict."""
    v = np.asarray(factors)
    return [k for k in range(v.shape[1]) if (v[:, k] == v[0, k]).all()]


def discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each column cut into `bins` equal-width bins over its own range: integer bin indices (N, d)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for j, col in enumerate(codes.T):
        edges = np.histogram_bin_edges(col, bins)
        out[:, j] = np.digitize(col, edges[1:-1])
    return out


def mutual_info_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(d, K) matrix of I(code_i; factor_k) in nats."""
    from sklearn.metrics import mutual_info_score
    return np.array([[mutual_info_score(v, c) for v in factors.T] for c in discrete_codes.T])


def mig(codes, factors, bins: int = 20) -> float:
    """Mutual information gap of codes (N, d) about integer factors (N, K), in [0, 1]."""
    from sklearn.metrics import mutual_info_score

    z, v = check(codes, factors)
    if z.shape[1] < 2:
        raise VgmError("MIG needs at least two code dimensions")
    mi = mutual_info_matrix(discretize(z, bins), v)
    entropy = np.array([mutual_info_score(f, f) for f in v.T])
    keep = entropy > 0                                       # a constant factor carries nothing to find
    if not keep.any():
        raise VgmError("MIG is undefined when every factor is constant in the sample (each H(v_k) = 0)")
    top = np.sort(mi, axis=0)[::-1]
    return float(np.mean((top[0, keep] - top[1, keep]) / entropy[keep]))
