"""Datasets as tensors: train / validation / test splits, held whole in memory (on the training device), or, for
image data larger than memory, read from disk batch by batch (StreamedImages, see streamed.py).

The validation split is carved from the training data by a fixed seed (the same for every run), so runs with
different --seed values are selected on the same examples; the test split never takes part in training.
Binarisation: none (grey levels), static (each value drawn once, by a fixed seed) or dynamic (training
examples redrawn every epoch by the trainer; validation and test drawn once, as in static).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import VgmError
from ..registry import DATASETS
from .streamed import StreamedImages

BINARIZE = ("none", "static", "dynamic")
SPLIT_SEED = 0        # fixes the validation split (and the binarisation of the training data) for every run
TEST_BINARIZE_SEED = 2   # the test split's binarisation: its own stream, so no training option can move it
TEST_FRACTION = 0.2   # test share of data given without a test split (a path); carved with seed SPLIT_SEED + 1
DATA_DIR_ENV = "VGM_DATA_DIR"


@dataclass
class Splits:
    """Three tensors of examples (N, *shape) and optional integer labels, plus how training data is binarised.

    The examples of images larger than memory are StreamedImages (indexing gives float32 tensors; iterate them
    with vgm.data.loader); labels are always tensors.
    """

    train: torch.Tensor | StreamedImages
    val: torch.Tensor | StreamedImages
    test: torch.Tensor | StreamedImages
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

    @property
    def streamed(self) -> bool:
        """True when the examples stay on disk and are read batch by batch (data larger than memory)."""
        return isinstance(self.train, StreamedImages)

    def split(self, name: str) -> torch.Tensor | StreamedImages:
        if name not in ("train", "val", "test"):
            raise VgmError(f"unknown split {name!r} (choose train, val or test)")
        return getattr(self, name)

    def to(self, device) -> "Splits":
        """The splits on `device`; streamed examples stay on disk (their batches are moved as they are read)."""
        move = lambda t: None if t is None else t.to(device)
        return Splits(move(self.train), move(self.val), move(self.test), move(self.train_labels),
                      move(self.val_labels), move(self.test_labels), self.binarize, self.name, self.meta)


def load(name: str = "digits", data_dir: str | None = None, binarize: str = "none",
         val_fraction: float = 0.1, workers: int = 0, **options) -> Splits:
    """Load a registered dataset by name, or the data at a path (an image folder, .npy, .npz, .csv or .tsv; see
    vgm.data.source.load_path for `options` and `workers`), checked, with the validation split carved out."""
    if binarize not in BINARIZE:
        raise VgmError(f"unknown binarization {binarize!r} (choose {', '.join(BINARIZE)})")
    if not 0 < val_fraction < 1:
        raise VgmError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if name not in DATASETS:
        from .source import load_path, looks_like_path
        if not looks_like_path(name):
            raise VgmError(f"unknown dataset {name!r} (choose from {', '.join(sorted(DATASETS))}, or give the "
                           "path of an image folder or of a .npy, .npz, .csv or .tsv file)")
        if data_dir:
            raise VgmError(f"--data-dir does not apply to data given as a path ({name})")
        return load_path(name, binarize, val_fraction, workers=workers, **options)
    given = [k for k, v in options.items() if v not in (None, False)]
    if given:
        raise VgmError(f"--{given[0].replace('_', '-')} applies to data read from a path, not to the "
                       f"dataset {name!r}")
    splits = DATASETS[name](data_dir=data_dir, binarize=binarize, val_fraction=val_fraction)
    splits.name, splits.binarize = name, binarize
    return splits


def carve(n: int, fraction: float, seed: int, source: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, kept) positions of n examples: a fixed share `fraction` (at least one) drawn by `seed`."""
    perm = np.random.default_rng(seed).permutation(n)
    n_out = max(1, int(round(fraction * n)))
    if n_out >= n:
        raise VgmError(f"{source}: too few examples ({n}) to carve a {what} split")
    return perm[:n_out], perm[n_out:]


def image_splits(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, binarize: str,
                 val_fraction: float, source: str, levels: int = 0) -> Splits:
    """Check image arrays (uint8 0..255, or floats in [0, 1]), carve the fixed validation split, binarise as asked.

    levels: the number of grey levels k/(L−1) the values take (0: continuous; uint8 arrays have 256); meta["levels"]
    tells models that dequantize (flows, VAE --dequantize) the scale; binarised data have 2.
    """
    for what, arr in (("training", train_x), ("test", test_x)):
        if arr.size == 0:
            raise VgmError(f"{source}: there are no {what} images")
        if arr.dtype == np.uint8:
            continue
        if not np.isfinite(arr).all():
            raise VgmError(f"{source}: the {what} images contain NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise VgmError(f"{source}: the {what} images have values outside [0, 1]")
    if train_x.dtype == np.uint8 and test_x.dtype == np.uint8:
        levels = 256
    val_idx, tr_idx = carve(len(train_x), val_fraction, SPLIT_SEED, source, "validation")
    t = lambda a: (torch.from_numpy(np.ascontiguousarray(a)).float().div_(255) if a.dtype == np.uint8
                   else torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32))
    lab = lambda y, i=None: None if y is None else torch.tensor(y if i is None else y[i], dtype=torch.long)
    if binarize in ("static", "dynamic"):
        # each example is drawn once, in its place in the given arrays: its pixels depend on the seed and its
        # position only, never on --val-fraction (which moves examples between train and val) or other options
        given = binarize_once(t(train_x), SPLIT_SEED)
        val = given[val_idx]
        train = given[tr_idx] if binarize == "static" else t(train_x[tr_idx])
        test = binarize_once(t(test_x), TEST_BINARIZE_SEED)
    else:
        train, val, test = t(train_x[tr_idx]), t(train_x[val_idx]), t(test_x)
    levels = 2 if binarize in ("static", "dynamic") else levels
    return Splits(train, val, test, lab(train_y, tr_idx), lab(train_y, val_idx), lab(test_y),
                  meta={"levels": levels})


def binarize_once(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x ~ Bernoulli(x) drawn once by a fixed seed: one uniform per value, in the order of x, so example i's draw
    depends only on (seed, i) and the shape of x."""
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    return (u < x).to(x.dtype)


def streamed_splits(path: Path, train_rows: np.ndarray, train_y, test_rows: np.ndarray, test_y,
                    val_fraction: float, source: str, item_shape: tuple[int, ...] | None = None) -> Splits:
    """image_splits for uint8 images left on disk (rows of a (N, C, H, W) .npy file): the same validation split,
    example for example, as image_splits of the same arrays; binarisation needs the images in memory."""
    for what, rows in (("training", train_rows), ("test", test_rows)):
        if len(rows) == 0:
            raise VgmError(f"{source}: there are no {what} images")
    images = StreamedImages(path, item_shape=item_shape)
    val_idx, tr_idx = carve(len(train_rows), val_fraction, SPLIT_SEED, source, "validation")
    lab = lambda y, i=None: None if y is None else torch.tensor(y if i is None else y[i], dtype=torch.long)
    return Splits(images.subset(train_rows[tr_idx]), images.subset(train_rows[val_idx]), images.subset(test_rows),
                  lab(train_y, tr_idx), lab(train_y, val_idx), lab(test_y), meta={"levels": 256})


def note(message: str) -> None:
    """One line on stderr about what the data loading did (a skipped file, a cache being built)."""
    print(f"vgm: {message}", file=sys.stderr)


def data_location(data_dir: str | None, dataset: str, what: str) -> Path:
    """--data-dir, else $VGM_DATA_DIR, for a dataset that lives in the user's files."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise VgmError(f"dataset {dataset!r} needs a {what}: pass --data-dir or set {DATA_DIR_ENV}")
    return Path(data_dir).expanduser()
