"""Image splits read from disk on demand: data larger than memory, with RAM bounded whatever their size.

A StreamedImages is a view of some rows of a uint8 (N, C, H, W) .npy file; indexing it reads just those rows
(plain reads, no memory map, so the pages read never count toward this process's resident memory) and gives float32
values in [0, 1], the same numbers the in-memory path holds (k / 255 in float32). `loader` iterates a split in
batches, optionally shuffled by a torch.Generator, with torch.utils.data.DataLoader workers decoding ahead.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

HAVE_PREADV = hasattr(os, "preadv")           # Linux, BSD; elsewhere seek + readinto on the process's own file
M_MMAP_THRESHOLD = -3                         # glibc's mallopt parameter


def bounded_heap(_worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: allocations of 256 KB and more are served by mmap and returned when freed.

    A worker allocates a new batch at every step; glibc otherwise raises its mmap threshold to that size and serves
    the batches from the heap, which the churn fragments: worker RSS reached 380 to 900 MB in two epochs of 64x64
    RGB batches, against 210 MB with this. Only in worker processes; a no-op where malloc is not glibc's."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 256 * 1024)
    except (OSError, AttributeError):
        pass


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, byte offset of the data) of a .npy file; maps it without reading the data."""
    m = np.load(path, mmap_mode="r", allow_pickle=False)
    layout = tuple(m.shape), m.dtype, bool(m.flags.f_contiguous and not m.flags.c_contiguous), int(m.offset)
    del m                                       # unmapped at once (no other reference)
    return layout


class StreamedImages:
    """Rows `rows` of a uint8 (N, C, H, W) .npy file; x[i] -> float32 (C, H, W), x[batch] -> (n, C, H, W) in [0, 1].

    Safe to share with forked or spawned DataLoader workers: each process opens the file for itself.
    """

    dtype = torch.float32

    def __init__(self, path: str | Path, rows: np.ndarray | None = None, item_shape: tuple[int, ...] | None = None):
        """path: a C-ordered uint8 .npy file of N rows; item_shape (C, H, W) when its own shape is not (N, C, H, W)
        but holds the same bytes per row (e.g. (N, H, W) grey images)."""
        self._handle, self._pid = None, None
        self.path = Path(path)
        shape, dtype, fortran, self.offset = npy_layout(self.path)
        item = tuple(item_shape or shape[1:])
        if dtype != np.uint8 or fortran or len(item) != 3 or int(np.prod(shape[1:])) != int(np.prod(item)):
            raise ValueError(f"{path}: expected a C-ordered uint8 array of rows {item}, got {dtype} {shape}")
        self.item_shape, self.row_bytes = item, int(np.prod(item))
        self.rows = np.arange(shape[0], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= shape[0]):
            raise ValueError(f"{path}: rows outside 0..{shape[0] - 1}")

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.item_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"StreamedImages({str(self.path)!r}, shape={self.shape})"

    def subset(self, idx) -> "StreamedImages":
        """The rows idx (any numpy index) of this split, still on disk."""
        out = StreamedImages.__new__(StreamedImages)
        out.__dict__.update(self.__dict__, rows=self.rows[idx], _handle=None, _pid=None)
        return out

    def _file(self):
        if self._pid != os.getpid():           # a file of its own in each process (workers, after fork)
            self._handle, self._pid = open(self.path, "rb", buffering=0), os.getpid()
        return self._handle

    def read(self, idx) -> np.ndarray:
        """The uint8 rows for idx (int, slice, list, array or tensor of positions), shape (n, C, H, W)."""
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        rows = np.atleast_1d(self.rows[idx])
        out = np.empty((len(rows), *self.item_shape), dtype=np.uint8)
        f, flat = self._file(), out.reshape(len(rows), -1)
        for i, r in enumerate(rows.tolist()):
            view, at = memoryview(flat[i]), self.offset + r * self.row_bytes
            while len(view):                    # short reads: never on a regular file in practice
                n = os.preadv(f.fileno(), [view], at) if HAVE_PREADV else (f.seek(at), f.readinto(view))[1]
                if not n:
                    raise OSError(f"{self.path} is truncated (row {r})")
                view, at = view[n:], at + n
        return out

    def __getitem__(self, idx) -> torch.Tensor:
        x = torch.from_numpy(self.read(idx)).float().div_(255)
        return x[0] if np.ndim(self.rows[idx.numpy() if isinstance(idx, torch.Tensor) else idx]) == 0 else x

    def to(self, device) -> "StreamedImages":
        """Stays on disk: batches go to the device as they are read (see `loader`)."""
        return self

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def __del__(self):
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()


class _BatchReader(Dataset):
    """One item = one whole batch of rows (read in one call): float32 in [0, 1], or uint8 when the batch is to be
    converted on the device. Converting in the worker keeps the main process from allocating a new float batch at
    every step (glibc's heap, fragmented by that churn, grew by ~6 MB a batch in one epoch of 64x64 RGB images);
    the worker's result arrives in shared memory, which is unmapped when the batch is dropped."""

    def __init__(self, images: StreamedImages, as_float: bool):
        self.images, self.as_float = images, as_float

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        u8 = torch.from_numpy(self.images.read(idx))
        return u8.float().div_(255) if self.as_float else u8


class _Order:
    """Batches of positions for one epoch: a fresh permutation from `generator` at each pass, else in order."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool):
        self.n, self.batch_size, self.generator, self.drop_last = n, batch_size, generator, drop_last

    def __iter__(self) -> Iterator[torch.Tensor]:
        perm = torch.randperm(self.n, generator=self.generator) if self.generator is not None else torch.arange(self.n)
        for i in range(0, self.n, self.batch_size):
            b = perm[i:i + self.batch_size]
            if len(b) == self.batch_size or not self.drop_last:
                yield b

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (rest > 0 and not self.drop_last)


class Loader:
    """Iterates a split in batches of float32 in [0, 1]; each pass over it is one epoch (reshuffled when shuffling).

    Streamed splits are read by `workers` DataLoader processes (0: in this process) a few batches ahead; for an
    accelerator `device` they travel as uint8 (a quarter of the bytes) and are converted there. Tensors in memory
    are sliced.
    """

    def __init__(self, split: StreamedImages | torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
                 workers: int = 0, pin_memory: bool = False, drop_last: bool = False,
                 device: str | torch.device | None = None):
        if batch_size < 1 or workers < 0:
            raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
        self.split, self.device = split, None if device is None else torch.device(device)
        self.order = _Order(len(split), batch_size, generator, drop_last)
        self.on_device = self.device is not None and self.device.type != "cpu"
        self.data = None
        if isinstance(split, StreamedImages) and workers > 0:
            self.data = DataLoader(_BatchReader(split, as_float=not self.on_device), batch_size=None,
                                   sampler=self.order, num_workers=workers, pin_memory=pin_memory,
                                   persistent_workers=True, prefetch_factor=4, worker_init_fn=bounded_heap)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.data is None:
            for b in self.order:
                x = self.split[b]
                yield x if self.device is None else x.to(self.device, non_blocking=True)
            return
        for x in self.data:
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
            yield x.float().div_(255) if self.on_device else x


def loader(split: StreamedImages | torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
           workers: int = 0, pin_memory: bool = False, drop_last: bool = False,
           device: str | torch.device | None = None) -> Loader:
    """Batches of `split` (streamed or in memory), shuffled each epoch by `generator` when given; see Loader."""
    return Loader(split, batch_size, generator, workers, pin_memory, drop_last, device)
