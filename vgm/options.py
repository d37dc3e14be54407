"""argparse pieces shared by every command: one-line usage errors, and one --flag per config dataclass field."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing

SKIP_FIELDS = {"input_shape"}


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already names it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is not None and action.default is not False and action.default != argparse.SUPPRESS
                and action.option_strings and "default" not in text):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, no abbreviated options (`--data` is never taken for `--data-dir`),
    and every default shown in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"vgm: error: {message} (see {self.prog} --help)\n")


SEED_MAX = 2 ** 63 - 1


def seed(text: str) -> int:
    """A --seed value: an integer in [0, 2**63 - 1], the range torch.manual_seed takes."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63 - 1, got {text}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


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
