"""Disentanglement, completeness and informativeness (Eastwood & Williams, 2018).

R (d x K): importance of code i for predicting factor k, from one tree ensemble per factor (gradient
boosted trees as in disentanglement_lib, or a random forest of 50 trees on all
features, several times faster). With P_ik = R_ik / Σ_k R_ik:
    disentanglement = Σ_i ρ_i (1 − H_K(P_i·)),   ρ_i = Σ_k R_ik / Σ R       (each code explains one factor)
    completeness    = Σ_k ρ_k (1 − H_d(P̃_·k)),   P̃_ik = R_ik / Σ_i R_ik   (each factor in one code)
    informativeness = the predictors' mean accuracy on held-out points
H_K is the entropy in base K (so each term lies in [0, 1]).
"""
from __future__ import annotations

import numpy as np

from ..errors import VgmError
from .mig import check

IMPORTANCE_MODELS = ("gbt", "forest")


def importance_matrix(z_train, v_train, z_test, v_test, model: str = "gbt", seed: int = 0):
    """(d, K) importances and the per-factor train and test accuracies."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    if model not in IMPORTANCE_MODELS:
        raise VgmError(f"unknown importance model {model!r} (choose {' or '.join(IMPORTANCE_MODELS)})")
    d, k = z_train.shape[1], v_train.shape[1]
    r, acc_train, acc_test = np.zeros((d, k)), np.zeros(k), np.zeros(k)
    for j in range(k):
        if len(np.unique(v_train[:, j])) < 2:
            acc_train[j] = acc_test[j] = 1.0            # a constant factor: nothing to explain, nothing to miss
            continue
        clf = (GradientBoostingClassifier(random_state=seed) if model == "gbt" else
               RandomForestClassifier(n_estimators=50, max_features=None, min_samples_leaf=5,
                                      random_state=seed))
        clf.fit(z_train, v_train[:, j])
        r[:, j] = np.abs(clf.feature_importances_)
        acc_train[j] = np.mean(clf.predict(z_train) == v_train[:, j])
        acc_test[j] = np.mean(clf.predict(z_test) == v_test[:, j])
    return r, acc_train, acc_test


def weighted_purity(r: np.ndarray) -> float:
    """Σ_i ρ_i (1 − H_K(P_i·)) over the rows of r (d x K), entropy in base K."""
    import scipy.stats

    if r.sum() == 0:
        return 0.0
    if r.shape[1] == 1:
        return 1.0                                      # one column: every row is trivially pure
    purity = 1.0 - scipy.stats.entropy(r.T + 1e-11, base=r.shape[1])
    return float(np.sum(purity * r.sum(1) / r.sum()))


def dci(codes, factors, test_fraction: float = 0.2, model: str = "gbt", seed: int = 0) -> dict[str, float]:
    """{'disentanglement', 'completeness', 'informativeness', 'informativeness_train'} of codes about factors."""
    z, v = check(codes, factors)
    perm = np.random.default_rng(seed).permutation(len(z))
    n_test = max(1, int(round(test_fraction * len(z))))
    te, tr = perm[:n_test], perm[n_test:]
    r, acc_train, acc_test = importance_matrix(z[tr], v[tr], z[te], v[te], model, seed)
    return {"disentanglement": weighted_purity(r), "completeness": weighted_purity(r.T),
            "informativeness": float(acc_test.mean()), "informativeness_train": float(acc_train.mean())}
