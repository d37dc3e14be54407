"""Image grids for samples and reconstructions, written atomically as PNG."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write


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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    big = np.kron(array, np.ones((scale, scale) + (1,) * (array.ndim - 2), dtype=array.dtype))
    buf = io.BytesIO()
    plt.imsave(buf, big, cmap="gray", vmin=0, vmax=1, format="png")
    atomic_write(path, buf.getvalue())


def save_samples(path: str | Path, images: torch.Tensor, ncol: int | None = None) -> None:
    save_png(path, grid(images, ncol))


def save_reconstructions(path: str | Path, originals: torch.Tensor, recons: torch.Tensor, ncol: int = 8) -> None:
    """Rows alternate: originals, then their reconstructions underneath."""
    rows = []
    for i in range(0, originals.shape[0], ncol):
        rows += [originals[i:i + ncol], recons[i:i + ncol]]
    save_png(path, grid(torch.cat(rows), ncol))
