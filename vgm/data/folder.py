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
antialiased bicubic filter, after cutting the centred square (crop "center": Pillow's crop(), whole pixels, half a
pixel up and left of centre when the sides differ by an odd number) or stretching (crop "none").
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
    """The images of a folder in their fixed order (train/ files first when there are splits). Paths are strings
    relative to root (a 100,000-image folder costs ~10 MB of them, where Path objects took 36 MB)."""

    root: Path
    files: list[str]
    labels: np.ndarray | None      # per file, or None without class sub-folders
    classes: list[str]
    n_train: int | None            # files[:n_train] are train/; None: no train/ and test/ sub-folders

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.files[i])


def _images_under(root: Path, sub: str = "") -> list[str]:
    """Image files under root/sub, as paths relative to root, sorted by their parts; hidden entries skipped."""
    found, start = [], len(str(root)) + 1
    for here, dirs, files in os.walk(os.path.join(root, sub) if sub else root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = here[start:]
        found += [os.path.join(rel, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found, key=lambda r: r.replace(os.sep, "\0"))     # = by parts: NUL sorts before any character


def _folder_names(files: list[str], depth: int) -> list[str] | None:
    """Each file's folder `depth` levels below the root (its class), or None when some file lies higher up."""
    names = []
    for f in files:
        parts = f.split(os.sep, depth + 1)
        if len(parts) < depth + 2:
            return None
        names.append(parts[depth])
    return names


def _labels(names: list[str], classes: list[str]) -> np.ndarray:
    position = {c: i for i, c in enumerate(classes)}
    return np.array([position[n] for n in names], dtype=np.int64)


def list_images(root: Path) -> ImageList:
    kinds = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        files = _images_under(root)
        if not files:
            raise VgmError(f"{root} holds no images ({kinds} files, searched recursively)")
        names = _folder_names(files, 0)
        classes = sorted(set(names)) if names is not None else []
        return ImageList(root, files, None if names is None else _labels(names, classes), classes, None)
    train, test = _images_under(root, "train"), _images_under(root, "test")
    for name, files in (("train", train), ("test", test)):
        if not files:
            raise VgmError(f"{root / name} holds no images ({kinds} files, searched recursively)")
    outside = [f for entry in sorted(os.listdir(root)) if entry not in ("train", "test") and not entry.startswith(".")
               for f in (_images_under(root, entry) if (root / entry).is_dir() else
                         [entry] if entry.lower().endswith(IMAGE_SUFFIXES) else [])]
    if outside:
        raise VgmError(f"{root} has train/ and test/ sub-folders, which are the splits, and also images outside "
                       f"them (e.g. {outside[0]}): move or remove those (the validation split is carved from train/)")
    train_names, test_names = _folder_names(train, 1), _folder_names(test, 1)
    labels, classes = None, []
    if train_names is not None and test_names is not None:
        classes = sorted(set(train_names))
        extra = sorted(set(test_names) - set(classes))
        if extra:
            raise VgmError(f"{root / 'test'} has a class {extra[0]!r} that {root / 'train'} has not")
        labels = _labels(train_names + test_names, classes)
    return ImageList(root, train + test, labels, classes, len(train))


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


def decode(rel: str, d: Decoding) -> np.ndarray:
    """Image root/rel as uint8 (C, H, W); raises Mismatch, or any Pillow error for an unreadable file."""
    from PIL import Image

    with Image.open(os.path.join(d.root, rel)) as img:
        img.load()                          # the first frame, fully: a truncated file fails here
        nat = natural_channels(img.mode)
        if not d.convert and nat != d.channels:
            raise Mismatch(f"{rel} has {nat} channel{'s' if nat > 1 else ''} ({img.mode}) but "
                           f"{d.first} has {d.channels}: pass --channels 1 or 3 to convert every image")
        if not d.resize and img.size != d.size:
            raise Mismatch(f"{rel} is {img.size[0]}x{img.size[1]} pixels but {d.first} is "
                           f"{d.size[0]}x{d.size[1]}: pass --image-size S (with --crop center or none) to "
                           "resize every image to S x S")
        out = _eight_bit(img).convert("L" if d.channels == 1 else "RGB")
    if d.resize and out.size != d.size:
        w, h = out.size
        if d.crop == "center":              # crop first: resize(box=) would filter pixels from outside the box
            m = min(w, h)
            left, top = (w - m) // 2, (h - m) // 2
            out = out.crop((left, top, left + m, top + m))
        out = out.resize(d.size, Image.Resampling.BICUBIC)
    a = np.asarray(out, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def try_decode(rel: str, d: Decoding) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """(image, None), or (None, ("bad" | "mismatch", message)): an unreadable file vs one that does not fit."""
    try:
        return decode(rel, d), None
    except Mismatch as e:
        return None, ("mismatch", str(e))
    except Exception as e:                  # Pillow raises OSError, SyntaxError, ValueError, ... for bad files
        return None, ("bad", f"{rel} is not a readable image ({_one_line(e)})")


class _DecodeBatches(Dataset):
    """Item b = files [b·DECODE_BATCH, (b+1)·DECODE_BATCH) decoded: (uint8 rows, [(position, kind, message)])."""

    def __init__(self, files: list[str], d: Decoding, item_shape: tuple[int, ...]):
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


def decode_all(files: list[str], d: Decoding, item_shape: tuple[int, ...], write: Callable[[np.ndarray], None],
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


def first_image(listing: ImageList, skip_bad: bool) -> tuple[str, tuple[int, int], int]:
    """(file, (width, height), channels) of the first readable image: the reference the others must match."""
    from PIL import Image

    for i, f in enumerate(listing.files):
        try:
            with Image.open(listing.path(i)) as img:
                img.load()
                return f, img.size, natural_channels(img.mode)
        except Mismatch as e:
            raise VgmError(f"{listing.root / f}: {e}") from None
        except Exception as e:
            if not skip_bad:
                raise VgmError(f"{f} is not a readable image ({_one_line(e)}); --skip-bad skips such files") from None
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
                 image_size is not None, channels is not None, crop, first)
    n, item_shape = len(listing.files), (d.channels, d.size[1], d.size[0])
    float_bytes = 4 * n * math.prod(item_shape)
    fingerprint, total_bytes = file_fingerprints(root, listing.files)
    stream = float_bytes > memory_limit
    if stream:
        if binarize != "none":
            raise VgmError(f"--binarize {binarize} needs the images in memory, and {root} ({n:,} images, "
                           f"{float_bytes / 2**30:.1f} GiB as floats) is above the memory limit "
                           f"({memory_limit / 2**30:.1f} GiB): raise --memory-limit, or train on grey levels")
        description = {"source": str(root), "files": fingerprint,
                       "options": {"image_size": image_size, "crop": crop, "channels": d.channels,
                                   "skip_bad": skip_bad}}
        croot = cache_root(cache_dir)

        def build(writer) -> dict:
            note(f"decoding {n:,} images of {root} once into the cache {croot} "
                 f"({n * math.prod(item_shape) / 2**30:.2f} GiB)")
            skipped = decode_all(listing.files, d, item_shape, writer.write, skip_bad, workers)
            return {"skipped": [p for p, _ in skipped], "messages": [m for _, m in skipped[:3]]}

        def valid(info: dict) -> bool:      # what is read back below: skipped positions and their messages
            skipped, messages = info.get("skipped"), info.get("messages")
            return (isinstance(skipped, list) and all(type(p) is int and 0 <= p < n for p in skipped)
                    and isinstance(messages, list) and all(isinstance(m, str) for m in messages))

        path, info = cached_images(croot, description, n, item_shape, build, valid)
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
    record = {"examples": int(len(good)), "files": n, "bytes": total_bytes,
              "skipped": len(skipped), "test_split": "carved" if listing.n_train is None else "given"}
    return splits, record
