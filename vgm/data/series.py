"""Real-valued sequences: sliding windows of a real time series, and images read row by row.

co2:        the weekly Mauna Loa CO2 record 1958-2001 bundled with statsmodels (2,284 weeks; its 59 missing weeks
            filled by linear interpolation). Windows of 52 weeks (stride 1), each centred on its own mean (so the
            model learns the shape: the seasonal cycle on the rising trend) and divided by one scale computed on
            the training weeks. The splits are chronological, with no shared weeks: the last 15% of the record is
            the test split and `val_fraction` of the rest, just before it, the validation split.
digit-rows: scikit-learn's 8x8 digits, each a sequence of 8 rows of 8 grey levels (the `digits` splits).
mnist-rows: an MNIST IDX folder (--data-dir), each image a sequence of 28 rows of 28 grey levels.
Each split is a float tensor (N, T, D); the models read NaN steps as padding (see vgm.sequences).
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from .digits import load_digits
from .mnist import load_mnist
from .splits import Splits
from ..errors import VgmError
from ..registry import register_dataset

WINDOW = 52
TEST_FRACTION = 0.15


def co2_weekly() -> np.ndarray:
    """The weekly CO2 series (ppm) from statsmodels' bundled CSV, gaps linearly interpolated."""
    try:
        csv = resources.files("statsmodels.datasets.co2") / "co2.csv"
    except ModuleNotFoundError:
        raise VgmError("dataset 'co2' needs the statsmodels package (pip install statsmodels)") from None
    rows = csv.read_text().splitlines()[1:]
    y = np.array([float(r.split(",")[1]) if r.split(",")[1] else np.nan for r in rows])
    t, ok = np.arange(len(y)), ~np.isnan(y)
    return np.interp(t, t[ok], y[ok])


def windows(y: np.ndarray, width: int) -> np.ndarray:
    """All windows of `width` consecutive values, (len - width + 1, width)."""
    return np.lib.stride_tricks.sliding_window_view(y, width).copy()


def series_splits(y: np.ndarray, val_fraction: float, width: int = WINDOW) -> Splits:
    """Chronological train / val / test parts of a series, cut into centred, scaled windows (N, width, 1)."""
    n = len(y)
    n_test = int(round(TEST_FRACTION * n))
    n_val = int(round(val_fraction * (n - n_test)))
    cut_val, cut_test = n - n_test - n_val, n - n_test
    if min(cut_val, n_val, n_test) < width:
        raise VgmError(f"series of {n} values too short for windows of {width} in three splits")
    parts = [windows(y[a:b], width) for a, b in ((0, cut_val), (cut_val, cut_test), (cut_test, n))]
    parts = [w - w.mean(1, keepdims=True) for w in parts]
    scale = parts[0].std()
    t = lambda w: torch.as_tensor(w / scale, dtype=torch.float32)[..., None]
    return Splits(t(parts[0]), t(parts[1]), t(parts[2]),
                  meta={"likelihood": "gaussian", "alphabet": "", "input_dim": 1, "max_len": width})


@register_dataset("co2", kind="sequences")
def load_co2(data_dir=None, binarize="none", val_fraction=0.1) -> Splits:
    """Weekly Mauna Loa CO2 (statsmodels), 52-week windows."""
    if binarize != "none":
        raise VgmError("co2: a real-valued series cannot be binarised (use --binarize none)")
    return series_splits(co2_weekly(), val_fraction)


def row_splits(images: Splits) -> Splits:
    """(N, 1, H, W) image splits -> (N, H, W) sequences of rows."""
    rows = lambda x: x[:, 0].contiguous()
    return Splits(rows(images.train), rows(images.val), rows(images.test), images.train_labels,
                  images.val_labels, images.test_labels,
                  meta={"likelihood": "gaussian", "alphabet": "", "input_dim": images.train.shape[-1],
                        "max_len": images.train.shape[-2]})


@register_dataset("digit-rows", kind="sequences")
def load_digit_rows(data_dir=None, binarize="none", val_fraction=0.1) -> Splits:
    """8x8 digits as sequences of 8 rows."""
    if binarize != "none":
        raise VgmError("digit-rows: the models use a Gaussian likelihood; use --binarize none")
    return row_splits(load_digits(binarize="none", val_fraction=val_fraction))


@register_dataset("mnist-rows", kind="sequences")
def load_mnist_rows(data_dir=None, binarize="none", val_fraction=0.1) -> Splits:
    """MNIST (IDX folder) as sequences of 28 rows."""
    if binarize != "none":
        raise VgmError("mnist-rows: the models use a Gaussian likelihood; use --binarize none")
    return row_splits(load_mnist(data_dir=data_dir, binarize="none", val_fraction=val_fraction))
