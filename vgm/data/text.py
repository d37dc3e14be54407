"""Character-level text data: one sequence per line of a UTF-8 file, or the embedded census first names.

names: the US census first-name lists shipped inside the `names` package (dist.male.first, dist.female.first;
       5,000-odd distinct names, lower-cased), no download.
text:  any UTF-8 text file, given by --data-dir FILE (or $VGM_DATA_DIR); empty lines are skipped.
A fixed 10% of the lines (by a fixed seed, the same for every run) is the test split and `val_fraction` of the
rest the validation split. The alphabet is the set of characters of all the lines, so that every split is made
of symbols the models can produce (they are distributions over the alphabet and EOS; an UNK would have
probability 0); which characters exist is all that the held-out lines add to it, not how often they occur.
Each split is a (N, longest + 1) long tensor: character ids, EOS, PAD (see vgm.sequences).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from .splits import SPLIT_SEED, Splits, data_location
from ..errors import VgmError
from ..registry import register_dataset
from .tokens import encode_text

TEST_FRACTION = 0.1


def text_splits(lines: list[str], val_fraction: float, binarize: str, source: str) -> Splits:
    """Split lines into train/val/test by a fixed seed, build the alphabet from all lines, and tokenise."""
    if binarize != "none":
        raise VgmError(f"{source}: text cannot be binarised (use --binarize none)")
    if len(lines) < 3:
        raise VgmError(f"{source}: needs at least 3 non-empty lines (one per split), found {len(lines)}")
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(lines))
    n_test = max(1, int(round(TEST_FRACTION * len(lines))))
    n_val = max(1, int(round(val_fraction * (len(lines) - n_test))))
    if n_test + n_val >= len(lines):
        raise VgmError(f"{source}: too few lines ({len(lines)}) to carve validation and test splits")
    pick = lambda idx: [lines[i] for i in idx]
    test, val, train = pick(perm[:n_test]), pick(perm[n_test:n_test + n_val]), pick(perm[n_test + n_val:])
    alphabet = "".join(sorted(set("".join(lines))))
    width = max(len(s) for s in lines) + 1
    enc = lambda part: encode_text(part, alphabet, width)
    longest = max(len(s) for s in train) + 1
    return Splits(enc(train), enc(val), enc(test),
                  meta={"likelihood": "categorical", "alphabet": alphabet, "input_dim": 1, "max_len": longest})


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 file (a BOM and Windows line ends are fine), or a one-line VgmError."""
    if path.is_dir():
        raise VgmError(f"{path} is a folder; dataset 'text' needs a UTF-8 text file (one sequence per line)")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VgmError(f"text file {path} does not exist") from None
    except OSError as e:
        raise VgmError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise VgmError(f"{path} is not UTF-8 text (invalid byte at offset {e.start})") from None
    lines = [s for s in text.splitlines() if s.strip()]
    if not lines:
        raise VgmError(f"{path} has no non-empty lines")
    return lines


@register_dataset("text", kind="tokens")
def load_text(data_dir=None, binarize="none", val_fraction=0.1) -> Splits:
    """Any UTF-8 text file, one sequence per line."""
    path = data_location(data_dir, "text", "file")
    return text_splits(read_lines(path), val_fraction, binarize, str(path))


def census_first_names() -> list[str]:
    """The distinct first names of the census lists shipped in the `names` package, lower-cased, sorted."""
    try:
        pkg = resources.files("names")
    except ModuleNotFoundError:
        raise VgmError("dataset 'names' needs the `names` package (pip install names)") from None
    out = set()
    for f in ("dist.male.first", "dist.female.first"):
        for line in (pkg / f).read_text(encoding="ascii").splitlines():
            if line.strip():
                out.add(line.split()[0].lower())
    return sorted(out)


@register_dataset("names", kind="tokens")
def load_names(data_dir=None, binarize="none", val_fraction=0.1) -> Splits:
    """US census first names (embedded, from the `names` package), character by character."""
    return text_splits(census_first_names(), val_fraction, binarize, "names")
