"""The decoded-image cache: images decoded once into a uint8 (N, C, H, W) .npy file and streamed from there.

An entry is a folder <cache>/<key>/ holding images.npy and info.json. The key hashes what the images were decoded
from (each source file's relative path, size, modification time, status-change time and inode) and how (image size,
crop, channels, ...), so a changed folder is decoded again and an unchanged one never is. The ctime and inode are
what an edit cannot keep: cp -p, rsync -t or a restore from backup set the old size and mtime back, but writing a
file (or renaming another over it) sets its ctime to now, which no call can set back. (A chmod or touch does too,
and costs one decoding.) A content hash would read every byte at every run, where this is one stat per file.

Entries are built under a temporary name (.<key>.partial-<host>-<pid>) and renamed when complete, so an interrupted
build leaves nothing that could be mistaken for a finished one; a newer entry for the same source and options
replaces the older one. An entry that does not check out (info.json unreadable, images.npy missing, of the wrong
shape or truncated) is built again, with a note. The partial folders of builds that were killed are removed by the
next run on the same host: those whose process is gone, and those not written for STALE_AFTER seconds (their pid
reused by another process, or a build on another host). Only what vgm itself writes is ever deleted: images.npy
and info.json in folders named as entries or partials are.

The cache folder: the cache_dir option, else $VGM_CACHE_DIR, else $XDG_CACHE_HOME/vgm, else ~/.cache/vgm. If it is
not writable, a temporary folder is used for this run (and removed when it ends), with a note saying so.
"""
from __future__ import annotations

import atexit
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from ..errors import VgmError
from .splits import note

CACHE_ENV = "VGM_CACHE_DIR"
FORMAT = 2                      # bump when the decoding changes, so old entries are not reused (2: crop, then resize)
ENTRY_FILES = ("images.npy", "info.json")
ENTRY = re.compile(r"[0-9a-f]{32}")
PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)")
STALE_AFTER = 24 * 3600         # seconds without a write after which any partial build is taken as abandoned


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
    """(hash of each file's relative path, size, mtime, ctime (ns) and inode; total bytes): what the cache key
    takes from a folder, hashed as it goes so that no per-file list is kept."""
    h, total = hashlib.sha256(), 0
    for rel in files:
        st = os.stat(os.path.join(root, rel))
        h.update(f"{rel.replace(os.sep, '/')}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n"
                 .encode())
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


def host_id() -> str:
    """8 hex digits naming this machine in partial folders: a pid is only tested on the host that owns it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _npy_problem(path: Path, n: int, item_shape: tuple[int, ...]) -> str | None:
    """Why images.npy is not the uint8 (n, *item_shape) array a finished build wrote (None: it is)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            major, _ = fmt.read_magic(f)
            shape, fortran, dtype = (fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0)(f)
            size, expected = os.fstat(f.fileno()).st_size, f.tell() + n * int(np.prod(item_shape))
    except FileNotFoundError:
        return "images.npy is missing"
    except (OSError, ValueError) as e:
        return f"images.npy is not a .npy file ({e})"
    if dtype != np.uint8 or fortran or tuple(shape) != (n, *item_shape):
        return f"images.npy holds {dtype} {tuple(shape)}, not uint8 {(n, *item_shape)}"
    if size != expected:
        return f"images.npy has {size:,} bytes, not {expected:,} (truncated?)"
    return None


def _read_info(entry: Path) -> dict | None:
    try:
        info = json.loads((entry / "info.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _entry_problem(entry: Path, description: dict, n: int, item_shape: tuple[int, ...],
                   valid: Callable[[dict], bool]) -> str | None:
    """Why the existing entry cannot be used (None: it can)."""
    info = _read_info(entry)
    if info is None:
        return "its info.json is missing or not a JSON object"
    if (info.get("source"), info.get("options")) != (description["source"], description["options"]) or \
            not valid(info):
        return "its info.json does not describe these images"
    return _npy_problem(entry / "images.npy", n, item_shape)


def _remove(folder: Path) -> bool:
    """Delete the files vgm writes in an entry or partial folder, then the folder if that left it empty."""
    for name in ENTRY_FILES:
        try:
            (folder / name).unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
    try:
        folder.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _abandoned(match: re.Match, folder: Path, host: str, now: float) -> bool:
    """A partial whose build has ended: its process gone (this host only), or nothing written for STALE_AFTER."""
    try:
        last = max([folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.iterdir()])
    except OSError:
        return False                        # removed or renamed meanwhile (its build just finished)
    if now - last > STALE_AFTER:
        return True
    pid = int(match["pid"])
    if match["host"] != host or os.name != "posix" or pid == os.getpid():
        return False                        # (os.kill on Windows would terminate the process)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:                         # EPERM: alive, another user's
        pass
    return False


def remove_abandoned_partials(root: Path) -> None:
    """Remove the partial folders of builds that ended before renaming them (a kill, a crash), with one note."""
    host, now, removed, freed = host_id(), time.time(), 0, 0
    for folder in root.iterdir():
        match = PARTIAL.fullmatch(folder.name)
        if match and folder.is_dir() and _abandoned(match, folder, host, now):
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            if _remove(folder):
                removed, freed = removed + 1, freed + size
    if removed:
        note(f"removed {removed} unfinished cache build{'s' if removed > 1 else ''} of ended processes from "
             f"{root} ({freed / 2**20:.1f} MiB)")


def cached_images(root: Path, description: dict, n: int, item_shape: tuple[int, ...],
                  build: Callable[[RowWriter], dict], valid: Callable[[dict], bool] = lambda info: True,
                  ) -> tuple[Path, dict]:
    """(images.npy, info) of the entry for `description` ({"source": ..., "options": ..., "files": ...}),
    building it once with build(writer) -> info (what the build wants to remember, JSON); valid(info) says
    whether a stored info has what the caller reads from it."""
    key = cache_key(description)
    entry = root / key
    remove_abandoned_partials(root)
    if entry.exists():
        problem = _entry_problem(entry, description, n, item_shape, valid)
        if problem is None:
            return entry / "images.npy", _read_info(entry)
        note(f"the cache entry {entry} is damaged ({problem}): decoding it again")
        if not _remove(entry):
            raise VgmError(f"the damaged cache entry {entry} holds files vgm did not write: move them out, or "
                           "pass --cache-dir elsewhere")
    partial = root / f".{key}.partial-{host_id()}-{os.getpid()}"
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
            if _entry_problem(entry, description, n, item_shape, valid) is not None:
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        space = e.errno in (errno.ENOSPC, errno.EDQUOT)
        raise VgmError(f"cannot write the image cache in {root}: {e.strerror or e} ("
                       f"{'free some space, or ' if space else ''}pass --cache-dir elsewhere)") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _remove_older(root, key, description)
    return entry / "images.npy", _read_info(entry) or info


def _remove_older(root: Path, key: str, description: dict) -> None:
    """Delete entries for the same source and options but other files: that source has changed since."""
    for other in root.iterdir():
        if other.name == key or not ENTRY.fullmatch(other.name) or not other.is_dir():
            continue
        info = _read_info(other)
        if info and info.get("source") == description["source"] and info.get("options") == description["options"]:
            _remove(other)
