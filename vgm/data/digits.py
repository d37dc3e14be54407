"""digits: scikit-learn's 8x8 digits (1,797 images, embedded, no download), 17 grey levels scaled to [0, 1]."""
from __future__ import annotations

import numpy as np

from ..registry import register_dataset
from .splits import SPLIT_SEED, Splits, image_splits


@register_dataset("digits")
def load_digits(data_dir=None, binarize="none", val_fraction=0.1) -> Splits:
    """scikit-learn's 8x8 digits, grey levels 0..16 scaled to [0, 1]; a fixed 20% is the test split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]       # (1797, 1, 8, 8)
    perm = np.random.default_rng(SPLIT_SEED + 1).permutation(len(x))
    n_test = len(x) // 5
    te, tr = perm[:n_test], perm[n_test:]
    return image_splits(x[tr], d.target[tr], x[te], d.target[te], binarize, val_fraction, "digits", levels=17)
