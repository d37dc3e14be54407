"""`vgm report DIR`: every experiment in DIR (each DIR/NAME/results.json) gathered into one HTML page.

The page is self-contained — figures are embedded as data URIs, the CSS is inline, there is no script and no
external resource — so it opens from disk, can be mailed or moved, and looks the same offline. It reads only the
fields that `vgm.experiments.write_results` writes (name, title, claim, command, verdict, held, table, figures,
notes, and any extra JSON values), so experiments written by anyone appear without changes here.

A --quick run is a smoke test (tiny data, a few steps): its verdict says nothing about the claim, so it is
badged "quick run" and left out of the held / did-not count. A run is quick when its results say
"quick": true, or, lacking that field, when its command line has --quick (vgm.experiments.command_line).
"""
from __future__ import annotations

import base64
import html
import json
import math
import shlex
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..checkpoint import atomic_write
from ..errors import VgmError
from ..registry import register_command

# the cards' order first; any other experiment follows, alphabetically
ORDER = ("ae-vs-vae", "latent-dim", "reparam", "posterior", "elbo-gap", "generate")
STANDARD = {"name", "title", "claim", "command", "verdict", "held", "table", "figures", "notes", "quick"}

CSS = """
:root { --fg: #1d232b; --muted: #5d6875; --bg: #f6f7f9; --card: #fff; --line: #e3e7ec; --accent: #2f5fd0;
        --ok: #17803d; --ok-bg: #e5f5ea; --bad: #b42318; --bad-bg: #fdecea; --na: #596270; --na-bg: #eef0f3;
        --code: #f0f2f5; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.55;
       font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #17202c; color: #fff; padding: 2.2rem 1.5rem 1.8rem; }
header .inner, main { max-width: 1180px; margin: 0 auto; }
header h1 { margin: 0 0 .3rem; font-size: 1.75rem; font-weight: 650; letter-spacing: -.01em; }
header p { margin: 0; color: #b9c3d0; }
main { padding: 1.5rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 1.4rem 1.6rem;
        margin: 0 0 1.6rem; box-shadow: 0 1px 2px rgba(20, 30, 45, .04); }
h2 { margin: 0 0 .6rem; font-size: 1.35rem; display: flex; align-items: center; gap: .6rem; flex-wrap: wrap; }
h2 a.anchor { color: inherit; text-decoration: none; }
h3 { font-size: .95rem; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); margin: 1.4rem 0 .5rem; }
.name { font: 500 .8rem ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: var(--muted);
        background: var(--code); padding: .1rem .45rem; border-radius: 4px; }
.badge { display: inline-block; font-size: .75rem; font-weight: 650; padding: .15rem .55rem; border-radius: 999px;
         white-space: nowrap; }
.badge.ok { color: var(--ok); background: var(--ok-bg); } .badge.bad { color: var(--bad); background: var(--bad-bg); }
.badge.na, .badge.quick { color: var(--na); background: var(--na-bg); }
.badge.quick { border: 1px dashed var(--na); }
blockquote.claim { margin: .4rem 0 1rem; padding: .7rem 1rem; border-left: 4px solid var(--accent);
                   background: #f3f6fd; border-radius: 0 6px 6px 0; font-size: 1.05rem; }
blockquote.claim::before { content: "On the card"; display: block; font-size: .7rem; text-transform: uppercase;
                           letter-spacing: .06em; color: var(--accent); font-weight: 650; margin-bottom: .2rem; }
.verdict { padding: .75rem 1rem; border-radius: 6px; border: 1px solid var(--line); background: #fafbfc; }
.verdict.ok { border-color: #b7e0c3; background: var(--ok-bg); } .verdict.bad { border-color: #f3c1bb; background: var(--bad-bg); }
.verdict strong { margin-right: .35rem; }
figure { margin: 1rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
figcaption { font-size: .8rem; color: var(--muted); margin-top: .3rem; }
.missing { color: var(--bad); font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .3rem 0 1rem; min-width: 50%; }
th, td { padding: .35rem .7rem; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: #f3f5f8; font-weight: 600; position: sticky; top: 0; }
td.text, th.text { text-align: left; white-space: normal; }
tbody tr:hover { background: #f8fafc; }
pre { background: #17202c; color: #e6edf3; padding: .7rem 1rem; border-radius: 6px; overflow-x: auto; margin: .4rem 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85rem; }
.notes { color: var(--muted); font-size: .9rem; }
details { margin-top: .8rem; } summary { cursor: pointer; color: var(--accent); }
nav table { width: 100%; } nav td { white-space: normal; text-align: left; vertical-align: top; }
nav a { color: var(--accent); text-decoration: none; font-weight: 600; } nav a:hover { text-decoration: underline; }
footer { color: var(--muted); font-size: .8rem; text-align: center; padding: 0 0 2rem; }
"""


def find_results(folder: Path) -> list[dict]:
    """Every results.json directly in `folder` or one level down, in the cards' order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VgmError(f"report: {folder} is not a folder")
    paths = sorted({*folder.glob("*/results.json"), *folder.glob("results.json")})
    if not paths:
        raise VgmError(f"report: no results.json in {folder} or its subfolders (run `vgm experiment NAME --out {folder}`)")
    results = []
    for p in paths:
        try:
            res = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VgmError(f"report: cannot read {p}: {e}") from None
        if not isinstance(res, dict):
            raise VgmError(f"report: {p} does not hold a JSON object")
        res.setdefault("name", p.parent.name)
        res["_dir"] = p.parent
        results.append(res)
    rank = lambda r: (ORDER.index(r["name"]) if r["name"] in ORDER else len(ORDER), str(r["name"]))
    return sorted(results, key=rank)


def fmt(v) -> str:
    """A table cell: 4 significant digits, scientific notation for the very large and small, '—' for none."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.3e}" if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3) else f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def table_groups(rows: list) -> list[tuple[str, list[dict]]]:
    """Rows with a 'part' field are shown as one table per part; columns empty in a table are dropped."""
    rows = [r for r in rows if isinstance(r, dict)]
    if rows and all("part" in r for r in rows):
        parts = list(dict.fromkeys(str(r["part"]) for r in rows))
        return [(p, [{k: v for k, v in r.items() if k != "part"} for r in rows if str(r["part"]) == p]) for p in parts]
    return [("", rows)] if rows else []


def render_table(rows: list[dict]) -> str:
    cols = [c for c in dict.fromkeys(k for r in rows for k in r) if any(r.get(c) is not None for r in rows)]
    text = {c for c in cols if any(isinstance(r.get(c), str) for r in rows)}
    cls = lambda c: ' class="text"' if c in text else ""
    head = "".join(f"<th{cls(c)}>{html.escape(str(c).replace('_', ' '))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td{cls(c)}>{html.escape(fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def embed(path: Path) -> str | None:
    """The image at `path` as a data URI (PNG, JPEG, GIF or SVG), or None when it is missing or of another kind."""
    kinds = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
             ".svg": "image/svg+xml"}
    if path.suffix.lower() not in kinds or not path.is_file():
        return None
    return f"data:{kinds[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"


def is_quick(res: dict) -> bool:
    """A --quick smoke run: its "quick" field when it has one, else whether its command line has --quick."""
    if isinstance(res.get("quick"), bool):
        return res["quick"]
    command = str(res.get("command") or "")
    try:
        return "--quick" in shlex.split(command)
    except ValueError:                                  # unbalanced quotes: look at the words as they are
        return "--quick" in command.split()


def badge(res: dict) -> tuple[str, str]:
    """(CSS class, label) of an experiment's result; a quick run's verdict is shown but not as a result."""
    held = res.get("held")
    outcome = "claim held" if held is True else "claim did not hold" if held is False else "descriptive"
    if is_quick(res):
        return "quick", f"quick run · {outcome}"
    return {True: "ok", False: "bad"}.get(held, "na"), outcome


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary(results: list[dict]) -> str:
    """The header line: only full runs count as held / did not / descriptive; quick runs are counted apart."""
    full = [r.get("held") for r in results if not is_quick(r)]
    quick = len(results) - len(full)
    line = (f"{plural(len(results), 'experiment')} · {plural(full.count(True), 'claim')} held · "
            f"{full.count(False)} did not · {sum(h is None for h in full)} descriptive")
    return line + (f" · {plural(quick, 'quick run')} (smoke tests, not counted)" if quick else "")


def section(res: dict) -> str:
    name = str(res["name"])
    kind, label = badge(res)
    e = lambda k: html.escape(str(res.get(k) or ""))
    parts = [f'<section class="card" id="{html.escape(name)}">',
             f'<h2><a class="anchor" href="#{html.escape(name)}">{e("title") or html.escape(name)}</a>'
             f'<span class="name">{html.escape(name)}</span><span class="badge {kind}">{label}</span></h2>']
    if res.get("claim"):
        parts.append(f'<blockquote class="claim">{e("claim")}</blockquote>')
    if res.get("verdict"):
        head = "Verdict of a quick run (a smoke test, not evidence)" if kind == "quick" else "Verdict"
        parts.append(f'<div class="verdict {kind}"><strong>{head}</strong>{e("verdict")}</div>')
    figs = [f for f in res.get("figures") or [] if isinstance(f, str)]
    if figs:
        parts.append("<h3>Figures</h3>")
    for f in figs:
        uri = embed(res["_dir"] / f)
        if uri is None:
            parts.append(f'<p class="missing">figure {html.escape(f)} is missing from {html.escape(str(res["_dir"]))}</p>')
        else:
            parts.append(f'<figure><img src="{uri}" alt="{html.escape(name)}: {html.escape(f)}">'
                         f"<figcaption>{html.escape(f)}</figcaption></figure>")
    groups = table_groups(res.get("table") or [])
    if groups:
        parts.append("<h3>Numbers</h3>")
    for title, rows in groups:
        if title:
            parts.append(f"<p><strong>{html.escape(title)}</strong></p>")
        parts.append(render_table(rows))
    if res.get("command"):
        parts.append(f'<h3>Reproduce</h3><pre><code>{e("command")}</code></pre>')
    if res.get("notes"):
        parts.append(f'<p class="notes">{e("notes")}</p>')
    extra = {k: v for k, v in res.items() if k not in STANDARD and not k.startswith("_")}
    if extra:
        rows = "".join(f"<tr><td class=\"text\">{html.escape(k)}</td><td class=\"text\"><code>"
                       f"{html.escape(fmt(v))}</code></td></tr>" for k, v in extra.items())
        parts.append(f"<details><summary>More results ({len(extra)})</summary><div class=\"scroll\"><table>"
                     f"<tbody>{rows}</tbody></table></div></details>")
    parts.append("</section>")
    return "\n".join(parts)


def render(results: list[dict], title: str = "vgm: the cards' claims, measured") -> str:
    toc = "".join(
        f'<tr><td><a href="#{html.escape(str(r["name"]))}">{html.escape(str(r.get("title") or r["name"]))}</a></td>'
        f'<td>{html.escape(str(r.get("claim") or ""))}</td>'
        f'<td><span class="badge {badge(r)[0]}">{badge(r)[1]}</span></td></tr>'
        for r in results)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
</head>
<body>
<header><div class="inner"><h1>{html.escape(title)}</h1><p>{summary(results)}</p></div></header>
<main>
<nav class="card"><h3 style="margin-top:0">Contents</h3><div class="scroll"><table>
<thead><tr><th class="text">Experiment</th><th class="text">Claim</th><th class="text">Result</th></tr></thead>
<tbody>{toc}</tbody></table></div></nav>
{"".join(section(r) for r in results)}
</main>
<footer>Generated by vgm {__version__} on {stamp}. Each section's command reproduces its numbers.</footer>
</body>
</html>
"""


def write_report(folder: Path, out: Path | None = None) -> Path:
    results = find_results(folder)
    out = Path(out) if out is not None else Path(folder) / "report.html"
    if out.is_dir():
        raise VgmError(f"report: --out {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise VgmError(f"report: the folder of {out} does not exist")
    atomic_write(out, render(results).encode())
    out.chmod(0o644)          # a page to share (atomic_write's temporary file is private)
    return out


@register_command("report")
def cmd_report(argv: list[str]) -> int:
    from ..options import Parser, seed

    p = Parser(prog="vgm report",
                                description="gather every experiment in DIR (DIR/NAME/results.json) into one HTML page")
    p.add_argument("dir", type=Path, help="the --out folder of `vgm experiment`")
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default: DIR/report.html)")
    p.add_argument("--seed", type=seed, default=0, help="accepted for uniformity; the report draws nothing at random (default: 0)")
    a = p.parse_args(argv)
    path = write_report(a.dir, a.out)
    print(f"wrote {path}")
    return 0
