"""mnist: any folder in the MNIST IDX layout (train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz], and
optionally the label files), from --data-dir or $VGM_DATA_DIR; 28x28 grey levels scaled to [0, 1]."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import VgmError
from ..registry import register_dataset
from .splits import Splits, data_location, image_splits


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
