"""Separated attribute predictability (Kumar et al., 2018).

    S_ik = how well code i alone predicts factor k: the test accuracy of a linear classifier on z_i
           (discrete factors, as in disentanglement_lib), or R² of a linear fit (continuous factors)
    SAP  = (1/K) Σ_k [ S_(1)k − S_(2)k ]     (gap between the best and second best single code)
A factor that is constant in the training share has nothing to predict: it is left out of the mean, as in
MIG, and SAP is refused when every factor is constant.
"""
from __future__ import annotations

import numpy as np

from ..errors import VgmError
from .mig import check, constant_factors


def score_matrix(z_train, v_train, z_test, v_test, continuous: bool = False) -> np.ndarray:
    """(d, K) predictability of each factor from each single code."""
    from sklearn.svm import LinearSVC

    d, k = z_train.shape[1], v_train.shape[1]
    s = np.zeros((d, k))
    for i in range(d):
        for j in range(k):
            if continuous:
                c = np.cov(z_train[:, i], v_train[:, j], ddof=1)
                s[i, j] = c[0, 1] ** 2 / (c[0, 0] * c[1, 1]) if c[0, 0] > 0 and c[1, 1] > 0 else 0.0
            elif np.ptp(z_train[:, i]) == 0 or len(np.unique(v_train[:, j])) < 2:
                s[i, j] = 0.0
            else:
                clf = LinearSVC(C=0.01, class_weight="balanced").fit(z_train[:, i:i + 1], v_train[:, j])
                s[i, j] = np.mean(clf.predict(z_test[:, i:i + 1]) == v_test[:, j])
    return s


def sap(codes, factors, test_fraction: float = 0.2, continuous: bool = False, seed: int = 0) -> float:
    """SAP score of codes (N, d) about factors (N, K); the classifiers are scored on a held-out share."""
    z, v = check(codes, factors)
    if z.shape[1] < 2:
        raise VgmError("SAP needs at least two code dimensions")
    z = (z - z.mean(0)) / np.where(z.std(0) > 0, z.std(0), 1.0)     # scale-free, as the score should be
    perm = np.random.default_rng(seed).permutation(len(z))
    n_test = max(1, int(round(test_fraction * len(z))))
    te, tr = perm[:n_test], perm[n_test:]
    keep = np.setdiff1d(np.arange(v.shape[1]), constant_factors(v[tr]))
    if not len(keep):
        raise VgmError("SAP is undefined when every factor is constant in the sample")
    s = score_matrix(z[tr], v[tr][:, keep], z[te], v[te][:, keep], continuous)
    top = np.sort(s, axis=0)[::-1]
    return float(np.mean(top[0] - top[1]))
