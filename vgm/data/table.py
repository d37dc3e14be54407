"""A table as a dataset: a .csv (commas) or .tsv (tabs) file of numeric columns, one example per row.

Header: the first row is a header when it has a field that is not a number where the second row has one (so a
header over numeric columns is always recognised, and a header-less table that starts with a text column is not
mistaken for one); without a header, columns are named "column 1", "column 2", ...
Every value must be a finite number: a column with text, an empty field or NaN/inf is an error naming it, or, with
drop_non_numeric, is left out. Rows of another length are an error; blank lines are skipped.
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


def number(text: str) -> float | None:
    """The finite number a field holds, else None."""
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


@dataclass
class Table:
    values: np.ndarray          # (rows, columns) float64
    columns: list[str]
    dropped: list[str]


def read_table(path: Path, drop_non_numeric: bool) -> Table:
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
    numeric = lambda row: [number(x) is not None for x in row]
    header = not all(numeric(first)) and (len(rows) == 1 or any(
        not a and b for a, b in zip(numeric(first), numeric(rows[1][1]))))
    columns = [c.strip() or f"column {i + 1}" for i, c in enumerate(first)] if header else \
        [f"column {i + 1}" for i in range(len(first))]
    body = rows[1:] if header else rows
    if not body:
        raise VgmError(f"{path} has a header but no rows of data")
    width = len(columns)
    values = np.empty((len(body), width))
    bad: dict[int, tuple[int, str]] = {}          # column -> (line, field) of its first non-number
    for i, (line, row) in enumerate(body):
        if len(row) != width:
            raise VgmError(f"{path}: line {line} has {len(row)} fields, the {'header' if header else 'first row'} "
                           f"has {width}")
        for j, field in enumerate(row):
            v = number(field)
            if v is None:
                bad.setdefault(j, (line, field.strip()))
                v = math.nan
            values[i, j] = v
    if bad and not drop_non_numeric:
        j, (line, field) = min(bad.items())
        what = f"{field!r}" if field else "an empty field"
        raise VgmError(f"{path}: column {columns[j]!r} is not numeric ({what} on line {line}); "
                       "--drop-non-numeric leaves such columns out")
    keep = [j for j in range(width) if j not in bad]
    if not keep:
        raise VgmError(f"{path} has no numeric column")
    return Table(values[:, keep], [columns[j] for j in keep], [columns[j] for j in sorted(bad)])


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
               drop_non_numeric: bool) -> tuple[Splits, dict]:
    """Splits of standardised rows (float32, shape (N, D)), and what the run folder records about the table."""
    if binarize != "none":
        raise VgmError(f"--binarize applies to images, not to the table {path}")
    table = read_table(path, drop_non_numeric)
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
