"""`vgm interpolate RUN_DIR`: walk the latent space between two examples of a model with one latent code per example.

Image models (ae, vae, betavae, tcvae): examples --i and --j of --split; their posterior means z_a, z_b are
joined by the straight line and by the spherical path (slerp); each row of OUT shows the real input a, the
decoded points (the ends are the reconstructions of a and b), and the real input b. A model of 2-D points
draws both paths in the data plane, over the split.
seqvae: the two sequences are given as text (--a, --b; text models) or picked from --split by index (--i, --j);
the points of the straight line are decoded greedily and shown between the two real sequences (text: printed
and written to OUT.txt as well). vrnn (a latent per step) and flows (no latent code apart from the data) are
refused.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..checkpoint import load
from ..data.tokens import encode_known, to_text
from ..errors import VgmError
from ..models.sequences import SequenceModel, is_row_image, row_images, series_figure, trim, write_text
from ..plots import save_figure
from ..registry import register_command
from ..train import resolve_device

SLERP_MIN_SIN = 1e-6      # below this sin Ω the two codes are (anti)parallel and the great circle is not defined


def lerp(za: torch.Tensor, zb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(k, d): (1 − t) z_a + t z_b for each t."""
    return (1 - t)[:, None] * za + t[:, None] * zb


def slerp(za: torch.Tensor, zb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(k, d): the spherical interpolation of Shoemake (1985), as White (2016) applies it to latent codes:
    sin((1 − t)Ω)/sin Ω · z_a + sin(tΩ)/sin Ω · z_b, Ω the angle between z_a and z_b. Codes of one norm stay at
    that norm (where a Gaussian prior's mass lies), where the straight line cuts inside the shell. For parallel
    or opposite codes (sin Ω ≈ 0) or a zero code, the straight line."""
    norms = za.norm() * zb.norm()
    if norms == 0:
        return lerp(za, zb, t)
    omega = torch.arccos(torch.clamp(za @ zb / norms, -1.0, 1.0))
    s = torch.sin(omega)
    if s < SLERP_MIN_SIN:
        return lerp(za, zb, t)
    return (torch.sin((1 - t) * omega) / s)[:, None] * za + (torch.sin(t * omega) / s)[:, None] * zb


@torch.no_grad()
def image_paths(model, xa: torch.Tensor, xb: torch.Tensor, steps: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """For each path (linear, spherical): (steps + 2, *example) = real a, the decoded means of `steps` points
    from z_a to z_b (ends included: the reconstructions), real b; and (z_a, z_b), the posterior means."""
    z = model.encode(torch.stack([xa, xb])).mean
    t = torch.linspace(0, 1, steps, device=z.device)
    rows = {name: torch.cat([xa[None], model.decode(path(z[0], z[1], t)).mean, xb[None]])
            for name, path in (("linear", lerp), ("spherical", slerp))}
    return rows, z


def image_strip(path: Path, rows: dict[str, torch.Tensor], heads: list[str], title: str) -> None:
    """Rows of images (k, C, H, W) under column headings, each row named at its left, as one PNG."""
    from ..plots import grid, pyplot
    plt = pyplot()
    names = list(rows)
    k, (_, h, w) = len(heads), next(iter(rows.values())).shape[1:]
    pic = grid(torch.cat([rows[n] for n in names]).detach().float().cpu(), ncol=k)
    fig, ax = plt.subplots(figsize=(0.75 * k + 1.2, 0.75 * len(names) + 0.8), layout="constrained")
    ax.imshow(pic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([1 + w / 2 + q * (w + 1) for q in range(k)], heads, fontsize=7, rotation=45)
    ax.set_yticks([1 + h / 2 + r * (h + 1) for r in range(len(names))], names, fontsize=8)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def points_figure(path: Path, data: torch.Tensor, rows: dict[str, torch.Tensor], title: str) -> None:
    """2-D points: the split (grey), each path's decoded points joined in order, the real a and b (black)."""
    from ..plots import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    d = data.detach().float().cpu()
    ax.scatter(d[:, 0], d[:, 1], s=3, color="0.8", label="data")
    for color, (name, r) in zip(("C0", "C1"), rows.items()):
        p = r[1:-1].detach().float().cpu()
        ax.plot(p[:, 0], p[:, 1], "o-", ms=3, lw=1, color=color, label=f"{name} path (decoded)")
    ends = next(iter(rows.values())).detach().float().cpu()[[0, -1]]
    ax.scatter(ends[:, 0], ends[:, 1], s=40, marker="x", color="k", label="a and b (data)", zorder=3)
    for (px, py), name in zip(ends.tolist(), "ab"):
        ax.annotate(name, (px, py), xytext=(4, 4), textcoords="offset points")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def check_kind(model, run_dir: Path) -> None:
    """One line for a model without one latent code per example."""
    if isinstance(model, SequenceModel) and not hasattr(model, "interpolate"):
        raise VgmError(f"{run_dir} holds a {model.kind!r} model, which has a latent per step and no single latent "
                       "code per sequence to interpolate (use a seqvae run)")
    if not hasattr(model, "encode"):
        from ..registry import MODELS
        coded = sorted(k for k, c in MODELS.items()
                       if hasattr(c, "encode") and (not issubclass(c, SequenceModel) or hasattr(c, "interpolate")))
        raise VgmError(f"{run_dir} holds a {model.kind!r} flow, which has no latent code besides the data "
                       "themselves (its z = f(x) has one value per data value); interpolate a model with an "
                       f"encoder: {', '.join(coded)}")


def pick(data: torch.Tensor, index: int, split: str, flag: str) -> torch.Tensor:
    if not 0 <= index < len(data):
        raise VgmError(f"--{flag} {index} is out of range: the {split} split has {len(data)} examples")
    return data[index:index + 1]


@register_command("interpolate")
def cmd_interpolate(argv: list[str]) -> int:
    from ..options import Parser, positive_int, seed
    from ..run import checked_split, run_data
    p = Parser(prog="vgm interpolate", description="decode the points between two examples' latent codes "
                                                   "(images: straight and spherical paths; seqvae: text or curves)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--a", default=None, help="first sequence, as text (seqvae text models; default: --i)")
    p.add_argument("--b", default=None, help="second sequence, as text (seqvae text models; default: --j)")
    p.add_argument("--i", type=int, default=0, help="index of the first example in --split (if --a is not given)")
    p.add_argument("--j", type=int, default=1, help="index of the second example in --split (if --b is not given)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--steps", type=positive_int, default=8, help="decoded points on each path, ends included")
    p.add_argument("--out", type=Path, default=None, help="PNG file (default: RUN_DIR/interpolation.png)")
    p.add_argument("--data-dir", default=None, help="where the run's data now are, if moved")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    if a.steps < 2:
        raise VgmError("--steps must be >= 2 (the two ends)")
    model = load(a.run_dir, resolve_device(a.device))
    check_kind(model, a.run_dir)
    torch.manual_seed(a.seed)
    out = a.out or a.run_dir / "interpolation.png"
    data = None
    if a.a is None or a.b is None:
        _, splits = run_data(a.run_dir, a.data_dir)
        data = checked_split(model, splits, a.split)
        if getattr(model.config, "alphabet", "") != splits.meta.get("alphabet", ""):
            raise VgmError(f"the data's alphabet {splits.meta.get('alphabet', '')!r} is not the model's "
                           f"{model.config.alphabet!r}: they are not the data it was trained on")
    if isinstance(model, SequenceModel):
        interpolate_sequences(model, a, data, out)
    else:
        interpolate_images(model, a, data, out)
    text = isinstance(model, SequenceModel) and model.config.likelihood == "categorical"
    print(f"wrote {out}" + (f" and {out.with_suffix('.txt')}" if text and out.suffix.lower() != ".txt" else ""))
    return 0


def interpolate_images(model, a, data: torch.Tensor, out: Path) -> None:
    """Both paths between examples --i and --j: an image strip, or a plot of 2-D points."""
    if a.a is not None or a.b is not None:
        raise VgmError(f"--a and --b take text (seqvae text models); pick {model.kind} examples with --i and --j")
    shape = tuple(data.shape[1:])
    if len(shape) != 3 and shape != (2,):
        raise VgmError(f"interpolations are drawn for images and 2-D points; this model's examples have shape {shape}")
    dev = model.device
    xa, xb = pick(data, a.i, a.split, "i")[0].to(dev), pick(data, a.j, a.split, "j")[0].to(dev)
    rows, (za, zb) = image_paths(model, xa, xb, a.steps)
    angle = math.degrees(math.acos(max(-1.0, min(1.0, float(za @ zb / (za.norm() * zb.norm()).clamp(min=1e-12))))))
    names = f"{a.split}[{a.i}] and {a.split}[{a.j}]"
    print(f"a = {a.split}[{a.i}], b = {a.split}[{a.j}]: |z_a| {za.norm():.3f}, |z_b| {zb.norm():.3f}, "
          f"angle {angle:.1f}°")
    title = f"{model.kind}: {names}\n{a.steps} decoded points on the straight and spherical paths"
    if len(shape) == 3:
        heads = ["a (data)", *[f"t={t:.2f}" for t in torch.linspace(0, 1, a.steps).tolist()], "b (data)"]
        image_strip(out, rows, heads, title)
    else:
        points_figure(out, data, rows, title)


@torch.no_grad()
def interpolate_sequences(model, a, data: torch.Tensor | None, out: Path) -> None:
    """seqvae: the straight line between the two sequences, decoded greedily, between the real sequences."""
    c = model.config
    text = c.likelihood == "categorical"
    ends, sources = [], []
    for given, idx, flag, index_flag in ((a.a, a.i, "a", "i"), (a.b, a.j, "b", "j")):
        if given is not None:
            if not text:
                raise VgmError(f"--{flag} takes text, but this model is for real-valued sequences; use --{index_flag}")
            if not given:
                raise VgmError(f"--{flag} is empty")
            try:
                tokens, used = encode_known(given, c.alphabet)
            except ValueError as e:
                raise VgmError(f"--{flag} {given!r}: {e}") from None
            ends.append(tokens)
            sources.append(f"--{flag} {given!r}" + (", folded to lower case" if used != given else ""))
        else:
            ends.append(trim(pick(data, idx, a.split, index_flag)))
            sources.append(f"picked from the {a.split} split: sequence {idx} (--{index_flag})")
    dev = model.device
    path = model.interpolate(ends[0].to(dev), ends[1].to(dev), a.steps)
    ts = torch.linspace(0, 1, a.steps).tolist()
    title = (f"seqvae: {a.steps} points on the straight line between the codes of a and b, decoded "
             + ("greedily" if text else "(the means)"))
    if text:
        shown = [("a", to_text(ends[0], c.alphabet)[0]), *[(f"t={t:.2f}", s) for t, s in zip(ts, to_text(path.cpu(), c.alphabet))],
                 ("b", to_text(ends[1], c.alphabet)[0])]
        width = max(len(s) for _, s in shown)
        lines = [f"{label:<6}  {s:<{width}}" for label, s in shown]
        lines[0] += f"  ({sources[0]})"
        lines[-1] += f"  ({sources[1]})"
        lines = [line.rstrip() for line in lines]
        write_text(out, lines, title, width=max(4.0, 0.09 * max(map(len, lines))))
        return
    print(f"a: {sources[0]}; b: {sources[1]}")
    if is_row_image(path):
        heads = ["a (data)", *[f"t={t:.2f}" for t in ts], "b (data)"]
        image_strip(out, {"linear": torch.cat([row_images(e) for e in (ends[0], path, ends[1])])}, heads, title)
        return
    panels = [("a (data)", [(ends[0][0], "k-", "")]), *[(f"t={t:.2f}", [(s, "-", "")]) for t, s in zip(ts, path)],
              ("b (data)", [(ends[1][0], "k-", "")])]
    series_figure(out, panels, title + f"\na: {sources[0]}; b: {sources[1]}")
