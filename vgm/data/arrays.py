"""NumPy files as image datasets: a .npy file (one array) or a .npz file (named arrays).

.npz names: "train" and "test" (the splits), with optional "train_labels" and "test_labels"; or "x" (a fixed test
share carved from it, as for a .npy), with optional "y". Other names are ignored.
Values: uint8 0..255, or floats (16, 32 or 64 bits) in [0, 1]. Layouts: (N, H, W) grey, and (N, C, H, W) or
(N, H, W, C), told apart by the one axis of 1 to 4 entries (the channels); a shape where both or neither could be
the channels, e.g. (N, 3, 8, 3), is refused unless `layout` states it.
Above the memory limit, uint8 arrays are streamed: in place when their bytes are already (N, C, H, W), else copied
once, in chunks, into the cache (cache.py); floats must fit in memory.
"""
from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from ..errors import VgmError
from .cache import cache_root, cached_images, file_fingerprints
from .splits import SPLIT_SEED, TEST_FRACTION, Splits, carve, image_splits, note, streamed_splits

CHANNEL_MAX = 4
LAYOUTS = ("NCHW", "NHWC")
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)
CHUNK_BYTES = 64 * 2**20


def image_layout(shape: tuple[int, ...], layout: str | None, source: str) -> str:
    """"NHW", "NCHW" or "NHWC" for an array of this shape; VgmError when it is not images or is ambiguous."""
    if len(shape) == 3:
        if layout:
            raise VgmError(f"--layout applies to 4-D arrays; {source} has shape {shape}, grey images (N, H, W)")
        return "NHW"
    if len(shape) == 4:
        if layout:
            return layout
        first, last = shape[1] <= CHANNEL_MAX, shape[3] <= CHANNEL_MAX
        if first != last:
            return "NCHW" if first else "NHWC"
        doubt = "could be" if first else "has no axis of 1 to 4 channels: is it"
        raise VgmError(f"{source}: shape {shape} {doubt} (N, C, H, W) or (N, H, W, C)? "
                       "state it with --layout NCHW or --layout NHWC")
    hint = "; a 2-D (N, D) array is a table: save it as a .csv file" if len(shape) == 2 else ""
    raise VgmError(f"{source}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {shape}{hint}")


def item_shape(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    """(C, H, W) of one image of an array of `shape` in `layout`."""
    if layout == "NHW":
        return (1, shape[1], shape[2])
    return tuple(shape[1:]) if layout == "NCHW" else (shape[3], shape[1], shape[2])


def as_nchw(a: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NHW":
        return a[:, None]
    return a if layout == "NCHW" else a.transpose(0, 3, 1, 2)


def check_dtype(dtype: np.dtype, source: str) -> None:
    if dtype != np.uint8 and not (dtype.kind == "f" and dtype.itemsize in (2, 4, 8)):
        raise VgmError(f"{source} has dtype {dtype}: give uint8 0..255 or floats in [0, 1] "
                       "(e.g. a.astype(np.uint8) for integer grey levels)")


def on_lattice(a: np.ndarray) -> bool:
    """True when every value is an 8-bit grey level k/255 (uint8, or floats that are exactly such levels)."""
    return a.dtype == np.uint8 or bool(np.array_equal(np.round(a * 255) / 255, a))


def _header(f: BinaryIO) -> tuple[tuple[int, ...], np.dtype, bool]:
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f".npy format version {version} is not supported")
    shape, fortran, dtype = read(f)
    return tuple(shape), dtype, fortran


class ArrayFile:
    """The arrays of a .npy (one, named "x") or .npz file: shapes without reading the data, then whole or in chunks."""

    def __init__(self, path: Path):
        self.path, self.zip = path, None
        try:
            if path.suffix.lower() == ".npz":
                self.zip = zipfile.ZipFile(path)
                self.names = [n[:-4] for n in self.zip.namelist() if n.endswith(".npy")]
            else:
                self.names = ["x"]
            self.headers = {n: self._with(n, _header) for n in self.names}
        except READ_ERRORS as e:
            raise VgmError(f"cannot read {path}: {e}") from None

    def _open(self, name: str) -> BinaryIO:
        return self.zip.open(name + ".npy") if self.zip else open(self.path, "rb")

    def _with(self, name: str, fn: Callable):
        with self._open(name) as f:
            return fn(f)

    def source(self, name: str) -> str:
        return f"{self.path}" if self.zip is None else f"{self.path} ({name!r})"

    def read(self, name: str) -> np.ndarray:
        try:
            return self._with(name, lambda f: np.lib.format.read_array(f, allow_pickle=False))
        except READ_ERRORS as e:
            raise VgmError(f"cannot read {self.source(name)}: {e}") from None

    def chunks(self, name: str) -> Iterator[np.ndarray]:
        """The array in C order, a few rows at a time (bounded memory, for streaming)."""
        shape, dtype, _ = self.headers[name]
        row = math.prod(shape[1:]) * dtype.itemsize
        step = max(1, CHUNK_BYTES // max(row, 1))
        with self._open(name) as f:
            _header(f)
            for start in range(0, shape[0], step):
                k = min(step, shape[0] - start)
                try:
                    buf = f.read(k * row)
                except READ_ERRORS as e:
                    raise VgmError(f"cannot read {self.source(name)}: {e}") from None
                if len(buf) != k * row:
                    raise VgmError(f"{self.source(name)} is truncated: its header promises {shape[0]} rows")
                yield np.frombuffer(buf, dtype=dtype).reshape(k, *shape[1:])

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _labels(af: ArrayFile, name: str, n: int) -> np.ndarray | None:
    if name not in af.names:
        return None
    y = af.read(name)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != n or (len(y) and y.min() < 0):
        raise VgmError(f"{af.source(name)}: labels must be {n} non-negative integers (one per image), "
                       f"got {y.dtype} of shape {y.shape}")
    return y.astype(np.int64)


def load_arrays(path: Path, binarize: str, val_fraction: float, test_fraction: float | None, layout: str | None,
                memory_limit: int, cache_dir: str | None) -> tuple[Splits, dict]:
    """Splits from a .npy or .npz file, and what the run folder records about it."""
    af = ArrayFile(path)
    try:
        return _load(af, binarize, val_fraction, test_fraction, layout, memory_limit, cache_dir)
    finally:
        af.close()


def _load(af: ArrayFile, binarize, val_fraction, test_fraction, layout, memory_limit, cache_dir):
    path = af.path
    if "train" in af.names or "test" in af.names:
        if not {"train", "test"} <= set(af.names):
            raise VgmError(f"{path} has a {'train' if 'train' in af.names else 'test'!r} array but no "
                           f"{'test' if 'train' in af.names else 'train'!r} one: give both, or one array 'x'")
        if test_fraction is not None:
            raise VgmError(f"--test-fraction does not apply: {path} has 'train' and 'test' arrays, which are "
                           "the splits")
        parts, label_names = ["train", "test"], ["train_labels", "test_labels"]
    elif "x" in af.names:
        parts, label_names = ["x"], ["y"]
    else:
        raise VgmError(f"{path} holds arrays {', '.join(map(repr, af.names)) or 'none'}: vgm reads 'train' and "
                       "'test' (with optional 'train_labels', 'test_labels'), or 'x' (with optional 'y')")
    lay = item = None
    for name in parts:
        shape, dtype, fortran = af.headers[name]
        check_dtype(dtype, af.source(name))
        this = image_layout(shape, layout, af.source(name))
        if lay is not None and (this != lay or item_shape(shape, this) != item):
            raise VgmError(f"{path}: 'test' images {shape} differ from 'train' images {af.headers['train'][0]}")
        lay, item = this, item_shape(shape, this)
    counts = [af.headers[n][0][0] for n in parts]
    labels = [_labels(af, ln, n) for ln, n in zip(label_names, counts)]
    if len(parts) == 2 and (labels[0] is None) != (labels[1] is None):
        raise VgmError(f"{path}: give both 'train_labels' and 'test_labels', or neither")
    float_bytes = 4 * sum(counts) * math.prod(item)
    record = {"examples": int(sum(counts)), "files": 1, "bytes": path.stat().st_size,
              "test_split": "carved" if len(parts) == 1 else "given"}
    if float_bytes > memory_limit:
        return _streamed(af, parts, lay, item, counts, labels, binarize, val_fraction, test_fraction,
                         float_bytes, memory_limit, cache_dir), record
    arrays = [as_nchw(af.read(n), lay) for n in parts]
    levels = 256 if all(on_lattice(a) for a in arrays) else 0
    if len(parts) == 1:
        test_i, train_i = carve(counts[0], test_fraction or TEST_FRACTION, SPLIT_SEED + 1, str(path), "test")
        y = labels[0]
        arrays, labels = [arrays[0][train_i], arrays[0][test_i]], [None if y is None else y[i] for i in (train_i, test_i)]
    return image_splits(arrays[0], labels[0], arrays[1], labels[1], binarize, val_fraction, str(path), levels), record


def _streamed(af: ArrayFile, parts, lay, item, counts, labels, binarize, val_fraction, test_fraction, float_bytes,
              memory_limit, cache_dir) -> Splits:
    """uint8 arrays above the memory limit, read from disk: in place when already (N, C, H, W), else cached."""
    path, too_big = af.path, (f"{af.path} ({float_bytes / 2**30:.1f} GiB as floats) is above the memory limit "
                              f"({memory_limit / 2**30:.1f} GiB)")
    if any(af.headers[n][1] != np.uint8 for n in parts):
        raise VgmError(f"{too_big}: floats must fit in memory; give uint8 0..255 images, which are read from "
                       "disk, or raise --memory-limit")
    if binarize != "none":
        raise VgmError(f"--binarize {binarize} needs the images in memory, and {too_big}: raise --memory-limit")
    in_place = af.zip is None and not af.headers["x"][2] and (lay != "NHWC" or item[0] == 1)
    if in_place:
        npy = path
    else:
        description = {"source": str(path), "files": file_fingerprints(path.parent, [path.name])[0],
                       "options": {"layout": lay, "arrays": parts}}
        croot = cache_root(cache_dir)

        def build(writer) -> dict:
            note(f"copying the images of {path} once into the cache {croot} as (N, C, H, W)")
            for name in parts:
                if af.headers[name][2]:
                    raise VgmError(f"{af.source(name)} is stored in Fortran order: save it in C order "
                                   "(np.ascontiguousarray) to stream it")
                for rows in af.chunks(name):
                    writer.write(np.ascontiguousarray(as_nchw(rows, lay)))
            return {}

        npy, _ = cached_images(croot, description, sum(counts), item, build)
    if len(parts) == 1:
        test_i, train_i = carve(counts[0], test_fraction or TEST_FRACTION, SPLIT_SEED + 1, str(path), "test")
        y = labels[0]
        return streamed_splits(npy, train_i, None if y is None else y[train_i], test_i,
                               None if y is None else y[test_i], val_fraction, str(path), item)
    n_train = counts[0]
    return streamed_splits(npy, np.arange(n_train), labels[0], n_train + np.arange(counts[1]), labels[1],
                           val_fraction, str(path), item)
