"""What `vgm sample` and `vgm reconstruct` write: image grids (grey or colour), scatters of 2-D points, or a CSV of
vectors; every file written atomically."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write
from .errors import VgmError


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | Path, dpi: int = 100, tight: bool = False) -> str:
    """Write a matplotlib figure as PNG, atomically (a reader never sees half a file), close it, and return the
    file's name. tight: crop the canvas to what is drawn (bbox_inches="tight")."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)
    atomic_write(path, buf.getvalue())
    return Path(path).name


def grid(images: torch.Tensor, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) values in [0, 1] -> one (rows*H, cols*W[, 3]) array with `pad` pixels between tiles."""
    x = images.detach().float().clamp(0, 1).cpu().numpy()
    n, c, h, w = x.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    out = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = x[i].transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


def save_png(path: str | Path, array: np.ndarray, scale: int = 4) -> None:
    """Save a grey or RGB array in [0, 1] as PNG, each pixel drawn as scale x scale."""
    plt = pyplot()
    big = np.kron(array, np.ones((scale, scale) + (1,) * (array.ndim - 2), dtype=array.dtype))
    buf = io.BytesIO()
    plt.imsave(buf, big, cmap="gray", vmin=0, vmax=1, format="png")
    atomic_write(path, buf.getvalue())


def save_samples(path: str | Path, images: torch.Tensor, ncol: int | None = None) -> None:
    save_png(path, grid(images, ncol))


def save_reconstructions(path: str | Path, originals: torch.Tensor, recons: torch.Tensor, ncol: int = 8) -> None:
    """Rows alternate: originals, then their reconstructions underneath (a last, shorter pair of rows is left
    blank on the right, so each reconstruction stays under its original)."""
    n = originals.shape[0]
    ncol = min(ncol, n)
    blank = torch.ones_like(originals[:1])
    rows = []
    for i in range(0, n, ncol):
        fill = [blank] * (ncol - min(ncol, n - i))
        rows += [originals[i:i + ncol], *fill, recons[i:i + ncol], *fill]
    save_png(path, grid(torch.cat(rows), ncol))


def save_points(path: str | Path, points: torch.Tensor, recons: torch.Tensor | None = None, title: str = "") -> None:
    """2-D points as a scatter; with reconstructions, each point joined to its reconstruction by a line."""
    plt = pyplot()
    p = points.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
    if recons is not None:
        r = recons.detach().float().cpu().numpy()
        for a, b in zip(p, r):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="0.7", lw=0.6, zorder=1)
        ax.scatter(r[:, 0], r[:, 1], s=6, color="C1", label="reconstruction", zorder=2)
    ax.scatter(p[:, 0], p[:, 1], s=6, color="C0", label="data" if recons is not None else None, zorder=3)
    if recons is not None:
        ax.legend(fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=120)


def save_csv(path: str | Path, columns: dict[str, torch.Tensor], names: list[str] | None = None) -> None:
    """Vectors as a CSV table, one row per example: each (N, D) tensor gives D columns, named after the data's
    own columns (`names`, e.g. a table's header) or NAME_0..NAME_{D-1}; a second tensor's columns get its name."""
    header, blocks = [], []
    for i, (name, t) in enumerate(columns.items()):
        a = t.detach().double().cpu().numpy().reshape(t.shape[0], -1)
        if names is not None and len(names) == a.shape[1]:
            header += list(names) if i == 0 else [f"{name}_{c}" for c in names]
        else:
            header += [f"{name}_{j}" for j in range(a.shape[1])]
        blocks.append(a)
    names = header
    buf = io.StringIO()
    np.savetxt(buf, np.concatenate(blocks, axis=1), delimiter=",", header=",".join(names), comments="", fmt="%.7g")
    atomic_write(path, buf.getvalue().encode())


def save_examples(path: str | Path, x: torch.Tensor, recons: torch.Tensor | None = None, title: str = "",
                  columns: list[str] | None = None) -> None:
    """Whatever shape the examples have: images (N, C, H, W) as a grid, 2-D points (N, 2) as a scatter, other
    vectors (N, D) as a CSV with the data's `columns` names (the file name decides: a .csv path always gets the
    table)."""
    path = Path(path)
    if path.suffix.lower() == ".csv" or (x.dim() == 2 and x.shape[1] != 2):
        if x.dim() != 2:
            raise VgmError(f"a CSV holds vectors; these examples have shape {tuple(x.shape[1:])} (write a .png)")
        save_csv(path, {"x": x} if recons is None else {"x": x, "reconstruction": recons}, columns)
    elif x.dim() == 2:
        save_points(path, x, recons, title)
    elif x.dim() == 4:
        save_samples(path, x) if recons is None else save_reconstructions(path, x, recons)
    else:
        raise VgmError(f"no picture for examples of shape {tuple(x.shape[1:])}")
