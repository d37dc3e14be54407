"""Datasets as tensors: train / validation / test splits, held whole in memory (on the training device).

digits: scikit-learn's 8x8 digits (1,797 images, embedded, no download), scaled to [0, 1].
mnist:  any folder in the MNIST IDX layout (train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz], and
        optionally the label files), from --data-dir or $VGM_DATA_DIR; 28x28 grey levels scaled to [0, 1].
The validation split is carved from the training data by a fixed seed (the same for every run), so runs with
different --seed values are selected on the same examples; the test split never takes part in training.
Binarisation: none (grey levels), static (each value drawn once, by a fixed seed) or dynamic (training
examples redrawn every epoch by the trainer; validation and test drawn once, as in static).
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import VgmError
from .registry import DATASETS, register_dataset

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


def data_location(data_dir: str | None, dataset: str, what: str) -> Path:
    """--data-dir, else $VGM_DATA_DIR, for a dataset that lives in the user's files."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise VgmError(f"dataset {dataset!r} needs a {what}: pass --data-dir or set {DATA_DIR_ENV}")
    return Path(data_dir).expanduser()


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): magic 0x0000 TT NN, NN big-endian uint32 sizes, then the data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:      # gzip.BadGzipFile is an OSError
        raise VgmError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise VgmError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise VgmError(f"{path} is not an IDX file (truncated header)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise VgmError(f"{path} is truncated or corrupt: header promises {dims} values "
                       f"({expected} bytes), file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def find_idx(folder: Path, stem: str, required: bool = True) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    if required:
        raise VgmError(f"{folder} is not an MNIST-format folder: no {stem}[.gz] in it")
    return None


def idx_images(path: Path) -> np.ndarray:
    arr = read_idx(path)
    if arr.ndim != 3:
        raise VgmError(f"{path}: expected images of shape (N, H, W), got {arr.shape}")
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    return (arr.astype(np.float32) / scale)[:, None]


@register_dataset("mnist")
def load_mnist(data_dir=None, binarize="none", val_fraction=0.1) -> Splits:
    """An MNIST-layout IDX folder; the t10k files are the test split."""
    folder = data_location(data_dir, "mnist", "folder")
    if not folder.is_dir():
        raise VgmError(f"data folder {folder} does not exist")
    train_x = idx_images(find_idx(folder, "train-images-idx3-ubyte"))
    test_x = idx_images(find_idx(folder, "t10k-images-idx3-ubyte"))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise VgmError(f"{folder}: training images {train_x.shape[2:]} and test images "
                       f"{test_x.shape[2:]} differ in size")
    labels = []
    for stem, n in (("train-labels-idx1-ubyte", len(train_x)), ("t10k-labels-idx1-ubyte", len(test_x))):
        p = find_idx(folder, stem, required=False)
        y = None if p is None else read_idx(p)
        if y is not None and y.shape != (n,):
            raise VgmError(f"{p}: {y.shape[0]} labels for {n} images")
        labels.append(y)
    on_lattice = lambda a: np.array_equal(np.round(a * 255) / 255, a)       # 8-bit grey levels k/255
    levels = 256 if on_lattice(train_x) and on_lattice(test_x) else 0
    return image_splits(train_x, labels[0], test_x, labels[1], binarize, val_fraction, str(folder), levels)
