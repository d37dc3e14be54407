"""Latent traversals: sweep one latent dimension at a time over [−span, span], the others held at an image's code.

Rows are sorted by each dimension's KL(q(z_j|x) ‖ p(z_j)), averaged over data, and the KL is written beside
its row: dimensions with KL ≈ 0 carry nothing (their rows do not change), the others show what they encode.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.distributions import Normal, kl_divergence

from ..checkpoint import atomic_write
from ..plots import grid


@torch.no_grad()
def kl_per_dim(model, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """Mean over x of KL(q(z_j|x) ‖ N(0, 1)) for each latent dimension j (nats)."""
    total = 0
    for i in range(0, len(x), batch_size):
        q = model.encode(x[i:i + batch_size]).base_dist
        total = total + kl_divergence(q, Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))).sum(0)
    return (total / len(x)).cpu().numpy()


@torch.no_grad()
def traversal(model, x0: torch.Tensor, steps: int = 10, span: float = 3.0) -> torch.Tensor:
    """(d, steps, *image) decoded means: row j sweeps z_j over linspace(−span, span), the rest at μ(x0)."""
    mu = model.encode(x0[None]).mean[0]
    d = mu.shape[0]
    z = mu.repeat(d, steps, 1)                                         # (d, steps, d)
    values = torch.linspace(-span, span, steps, device=mu.device)
    z[torch.arange(d), :, torch.arange(d)] = values
    return model.decode(z).mean


def save_traversals(path: str | Path, model, x0: torch.Tensor, data: torch.Tensor, steps: int = 10,
                    span: float = 3.0, title: str = "") -> np.ndarray:
    """Write the traversal grid of x0 (rows sorted by KL, largest first, KL beside each row); return the KLs."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = kl_per_dim(model, data)
    order = np.argsort(-kl)
    imgs = traversal(model, x0, steps, span)[torch.as_tensor(order.copy())]
    d, h = len(order), imgs.shape[-2]
    pic = grid(torch.cat([x0[None].expand(d, *x0.shape)[:, None], imgs], 1).flatten(0, 1), ncol=steps + 1)
    fig, ax = plt.subplots(figsize=(0.55 * (steps + 1) + 1.6, 0.55 * d + 0.6), layout="tight")
    ax.imshow(pic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for row, j in enumerate(order):
        ax.text(pic.shape[1] + 2, 1 + row * (h + 1) + h / 2, f"z{j}  KL {kl[j]:.2f}", va="center", fontsize=8)
    ax.set_xticks([1 + h / 2 + (k + 1) * (h + 1) for k in (0, steps - 1)], [f"{-span:g}", f"{span:g}"])
    ax.set_yticks([])
    ax.set_title(title or f"latent traversals over [−{span:g}, {span:g}] (first column: the image)", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return kl
