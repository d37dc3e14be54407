"""Data given as a path: its kind recognised from the path, its options checked, and the record a run folder keeps.

Kinds: a folder (of images, folder.py), .npy / .npz (arrays.py), .csv / .tsv (table.py). Options a kind does not
take are a one-line error. Splits.meta["source"] = {"path", "kind", "options", "examples", "files", "bytes",
"skipped"} records where the data came from and how they were read, so `reload` finds them again (or says that
they moved, and how to point at them) and can tell that they changed.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import VgmError
from .splits import TEST_FRACTION, Splits

SUFFIXES = {".npy": "npy", ".npz": "npz", ".csv": "csv", ".tsv": "tsv"}
MEMORY_LIMIT = 2 * 2**30        # bytes of float32 examples held in memory; above it images are streamed
CROPS = ("center", "none")
MISSING_CHOICES = ("refuse", "drop")


@dataclass
class PathOptions:
    """How data given as a path are read (field = option name; None / False = not given). The defaults shown are
    what applies when an option is not given."""

    image_size: int | None = field(default=None, metadata={
        "help": "image folders: resize every image to S x S pixels (antialiased)"})
    crop: str | None = field(default="center", metadata={
        "choices": CROPS, "help": "with --image-size: cut the centred square first, or stretch the whole image"})
    channels: int | None = field(default=None, metadata={
        "choices": (1, 3), "help": "image folders: convert every image to 1 (grey) or 3 (RGB) channels"})
    layout: str | None = field(default=None, metadata={
        "choices": ("NCHW", "NHWC"), "help": ".npy/.npz: the axis order of 4-D image arrays, where ambiguous"})
    test_fraction: float | None = field(default=TEST_FRACTION, metadata={
        "help": "share of the examples held out as the test split where the data have none (fixed seed)"})
    drop_non_numeric: bool = field(default=False, metadata={
        "help": "tables: leave out columns that are not all numbers, instead of stopping"})
    missing: str | None = field(default="refuse", metadata={
        "choices": MISSING_CHOICES, "help": "tables: a missing value (an empty field, NaN) stops loading (refuse), "
                                            "or the rows that have one are left out (drop)"})
    skip_bad: bool = field(default=False, metadata={
        "help": "image folders: skip unreadable image files (and say how many), instead of stopping"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "where images above the memory limit are decoded once (default: $VGM_CACHE_DIR, else ~/.cache/vgm)"})
    memory_limit: str | None = field(default=f"{MEMORY_LIMIT // 2**30}G", metadata={
        "help": "image data larger than this as float32 (bytes, or with K, M, G) are streamed from a disk cache"})


OPTION_NAMES = tuple(f.name for f in fields(PathOptions))
APPLIES = {                      # the options each kind takes
    "folder": {"image_size", "crop", "channels", "test_fraction", "skip_bad", "cache_dir", "memory_limit"},
    "npy": {"layout", "test_fraction", "cache_dir", "memory_limit"},
    "npz": {"layout", "test_fraction", "cache_dir", "memory_limit"},
    "csv": {"test_fraction", "drop_non_numeric", "missing"},
    "tsv": {"test_fraction", "drop_non_numeric", "missing"},
}
KIND_WORDS = {"folder": "an image folder", "npy": "a .npy file", "npz": "a .npz file", "csv": "a .csv table",
              "tsv": "a .tsv table"}
RECORDED = ("image_size", "crop", "channels", "layout", "test_fraction", "drop_non_numeric", "missing", "skip_bad")


def looks_like_path(name: str) -> bool:
    """A --data value meant as a path (not a dataset name): it exists, or has a folder part or a known suffix."""
    return (os.sep in name or "/" in name or name.startswith((".", "~")) or Path(name).suffix.lower() in SUFFIXES
            or Path(name).expanduser().exists())


def recognise(path: Path) -> str:
    """The kind of data at path: folder, npy, npz, csv or tsv."""
    if not path.exists():
        raise VgmError(f"data path {path} does not exist")
    if path.is_dir():
        return "folder"
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise VgmError(f"{path}: cannot tell what data it holds from its name; give an image folder, or a "
                       ".npy, .npz, .csv or .tsv file")
    return kind


def parse_size(text: str | int | float) -> int:
    """Bytes from 2147483648, "2G", "512M", "1.5g", "64K" (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kKmMgGtT]?)[iI]?[bB]?\s*", str(text))
    if not m:
        raise VgmError(f"--memory-limit: expected bytes, or a number with K, M, G or T, got {text!r}")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def load_path(path: str | Path, binarize: str = "none", val_fraction: float = 0.1, workers: int = 0,
              **options) -> Splits:
    """The data at `path` as Splits; `options` are PathOptions fields (None/False: not given), `workers` the
    processes that decode image files (0: this one).

    meta gets "source" (see the module doc), "levels", and by kind "classes" (folders with class sub-folders),
    "standardize" (tables) and "defaults" (model options that suit the data unless the user says otherwise).
    """
    unknown = set(options) - set(OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)} (known: {', '.join(OPTION_NAMES)})")
    path = Path(path).expanduser().absolute()
    kind = recognise(path)
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    for k in given:
        if k not in APPLIES[kind]:
            raise VgmError(f"--{k.replace('_', '-')} does not apply to {KIND_WORDS[kind]} ({path})")
    o = {**{f.name: f.default for f in fields(PathOptions)}, **given}
    check_options(o, given, workers)
    limit = parse_size(o["memory_limit"])
    tf = given.get("test_fraction")
    if kind == "folder":
        from .folder import load_folder
        splits, record = load_folder(path, binarize, val_fraction, tf, o["image_size"], o["crop"], o["channels"],
                                     o["skip_bad"], o["cache_dir"], limit, workers)
    elif kind in ("npy", "npz"):
        from .arrays import load_arrays
        splits, record = load_arrays(path, binarize, val_fraction, tf, o["layout"], limit, o["cache_dir"])
    else:
        from .table import load_table
        splits, record = load_table(path, binarize, val_fraction, tf, o["drop_non_numeric"], o["missing"])
    recorded = {k: o[k] for k in RECORDED if k in APPLIES[kind]}
    if kind == "folder" and not o["image_size"]:
        recorded.pop("crop")
    if record.pop("test_split") == "given":
        recorded.pop("test_fraction")
    splits.meta["source"] = {"path": str(path), "kind": kind, "options": recorded, **record}
    splits.name, splits.binarize = str(path), binarize
    return splits


def check_options(o: dict, given: dict, workers: int) -> None:
    if o["image_size"] is not None and not 1 <= o["image_size"] <= 65536:
        raise VgmError(f"--image-size must be between 1 and 65536 pixels, got {o['image_size']}")
    if "crop" in given and o["image_size"] is None:
        raise VgmError("--crop applies with --image-size")
    if o["crop"] not in CROPS:
        raise VgmError(f"--crop must be center or none, got {o['crop']!r}")
    if o["channels"] not in (None, 1, 3):
        raise VgmError(f"--channels must be 1 or 3, got {o['channels']}")
    if o["layout"] not in (None, "NCHW", "NHWC"):
        raise VgmError(f"--layout must be NCHW or NHWC, got {o['layout']!r}")
    if o["missing"] not in MISSING_CHOICES:
        raise VgmError(f"--missing must be {' or '.join(MISSING_CHOICES)}, got {o['missing']!r}")
    tf = o["test_fraction"]
    if not (isinstance(tf, (int, float)) and math.isfinite(tf) and 0 < tf < 1):
        raise VgmError(f"--test-fraction must be between 0 and 1, got {tf}")
    if workers < 0:
        raise VgmError(f"--workers must be >= 0, got {workers}")


def reload(source: dict, binarize: str = "none", val_fraction: float = 0.1, path: str | Path | None = None,
           workers: int = 0, cache_dir: str | None = None, memory_limit: str | int | None = None) -> Splits:
    """The data a run was trained on, from its record meta["source"]: read again from the recorded path (or from
    `path`, where they were moved) with the recorded options; VgmError when they are gone or have changed."""
    where = Path(path).expanduser().absolute() if path else Path(source["path"])
    if not where.exists():
        raise VgmError(f"the run's data were read from {where}, which no longer exists: point at their new "
                       "place with --data-dir PATH" if path is None else f"data path {where} does not exist")
    options = {k: v for k, v in source["options"].items() if v is not None and v is not False}
    if source["kind"] in ("folder", "npy", "npz"):
        options.update(cache_dir=cache_dir, memory_limit=memory_limit)
    splits = load_path(where, binarize, val_fraction, workers, **options)
    now, then = splits.meta["source"], source
    if now["kind"] != then["kind"] or (now["examples"], now["bytes"]) != (then["examples"], then["bytes"]):
        raise VgmError(f"{where} is not the data this run was trained on: {now['examples']:,} examples in "
                       f"{now['bytes']:,} bytes, where the run recorded {then['examples']:,} in "
                       f"{then['bytes']:,} bytes ({then['path']})")
    return splits
