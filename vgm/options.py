"""argparse pieces shared by every command: one-line usage errors, and one --flag per config dataclass field."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing

SKIP_FIELDS = {"input_shape"}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"vgm: error: {message} (see {self.prog} --help)\n")


def parse_tuple(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def add_config_arguments(p: argparse.ArgumentParser, config_cls, skip=SKIP_FIELDS) -> list[str]:
    """One --flag per dataclass field (default None = 'not given'); returns the field names added."""
    hints = typing.get_type_hints(config_cls)
    names = []
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        t, flag = hints[f.name], "--" + f.name.replace("_", "-")
        if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
            t = next(a for a in typing.get_args(t) if a is not type(None))
        kw = dict(dest=f.name, default=None, help=f"{f.metadata.get('help', '')} (default: {f.default})".strip())
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if t is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(t) is tuple:
            p.add_argument(flag, type=parse_tuple, metavar="N,N,...", **kw)
        elif t is float:
            p.add_argument(flag, type=finite_float, **kw)
        else:
            p.add_argument(flag, type=t, **kw)
        names.append(f.name)
    return names
