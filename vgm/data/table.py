"""A table as a dataset: a .csv (commas) or .tsv (tabs) file of numeric columns, one example per row.

Header: the first row is a header when every field is a name (not empty and not a number: NaN and inf are values,
so a header-less table whose first row holds one keeps that row); without a header, columns are named
"column 1", "column 2", ...
A field that is empty or NaN is a missing value: an error naming its line and column, or, with missing="drop",
its row is left out (and the count said). A column with text is an error naming it, or, with drop_non_numeric,
is left out. Infinite values and values beyond ±1e30 (whose standardisation would overflow) are an error naming
the column. Rows of another length are an error; blank lines are skipped.
The columns are standardised, x' = (x − mean) / std, with the training split's mean and (population) standard
deviation (a constant column keeps std 1); meta["standardize"] holds them, and `unstandardize` maps model values
back to the original units. Tables are read whole into memory.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import VgmError
from .splits import SPLIT_SEED, TEST_FRACTION, Splits, carve, note


MISSING = ("", "nan")   # fields (stripped, lower-cased) that hold a missing value
LIMIT = 1e30            # |value| above it is refused: standardising or sampling such values overflows float32


def number(text: str) -> float | None:
    """The number a field holds (NaN, ±inf included), else None."""
    try:
        return float(text)
    except ValueError:
        return None


def is_missing(text: str) -> bool:
    return text.strip().lower() in MISSING


def is_name(text: str) -> bool:
    """A header field: not empty and not a number (NaN and inf are values, and so is an empty field)."""
    return not is_missing(text) and number(text) is None


@dataclass
class Table:
    values: np.ndarray          # (rows, columns) float64
    columns: list[str]
    dropped: list[str]


def read_table(path: Path, drop_non_numeric: bool, missing: str = "refuse") -> Table:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(r.line_num, row) for r in [csv.reader(f, delimiter=delimiter)] for row in r
                    if any(field.strip() for field in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VgmError(f"cannot read {path}: {e}") from None
    if not rows:
        raise VgmError(f"{path} is an empty table (no rows)")
    first = rows[0][1]
    header = all(is_name(x) for x in first)
    columns = [c.strip() or f"column {i + 1}" for i, c in enumerate(first)] if header else \
        [f"column {i + 1}" for i in range(len(first))]
    body = rows[1:] if header else rows
    if not body:
        raise VgmError(f"{path} has a header but no rows of data")
    width = len(columns)
    values = np.empty((len(body), width))
    bad: dict[int, tuple[int, str]] = {}          # column -> (line, field) of its first text field
    lines = np.array([line for line, _ in body])
    for i, (line, row) in enumerate(body):
        if len(row) != width:
            raise VgmError(f"{path}: line {line} has {len(row)} fields, the {'header' if header else 'first row'} "
                           f"has {width}")
        for j, field in enumerate(row):
            v = math.nan if is_missing(field) else number(field)
            if v is None:
                bad.setdefault(j, (line, field.strip()))
                v = math.nan
            values[i, j] = v
    if bad and not drop_non_numeric:
        j, (line, field) = min(bad.items())
        raise VgmError(f"{path}: column {columns[j]!r} is not numeric ({field!r} on line {line}); "
                       "--drop-non-numeric leaves such columns out")
    keep = [j for j in range(width) if j not in bad]
    if not keep:
        raise VgmError(f"{path} has no numeric column")
    values, columns, dropped = values[:, keep], [columns[j] for j in keep], [columns[j] for j in sorted(bad)]
    gaps = np.isnan(values)
    if gaps.any():
        i, j = np.argwhere(gaps)[0]
        if missing != "drop":
            raise VgmError(f"{path}: missing value at line {lines[i]}, column {columns[j]!r}; --missing drop "
                           "leaves out the rows that have one")
        keep_rows = ~gaps.any(1)
        if not keep_rows.any():
            raise VgmError(f"{path}: every row has a missing value (--missing drop would leave none)")
        note(f"left out {int((~keep_rows).sum())} of {len(values)} rows of {path} that have a missing value "
             "(--missing drop)")
        values, lines = values[keep_rows], lines[keep_rows]
    check_range(path, values, columns, lines)
    return Table(values, columns, dropped)


def check_range(path: Path, values: np.ndarray, columns: list[str], lines: np.ndarray) -> None:
    """Refuse infinite values and values whose standardisation would overflow (|x| > LIMIT), naming the column
    and the line."""
    for j, name in enumerate(columns):
        col = np.abs(values[:, j])
        i = int(col.argmax())
        if not np.isfinite(col[i]):
            raise VgmError(f"{path}: column {name!r} holds an infinite value ({values[i, j]:g}) at line {lines[i]}")
        if col[i] > LIMIT:
            raise VgmError(f"{path}: column {name!r} holds {values[i, j]:g} at line {lines[i]}, beyond ±{LIMIT:g}: "
                           "its standardisation would overflow; rescale the column")


@dataclass
class Standardization:
    """x' = (x − mean) / std per column; invert maps model values back to the original units."""

    columns: list[str]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, columns: list[str]) -> "Standardization":
        std = x.std(axis=0)
        return cls(list(columns), x.mean(axis=0), np.where(std > 0, std, 1.0))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def invert(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if isinstance(x, torch.Tensor):
            t = lambda a: torch.as_tensor(a, dtype=x.dtype, device=x.device)
            return x * t(self.std) + t(self.mean)
        return x * self.std + self.mean

    def to_meta(self) -> dict:
        return {"columns": list(self.columns), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_meta(cls, meta: dict) -> "Standardization":
        return cls(list(meta["columns"]), np.asarray(meta["mean"], dtype=np.float64),
                   np.asarray(meta["std"], dtype=np.float64))


def unstandardize(x: torch.Tensor | np.ndarray, standardize: dict) -> torch.Tensor | np.ndarray:
    """Model values (standardised) back in the table's units; standardize = Splits.meta["standardize"] (as kept
    in a run folder)."""
    return Standardization.from_meta(standardize).invert(x)


def load_table(path: Path, binarize: str, val_fraction: float, test_fraction: float | None,
               drop_non_numeric: bool, missing: str = "refuse") -> tuple[Splits, dict]:
    """Splits of standardised rows (float32, shape (N, D)), and what the run folder records about the table."""
    if binarize != "none":
        raise VgmError(f"--binarize applies to images, not to the table {path}")
    table = read_table(path, drop_non_numeric, missing)
    if table.dropped:
        note(f"left out the non-numeric column{'s' if len(table.dropped) > 1 else ''} "
             f"{', '.join(map(repr, table.dropped))} of {path} (--drop-non-numeric)")
    x, n = table.values, len(table.values)
    if n < 3:
        raise VgmError(f"{path}: {n} row{'s' if n != 1 else ''}, too few for training, validation and test splits")
    test_i, rest = carve(n, test_fraction or TEST_FRACTION, SPLIT_SEED + 1, str(path), "test")
    val_i, train_i = carve(len(rest), val_fraction, SPLIT_SEED, str(path), "validation")
    train, val, test = x[rest[train_i]], x[rest[val_i]], x[test_i]
    st = Standardization.fit(train, table.columns)
    t = lambda a: torch.as_tensor(st.apply(a), dtype=torch.float32)
    splits = Splits(t(train), t(val), t(test), meta={"levels": 0, "standardize": st.to_meta(),
                                                     "defaults": {"likelihood": "gaussian", "sigma": 1.0, "learn_sigma": True}})
    return splits, {"examples": n, "files": 1, "bytes": path.stat().st_size, "dropped": table.dropped,
                    "test_split": "carved"}
