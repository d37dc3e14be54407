"""Experiments: each classic claim of the field, reproduced by `vgm experiment NAME`.

An experiment is a function run(out: Path, quick: bool, seed: int, data_dir: str | None) registered with
@register_experiment("name"); one registered with data="images" also takes user_data=Splits (the user's --data PATH),
and then runs on those data alone. It writes its PNG figures into `out` and ends with `write_results`, which
writes results.json (read by `vgm report`) and results.md (the table, for humans).
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import shlex
import sys
from pathlib import Path

from ..checkpoint import atomic_write, write_json


def load_all() -> None:
    """Import every experiment module of this package, so that each registers itself."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def command_line(name: str, quick: bool, seed: int, data_dir: str | None, data=None) -> str:
    """The command that reproduces a result; data: the Splits of --data PATH (their source's path and options)."""
    parts = ["vgm", "experiment", name, "--seed", str(seed)] + (["--quick"] if quick else [])
    if data_dir:
        parts += ["--data-dir", str(data_dir)]
    if data is not None:
        source = data.meta["source"]
        parts += ["--data", source["path"]]
        for k, v in source.get("options", {}).items():
            if v is True:
                parts.append(f"--{k.replace('_', '-')}")
            elif v is not None and v is not False:
                parts += [f"--{k.replace('_', '-')}", str(v)]
    return shlex.join(parts)


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(out: Path, *, name: str, title: str, claim: str, command: str, table: list[dict],
                  figures: list[str], verdict: str, held: bool | None, notes: str = "", **extra) -> dict:
    """Write results.json and results.md for one experiment and return the JSON dict.

    title: short heading; claim: the claim as stated on the cards; table: rows of plain numbers/strings;
    figures: PNG file names inside `out`; verdict: one line computed from the numbers; held: whether the
    claim held (None when the experiment states no direction); extra: any further JSON-able results.
    """
    out = Path(out)
    for f in figures:
        if not (out / f).is_file():
            raise FileNotFoundError(f"experiment {name}: figure {f} was not written")
    res = {"name": name, "title": title, "claim": claim, "command": command, "verdict": verdict,
           "held": held, "table": table, "figures": figures, "notes": notes, **extra}
    write_json(out / "results.json", json.loads(json.dumps(res, default=float)))
    md = [f"# {title}", "", f"> {claim}", "", f"**Verdict:** {verdict}", "", markdown_table(table)]
    md += [f"![{f}]({f})" for f in figures]
    md += ["", f"Reproduce: `{command}`", ""] + ([notes, ""] if notes else [])
    atomic_write(out / "results.md", "\n".join(md).encode())
    print(f"{title}: {verdict}", file=sys.stderr)
    return res
