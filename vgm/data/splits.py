"""Datasets as tensors: train / validation / test splits, held whole in memory (on the training device).

The validation split is carved from the training data by a fixed seed (the same for every run), so runs with
different --seed values are selected on the same examples; the test split never takes part in training.
Binarisation: none (grey levels), static (each value drawn once, by a fixed seed) or dynamic (training
examples redrawn every epoch by the trainer; validation and test drawn once, as in static).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import VgmError
from ..registry import DATASETS

BINARIZE = ("none", "static", "dynamic")
SPLIT_SEED = 0        # fixes the validation split (and test binarisation) for every run
DATA_DIR_ENV = "VGM_DATA_DIR"


@dataclass
class Splits:
    """Three tensors of examples (N, *shape) and optional integer labels, plus how training data is binarised."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    binarize: str = "none"
    name: str = ""
    meta: dict = field(default_factory=dict)   # e.g. vocabulary; fills same-named model config fields

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def kind(self) -> str:
        """What the examples are: images (C, H, W), vectors (D,), tokens (T,) of integer ids, or sequences (T, D)
        of real values; models state which kinds they take."""
        if self.train.dtype == torch.long:
            return "tokens"
        return {3: "images", 1: "vectors", 2: "sequences"}.get(len(self.shape), "other")

    def split(self, name: str) -> torch.Tensor:
        if name not in ("train", "val", "test"):
            raise VgmError(f"unknown split {name!r} (choose train, val or test)")
        return getattr(self, name)

    def to(self, device) -> "Splits":
        move = lambda t: None if t is None else t.to(device)
        return Splits(move(self.train), move(self.val), move(self.test), move(self.train_labels),
                      move(self.val_labels), move(self.test_labels), self.binarize, self.name, self.meta)


def load(name: str = "digits", data_dir: str | None = None, binarize: str = "none",
         val_fraction: float = 0.1) -> Splits:
    """Load a registered dataset by name, checked for finite values, with the validation split carved out."""
    if name not in DATASETS:
        raise VgmError(f"unknown dataset {name!r} (choose from {', '.join(sorted(DATASETS))})")
    if binarize not in BINARIZE:
        raise VgmError(f"unknown binarization {binarize!r} (choose {', '.join(BINARIZE)})")
    if not 0 < val_fraction < 1:
        raise VgmError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    splits = DATASETS[name](data_dir=data_dir, binarize=binarize, val_fraction=val_fraction)
    splits.name, splits.binarize = name, binarize
    return splits


def image_splits(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, binarize: str,
                 val_fraction: float, source: str, levels: int = 0) -> Splits:
    """Check image arrays in [0, 1], carve the fixed validation split, binarise as asked.

    levels: the number of grey levels k/(L−1) the values take (0: continuous); meta["levels"] tells models
    that dequantize (flows, VAE --dequantize) the scale; binarised data have 2.
    """
    for what, arr in (("training", train_x), ("test", test_x)):
        if arr.size == 0:
            raise VgmError(f"{source}: there are no {what} images")
        if not np.isfinite(arr).all():
            raise VgmError(f"{source}: the {what} images contain NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise VgmError(f"{source}: the {what} images have values outside [0, 1]")
    rng = np.random.default_rng(SPLIT_SEED)
    perm = rng.permutation(len(train_x))
    n_val = max(1, int(round(val_fraction * len(train_x))))
    if n_val >= len(train_x):
        raise VgmError(f"{source}: too few training images ({len(train_x)}) to carve a validation split")
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    lab = lambda y, i=None: None if y is None else torch.tensor(y if i is None else y[i], dtype=torch.long)
    train, val, test = t(train_x[tr_idx]), t(train_x[val_idx]), t(test_x)
    if binarize in ("static", "dynamic"):
        g = torch.Generator().manual_seed(SPLIT_SEED)
        val, test = torch.bernoulli(val, generator=g), torch.bernoulli(test, generator=g)
        if binarize == "static":
            train = torch.bernoulli(train, generator=g)
    levels = 2 if binarize in ("static", "dynamic") else levels
    return Splits(train, val, test, lab(train_y, tr_idx), lab(train_y, val_idx), lab(test_y),
                  meta={"levels": levels})


def data_location(data_dir: str | None, dataset: str, what: str) -> Path:
    """--data-dir, else $VGM_DATA_DIR, for a dataset that lives in the user's files."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise VgmError(f"dataset {dataset!r} needs a {what}: pass --data-dir or set {DATA_DIR_ENV}")
    return Path(data_dir).expanduser()
