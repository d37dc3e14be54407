"""The decoded-image cache: images decoded once into a uint8 (N, C, H, W) .npy file and streamed from there.

An entry is a folder <cache>/<key>/ holding images.npy and info.json. The key hashes what the images were decoded
from (each source file's relative path, size and modification time) and how (image size, crop, channels, ...), so a
changed folder is decoded again and an unchanged one never is. Entries are built under a temporary name and renamed
when complete, so an interrupted build leaves nothing that could be mistaken for a finished one; a newer entry for
the same source and options replaces the older one.

The cache folder: the cache_dir option, else $VGM_CACHE_DIR, else $XDG_CACHE_HOME/vgm, else ~/.cache/vgm. If it is
not writable, a temporary folder is used for this run (and removed when it ends), with a note saying so.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from ..errors import VgmError
from .splits import note

CACHE_ENV = "VGM_CACHE_DIR"
FORMAT = 1                      # bump when the decoding changes, so old entries are not reused


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vgm"


def _remove_at_exit(folder: Path) -> None:
    owner = os.getpid()          # not in forked DataLoader workers, which exit without atexit anyway
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))


def cache_root(cache_dir: str | Path | None) -> Path:
    """The cache folder, created if needed; a temporary one (with a note) when it cannot be written."""
    chosen = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()).absolute()
    try:
        chosen.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=chosen, prefix=".probe-"):
            pass
        return chosen
    except OSError as e:
        tmp = Path(tempfile.mkdtemp(prefix="vgm-cache-"))
        _remove_at_exit(tmp)
        note(f"cache folder {chosen} is not writable ({e.strerror or e}); decoding into {tmp} for this run "
             "instead (removed at exit; pass --cache-dir to keep the cache)")
        return tmp


def file_fingerprints(root: Path, files: list[str]) -> tuple[str, int]:
    """(hash of each file's relative path, size and modification time in ns; total bytes): what the cache key
    takes from a folder, hashed as it goes so that no per-file list is kept."""
    h, total = hashlib.sha256(), 0
    for rel in files:
        st = os.stat(os.path.join(root, rel))
        h.update(f"{rel.replace(os.sep, '/')}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        total += st.st_size
    return h.hexdigest(), total


def cache_key(description: dict) -> str:
    text = json.dumps({"format": FORMAT, **description}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class RowWriter:
    """Appends uint8 rows to an open .npy file whose header promises `n` rows; unwritten rows read as zeros."""

    def __init__(self, f: BinaryIO, n: int, item_shape: tuple[int, ...]):
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                "shape": (n, *item_shape)})
        self.f, self.n, self.item_shape, self.written = f, n, tuple(item_shape), 0
        self.end = f.tell() + n * int(np.prod(item_shape))

    def write(self, rows: np.ndarray) -> None:
        if rows.dtype != np.uint8 or rows.shape[1:] != self.item_shape or self.written + len(rows) > self.n:
            raise ValueError(f"rows {rows.dtype} {rows.shape} do not fit ({self.n}, {self.item_shape}) uint8")
        self.f.write(memoryview(np.ascontiguousarray(rows)).cast("B"))
        self.written += len(rows)

    def close(self) -> None:
        self.f.truncate(self.end)           # the full size even when the last rows were skipped (zeros)


def _read_info(entry: Path) -> dict | None:
    try:
        info = json.loads((entry / "info.json").read_text())
        return info if (entry / "images.npy").is_file() else None
    except (OSError, ValueError):
        return None


def cached_images(root: Path, description: dict, n: int, item_shape: tuple[int, ...],
                  build: Callable[[RowWriter], dict]) -> tuple[Path, dict]:
    """(images.npy, info) of the entry for `description` ({"source": ..., "options": ..., "files": ...}),
    building it once with build(writer) -> info (what the build wants to remember, JSON)."""
    key = cache_key(description)
    entry = root / key
    info = _read_info(entry)
    if info is not None:
        return entry / "images.npy", info
    partial = root / f".{key}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        with open(partial / "images.npy", "wb") as f:
            writer = RowWriter(f, n, item_shape)
            info = build(writer)
            writer.close()
        info = {**info, "source": description["source"], "options": description["options"]}
        (partial / "info.json").write_text(json.dumps(info))
        try:
            os.rename(partial, entry)
        except OSError:                     # another process finished the same entry first: use theirs
            if _read_info(entry) is None:
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise VgmError(f"cannot write the image cache in {root}: {e.strerror or e} (free some space, or pass "
                       "--cache-dir elsewhere)") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _remove_older(root, key, description)
    return entry / "images.npy", _read_info(entry) or info


def _remove_older(root: Path, key: str, description: dict) -> None:
    """Delete entries for the same source and options but other files: that source has changed since."""
    for other in root.iterdir():
        if other.name == key or other.name.startswith(".") or not other.is_dir():
            continue
        info = _read_info(other)
        if info and info.get("source") == description["source"] and info.get("options") == description["options"]:
            shutil.rmtree(other, ignore_errors=True)
