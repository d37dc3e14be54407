"""The 2-D picture: a flow's density as a heat map beside samples drawn from it."""
from __future__ import annotations

import numpy as np
import torch

from ..plots import pyplot, save_figure


@torch.no_grad()
def density_grid(model, lim: float, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """p(x) on an n × n grid over [−lim, lim]²; returns (density, axis)."""
    axis = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).to(model.device)
    model.eval()
    logp = torch.cat([model.log_prob(b) for b in pts.split(10_000)])
    return logp.exp().reshape(n, n).cpu().numpy(), axis.numpy()


def save_density_and_samples(path, model, samples: torch.Tensor, lim: float | None = None) -> None:
    plt = pyplot()

    s = samples.detach().cpu().numpy()
    lim = lim or float(max(4.0, np.quantile(np.abs(s), 0.995) * 1.1))
    dens, axis = density_grid(model, lim)
    fig, ax = plt.subplots(1, 2, figsize=(8, 4), layout="tight")
    ax[0].imshow(dens, origin="lower", extent=(-lim, lim, -lim, lim), cmap="magma")
    ax[0].set_title(f"{model.kind}: density p(x)")
    ax[1].scatter(s[:, 0], s[:, 1], s=2, alpha=0.5)
    ax[1].set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=f"{len(s)} samples")
    save_figure(fig, path)
