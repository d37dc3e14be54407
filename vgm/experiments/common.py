"""What the experiments share: which datasets to run on, in-process training, and saving matplotlib figures."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from .. import plots
from ..data import DATA_DIR_ENV, Splits
from ..data import load as load_data
from ..train import TrainConfig, fit


# One likelihood family for both models, so that their numbers compare. On the 8x8 digits: a Gaussian p(x|z) with
# σ = 0.1 (a Bernoulli on their grey levels leaves the latents nearly unused) and the matching squared error for
# the AE. On MNIST (nearly binary): the usual Bernoulli and binary cross-entropy, whose samples score far better.
VAE_KW = {"likelihood": "gaussian", "sigma": 0.1}
AE_KW = {"recon_loss": "mse"}


def vae_kw(name: str) -> dict:
    return VAE_KW if name == "digits" else {"likelihood": "bernoulli"}


def ae_kw(name: str) -> dict:
    return AE_KW if name == "digits" else {"recon_loss": "bce"}


SMALL = 5000     # training examples below which a data set gets the 8x8 digits' settings (more epochs, smaller nets)


def is_small(data: Splits) -> bool:
    """The 8x8 digits (1,293 training examples) and data of their size; MNIST (7,200) is not."""
    return len(data.train) < SMALL


def batch_size(small: bool) -> int:
    """Small batches on small data (enough steps per epoch), 128 on MNIST-sized data."""
    return 32 if small else 128


def datasets(data_dir: str | None, binarize: str = "none", data: Splits | None = None) -> list[tuple[str, Splits]]:
    """The user's data alone when given (`vgm experiment --data PATH`, named after the path); otherwise digits
    always, and MNIST as well when a folder is given (--data-dir or $VGM_DATA_DIR). The user's images get the
    MNIST settings (a Bernoulli likelihood on [0, 1], the larger networks)."""
    if data is not None:
        return [(Path(data.meta["source"]["path"]).name, data)]
    out = [("digits", load_data("digits", binarize=binarize))]
    folder = data_dir or os.environ.get(DATA_DIR_ENV)
    if folder:
        out.append(("mnist", load_data("mnist", data_dir=folder, binarize=binarize)))
    return out


PROGRESS = {"on": True}     # `vgm experiment --quiet` turns the per-model lines off


def report_progress(what: str, history: list[dict], seconds: float) -> None:
    """One line on stderr per trained model, so a long experiment shows where it is."""
    if not PROGRESS["on"] or not history:
        return
    val = history[-1]["val"]
    key = "elbo" if "elbo" in val else "loss"
    print(f"  trained {what}: {len(history)} epochs in {seconds:.1f} s, last validation {key} {val[key]:.3f}",
          file=sys.stderr, flush=True)


def train(cls, data: Splits, epochs: int, seed: int, batch_size: int = 128, lr: float = 1e-3, **config):
    """Build cls(input_shape=data.shape, **config) under `seed` and fit it on CPU; return (model, history)."""
    torch.manual_seed(seed)
    model = cls(input_shape=data.shape, **config)
    t0 = time.perf_counter()
    history = fit(model, data, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device="cpu"),
                  progress=False)
    settings = ", ".join(f"{k}={v}" for k, v in config.items() if k in ("latent_dim", "beta", "likelihood"))
    report_progress(f"{getattr(model, 'kind', '') or type(model).__name__}({settings})", history,
                    time.perf_counter() - t0)
    return model.eval(), history


def pyplot():
    """vgm.plots.pyplot in the experiments' figure style."""
    plt = plots.pyplot()
    plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "font.size": 10,
                         "figure.constrained_layout.use": True})
    return plt


def save_figure(fig, path: Path) -> str:
    """vgm.plots.save_figure, cropped to what is drawn; returns the file name."""
    return plots.save_figure(fig, path, tight=True)


def show_grid(ax, images: torch.Tensor, title: str, ncol: int | None = None) -> None:
    """Draw an image grid (vgm.plots.grid) on a matplotlib axis, without ticks."""
    from ..plots import grid
    ax.imshow(grid(images, ncol), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([]), ax.set_yticks([])
    ax.grid(False)
