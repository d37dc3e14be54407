"""A folder of images as a dataset: PNG, JPEG, BMP, GIF, WebP or TIFF files, searched recursively (Pillow).

Order: files sorted by their path inside the folder (hidden files and folders skipped), so every run sees the same
order. Labels follow torchvision's ImageFolder: when every image lies in a sub-folder, the first-level sub-folder
names are the classes (sorted; label = position). Splits: when the folder has both train/ and test/ sub-folders,
those are the splits (classes from train/; images elsewhere are an error); otherwise a fixed share (test_fraction,
seeded, the same for every run) is the test split. The validation split is carved from the training one as for
every dataset.

Decoding: the first frame of each file; alpha dropped; 16-bit grey scaled to 8 bits; without `channels` and
`image_size` every image must have the first one's channel count and size (the error says which option fixes it);
`channels` converts (1: ITU-R 601 luma, Pillow's "L"; 3: RGB), `image_size` S resizes to S x S with Pillow's
antialiased bicubic filter, after cutting the centred square (crop "center") or stretching (crop "none").
Images are decoded to uint8 either into memory or, above the memory limit, once into the cache (cache.py).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import VgmError
from .cache import cache_root, cached_images, file_fingerprints
from .splits import SPLIT_SEED, TEST_FRACTION, Splits, carve, image_splits, note, streamed_splits
from .streamed import bounded_heap

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")
COLOUR_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
DECODE_BATCH = 64


@dataclass
class ImageList:
    """The images of a folder in their fixed order (train/ files first when there are splits)."""

    root: Path
    files: list[Path]
    labels: np.ndarray | None      # per file, or None without class sub-folders
    classes: list[str]
    n_train: int | None            # files[:n_train] are train/; None: no train/ and test/ sub-folders


def _images_under(folder: Path) -> list[Path]:
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(here) / f for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _classes(folder: Path, files: list[Path]) -> list[str] | None:
    """The first-level sub-folder names when every image lies in one, else None."""
    parts = [f.relative_to(folder).parts for f in files]
    if not parts or any(len(p) < 2 for p in parts):
        return None
    return sorted({p[0] for p in parts})


def _labels(groups: list[tuple[Path, list[Path]]], classes: list[str]) -> np.ndarray:
    """Each file's class position: its first-level sub-folder under the folder of its group."""
    position = {c: i for i, c in enumerate(classes)}
    return np.array([position[f.relative_to(d).parts[0]] for d, files in groups for f in files], dtype=np.int64)


def list_images(root: Path) -> ImageList:
    kinds = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    train_dir, test_dir = root / "train", root / "test"
    if not (train_dir.is_dir() and test_dir.is_dir()):
        files = _images_under(root)
        if not files:
            raise VgmError(f"{root} holds no images ({kinds} files, searched recursively)")
        classes = _classes(root, files)
        labels = None if classes is None else _labels([(root, files)], classes)
        return ImageList(root, files, labels, classes or [], None)
    train, test = _images_under(train_dir), _images_under(test_dir)
    for name, files in (("train", train), ("test", test)):
        if not files:
            raise VgmError(f"{root / name} holds no images ({kinds} files, searched recursively)")
    outside = [f for entry in sorted(root.iterdir()) if entry.name not in ("train", "test")
               and not entry.name.startswith(".")
               for f in (_images_under(entry) if entry.is_dir() else [entry] if entry.name.lower().endswith(
                   IMAGE_SUFFIXES) else [])]
    if outside:
        raise VgmError(f"{root} has train/ and test/ sub-folders, which are the splits, and also images outside "
                       f"them (e.g. {outside[0].relative_to(root)}): move or remove those "
                       "(the validation split is carved from train/)")
    classes, test_classes = _classes(train_dir, train), _classes(test_dir, test)
    labels = None
    if classes is not None and test_classes is not None:
        extra = sorted(set(test_classes) - set(classes))
        if extra:
            raise VgmError(f"{test_dir} has a class {extra[0]!r} that {train_dir} has not")
        labels = _labels([(train_dir, train), (test_dir, test)], classes)
    return ImageList(root, train + test, labels, classes if labels is not None else [], len(train))


# ---------------------------------------------------------------------------------------------------- decoding

class Mismatch(Exception):
    """A readable image that does not fit the others (size, channels) or that vgm cannot take (its mode)."""


@dataclass(frozen=True)
class Decoding:
    """How every image is decoded: to `channels` channels and size (width, height) = `size`."""

    root: str
    channels: int
    size: tuple[int, int]
    resize: bool                    # image_size given: resize to `size`; else each image must already have it
    convert: bool                   # channels given: convert; else each image must have `channels` channels
    crop: str
    first: str                      # the first image, named in mismatch messages


def natural_channels(mode: str) -> int:
    if mode in GREY_MODES:
        return 1
    if mode in COLOUR_MODES:
        return 3
    raise Mismatch(f"images of mode {mode!r} are not supported (save them as 8-bit grey or RGB)")


def _eight_bit(img):
    """16-bit (and 32-bit integer) grey as 8-bit 'L', scaled by 255/65535; other modes unchanged."""
    from PIL import Image

    if not img.mode.startswith("I"):
        return img
    a = np.asarray(img).astype(np.int64)
    if a.min() < 0 or a.max() > 65535:
        raise Mismatch(f"mode {img.mode!r} values outside 0..65535 (save the images as 8 or 16 bits)")
    return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")


def _rel(path: Path, d: Decoding) -> str:
    try:
        return str(path.relative_to(d.root))
    except ValueError:
        return str(path)


def decode(path: Path, d: Decoding) -> np.ndarray:
    """One image as uint8 (C, H, W); raises Mismatch, or any Pillow error for an unreadable file."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()                          # the first frame, fully: a truncated file fails here
        nat = natural_channels(img.mode)
        if not d.convert and nat != d.channels:
            raise Mismatch(f"{_rel(path, d)} has {nat} channel{'s' if nat > 1 else ''} ({img.mode}) but "
                           f"{d.first} has {d.channels}: pass --channels 1 or 3 to convert every image")
        if not d.resize and img.size != d.size:
            raise Mismatch(f"{_rel(path, d)} is {img.size[0]}x{img.size[1]} pixels but {d.first} is "
                           f"{d.size[0]}x{d.size[1]}: pass --image-size S (with --crop center or none) to "
                           "resize every image to S x S")
        out = _eight_bit(img).convert("L" if d.channels == 1 else "RGB")
    if d.resize and out.size != d.size:
        w, h = out.size
        box = (0, 0, w, h)
        if d.crop == "center":
            m = min(w, h)
            box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)
        out = out.resize(d.size, Image.Resampling.BICUBIC, box=box)
    a = np.asarray(out, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def try_decode(path: Path, d: Decoding) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """(image, None), or (None, ("bad" | "mismatch", message)): an unreadable file vs one that does not fit."""
    try:
        return decode(path, d), None
    except Mismatch as e:
        return None, ("mismatch", str(e))
    except Exception as e:                  # Pillow raises OSError, SyntaxError, ValueError, ... for bad files
        return None, ("bad", f"{_rel(path, d)} is not a readable image ({_one_line(e)})")


class _DecodeBatches(Dataset):
    """Item b = files [b·DECODE_BATCH, (b+1)·DECODE_BATCH) decoded: (uint8 rows, [(position, kind, message)])."""

    def __init__(self, files: list[Path], d: Decoding, item_shape: tuple[int, ...]):
        self.files, self.d, self.item_shape = files, d, item_shape

    def __len__(self) -> int:
        return math.ceil(len(self.files) / DECODE_BATCH)

    def __getitem__(self, b: int):
        start = b * DECODE_BATCH
        chunk = self.files[start:start + DECODE_BATCH]
        rows = np.zeros((len(chunk), *self.item_shape), dtype=np.uint8)
        problems = []
        for i, f in enumerate(chunk):
            img, problem = try_decode(f, self.d)
            if problem is None:
                rows[i] = img
            else:
                problems.append((start + i, *problem))
        return torch.from_numpy(rows), problems


def decode_all(files: list[Path], d: Decoding, item_shape: tuple[int, ...], write: Callable[[np.ndarray], None],
               skip_bad: bool, workers: int) -> list[tuple[int, str]]:
    """Decode every file in order into write(rows) (a bad file's row: zeros); returns the skipped (position,
    message) when skip_bad, else the first bad file is an error. Images that do not fit are always an error."""
    batches = _DecodeBatches(files, d, item_shape)
    it = (DataLoader(batches, batch_size=None, num_workers=workers, worker_init_fn=bounded_heap) if workers > 0
          else (batches[b] for b in range(len(batches))))
    skipped = []
    for rows, problems in it:
        for pos, kind, message in problems:
            if kind == "mismatch" or not skip_bad:
                raise VgmError(message + ("" if kind == "mismatch" else "; --skip-bad skips such files"))
            skipped.append((pos, message))
        write(rows.numpy())
    return skipped


def first_image(listing: ImageList, skip_bad: bool) -> tuple[Path, tuple[int, int], int]:
    """(file, (width, height), channels) of the first readable image: the reference the others must match."""
    from PIL import Image

    for f in listing.files:
        try:
            with Image.open(f) as img:
                img.load()
                return f, img.size, natural_channels(img.mode)
        except Mismatch as e:
            raise VgmError(f"{f}: {e}") from None
        except Exception as e:
            if not skip_bad:
                raise VgmError(f"{f.relative_to(listing.root)} is not a readable image ({_one_line(e)}); "
                               "--skip-bad skips such files") from None
    raise VgmError(f"{listing.root}: none of its {len(listing.files)} image files is readable")


# ---------------------------------------------------------------------------------------------------- loading

def load_folder(root: Path, binarize: str, val_fraction: float, test_fraction: float | None, image_size: int | None,
                crop: str, channels: int | None, skip_bad: bool, cache_dir: str | None, memory_limit: int,
                workers: int) -> tuple[Splits, dict]:
    """The images under root as Splits (in memory, or streamed from the cache above memory_limit bytes of
    float32), and what the run folder records about them (count, bytes, skipped files)."""
    listing = list_images(root)
    if listing.n_train is not None and test_fraction is not None:
        raise VgmError(f"--test-fraction does not apply: {root} has train/ and test/ sub-folders, which are "
                       "the splits")
    first, size, nat = first_image(listing, skip_bad)
    d = Decoding(str(root), channels or nat, (image_size, image_size) if image_size else size,
                 image_size is not None, channels is not None, crop, str(first.relative_to(root)))
    n, item_shape = len(listing.files), (d.channels, d.size[1], d.size[0])
    float_bytes = 4 * n * math.prod(item_shape)
    fingerprints = file_fingerprints(root, listing.files)
    stream = float_bytes > memory_limit
    if stream:
        if binarize != "none":
            raise VgmError(f"--binarize {binarize} needs the images in memory, and {root} ({n:,} images, "
                           f"{float_bytes / 2**30:.1f} GiB as floats) is above the memory limit "
                           f"({memory_limit / 2**30:.1f} GiB): raise --memory-limit, or train on grey levels")
        description = {"source": str(root), "files": fingerprints,
                       "options": {"image_size": image_size, "crop": crop, "channels": d.channels,
                                   "skip_bad": skip_bad}}
        croot = cache_root(cache_dir)

        def build(writer) -> dict:
            note(f"decoding {n:,} images of {root} once into the cache {croot} "
                 f"({n * math.prod(item_shape) / 2**30:.2f} GiB)")
            skipped = decode_all(listing.files, d, item_shape, writer.write, skip_bad, workers)
            return {"skipped": [p for p, _ in skipped], "messages": [m for _, m in skipped[:3]]}

        path, info = cached_images(croot, description, n, item_shape, build)
        skipped = list(zip(info["skipped"], info["messages"] + [""] * len(info["skipped"])))
    else:
        arr = np.empty((n, *item_shape), dtype=np.uint8)
        filled = [0]

        def write(rows: np.ndarray) -> None:
            arr[filled[0]:filled[0] + len(rows)] = rows
            filled[0] += len(rows)

        skipped = decode_all(listing.files, d, item_shape, write, skip_bad, workers)
    if skipped:
        note(f"skipped {len(skipped)} unreadable image{'s' if len(skipped) > 1 else ''} of {root} "
             f"(--skip-bad), e.g. {skipped[0][1]}")
    good = np.setdiff1d(np.arange(n), [p for p, _ in skipped])
    if listing.n_train is None:
        if len(good) < 3:
            raise VgmError(f"{root}: {len(good)} readable image(s), too few for training, validation and test")
        test_i, train_i = carve(len(good), test_fraction or TEST_FRACTION, SPLIT_SEED + 1, str(root), "test")
        train_rows, test_rows = good[train_i], good[test_i]
    else:
        train_rows, test_rows = good[good < listing.n_train], good[good >= listing.n_train]
    y = listing.labels
    ly = lambda rows: None if y is None else y[rows]
    if stream:
        splits = streamed_splits(path, train_rows, ly(train_rows), test_rows, ly(test_rows), val_fraction, str(root))
    else:
        train_x, test_x = arr[train_rows], arr[test_rows]
        del arr
        splits = image_splits(train_x, ly(train_rows), test_x, ly(test_rows), binarize, val_fraction, str(root))
    if listing.classes:
        splits.meta["classes"] = listing.classes
    record = {"examples": int(len(good)), "files": n, "bytes": int(sum(s for _, s, _ in fingerprints)),
              "skipped": len(skipped), "test_split": "carved" if listing.n_train is None else "given"}
    return splits, record
