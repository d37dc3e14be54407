"""Latent traversals: sweep one latent dimension at a time over ±R prior standard deviations, the others held at
an image's code; and `vgm traverse RUN_DIR`, which draws them for a trained image model.

Rows are sorted by each dimension's KL(q(z_j|x) ‖ p(z_j)), averaged over data, and the KL is written beside
its row: dimensions with KL ≈ 0 carry nothing (their rows do not change), the others show what they encode.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.distributions import Independent, Normal, kl_divergence

from ..checkpoint import load
from ..errors import VgmError
from ..plots import grid, pyplot, save_figure
from ..registry import register_command
from ..train import resolve_device


def factorised_normal(d) -> bool:
    """Whether d is a Normal over z with independent dimensions (Independent(Normal)): a KL and a scale per z_j."""
    return isinstance(d, Independent) and isinstance(d.base_dist, Normal)


def prior_normal(model) -> Normal:
    """The prior's per-dimension Normal (loc, scale of each z_j)."""
    if not factorised_normal(model.prior):
        raise ValueError(f"{model.kind}'s prior is a {type(model.prior).__name__}, not a factorised Normal: "
                         "it has no scale per dimension")
    return model.prior.base_dist


@torch.no_grad()
def kl_per_dim(model, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """Mean over x of KL(q(z_j|x) ‖ p(z_j)) for each latent dimension j (nats)."""
    p = prior_normal(model)
    total = 0
    for i in range(0, len(x), batch_size):
        q = model.encode(x[i:i + batch_size])
        if not factorised_normal(q):
            raise ValueError(f"{model.kind}'s posterior is a {type(q).__name__}, not a factorised Normal: "
                             "it has no KL per dimension")
        q = q.base_dist
        total = total + kl_divergence(q, Normal(p.loc.expand_as(q.loc), p.scale.expand_as(q.scale))).sum(0)
    return (total / len(x)).cpu().numpy()


def one_example(model, x0: torch.Tensor) -> torch.Tensor:
    """x0 as one example of the model's input shape: x[0] and x[:1] are both accepted."""
    shape = tuple(model.config.input_shape)
    if tuple(x0.shape) == (1, *shape):
        return x0[0]
    if tuple(x0.shape) != shape:
        raise ValueError(f"expected one example of shape {shape} (or {(1, *shape)}), got {tuple(x0.shape)}")
    return x0


@torch.no_grad()
def traversal(model, x0: torch.Tensor, steps: int = 10, span: float = 3.0) -> torch.Tensor:
    """(d, steps, *image) decoded means: row j sweeps z_j over loc_j + linspace(−span, span)·scale_j of the prior
    (±span standard deviations), the other dimensions at μ(x0)."""
    mu = model.encode(one_example(model, x0)[None]).mean[0]
    p = prior_normal(model)
    d = mu.shape[0]
    z = mu.repeat(d, steps, 1)                                         # (d, steps, d)
    values = torch.linspace(-span, span, steps, device=mu.device)
    z[torch.arange(d), :, torch.arange(d)] = p.loc.expand(d)[:, None] + values * p.scale.expand(d)[:, None]
    return model.decode(z).mean


def save_traversals(path: str | Path, model, x0: torch.Tensor, data: torch.Tensor, steps: int = 10,
                    span: float = 3.0, title: str = "", dims: int | None = None) -> np.ndarray:
    """Write the traversal grid of x0 (x[0] or x[:1]): the `dims` dimensions of largest KL on `data` (all by
    default), largest first, the KL beside each row, the image itself in the first column; return all the KLs."""
    x0 = one_example(model, x0)
    kl = kl_per_dim(model, data)
    order = np.argsort(-kl, kind="stable")[:dims]
    imgs = traversal(model, x0, steps, span)[torch.as_tensor(order.copy(), device=x0.device)]
    d, h = len(order), imgs.shape[-2]
    pic = grid(torch.cat([x0[None].expand(d, *x0.shape)[:, None], imgs], 1).flatten(0, 1), ncol=steps + 1)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(0.55 * (steps + 1) + 1.6, 0.55 * d + 0.6), layout="tight")
    ax.imshow(pic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for row, j in enumerate(order):
        ax.text(pic.shape[1] + 2, 1 + row * (h + 1) + h / 2, f"z{j}  KL {kl[j]:.2f}", va="center", fontsize=8)
    ax.set_xticks([1 + h / 2 + (k + 1) * (h + 1) for k in (0, steps - 1)], [f"{-span:g}σ", f"{span:g}σ"])
    ax.set_yticks([])
    ax.set_title(title or f"latent traversals over ±{span:g} prior standard deviations\n(first column: the image)",
                 fontsize=9)
    save_figure(fig, path)
    return kl


def check_kind(model, run_dir: Path) -> None:
    """One line for a model whose traversals this command cannot draw."""
    if not hasattr(model, "encode"):
        raise VgmError(f"{run_dir} holds a {model.kind!r} flow, which has no latent code to traverse")
    if len(getattr(model.config, "input_shape", ())) != 3:
        what = "sequences" if not hasattr(model.config, "input_shape") else f"examples of shape {model.config.input_shape}"
        raise VgmError(f"{run_dir} holds a {model.kind!r} model of {what}; traversals are drawn for image models "
                       "(ae excepted): vae, betavae, tcvae")
    if getattr(model, "deterministic", False):
        raise VgmError(f"{run_dir} holds an {model.kind!r} model: its encoder is deterministic, so there is no KL "
                       "per dimension to sort by and no prior scale for the range; use a vae, betavae or tcvae run")


@torch.no_grad()
def check_factorised(model, x1: torch.Tensor, run_dir: Path) -> None:
    """One line for a model whose posterior or prior is not a factorised Normal (vamp, iaf, hvae2, a flow prior)."""
    q, p = model.encode(x1), model.prior
    if not (factorised_normal(q) and factorised_normal(p)):
        raise VgmError(f"{run_dir} holds a {model.kind!r} model whose posterior ({type(q).__name__}) or prior "
                       f"({type(p).__name__}) is not a factorised Normal, so it has no KL per dimension to sort "
                       "by or no prior standard deviation for the range")


@register_command("traverse")
def cmd_traverse(argv: list[str]) -> int:
    from ..options import Parser, finite_float, positive_int, seed
    from ..run import checked_split, run_data
    p = Parser(prog="vgm traverse", description="sweep each latent dimension of an image's code over ±R prior "
                                                "standard deviations, rows sorted by KL")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="the split the KL per dimension is averaged over, and --i is taken from")
    p.add_argument("--i", type=int, default=0, help="index of the image in --split")
    p.add_argument("--dims", type=positive_int, default=None,
                   help="how many dimensions to show, those of largest KL (default: all)")
    p.add_argument("--range", type=finite_float, default=3.0, dest="span", metavar="R",
                   help="R: each dimension sweeps ±R prior standard deviations")
    p.add_argument("--steps", type=positive_int, default=10, help="images per row, ends included")
    p.add_argument("--out", type=Path, default=None, help="PNG file (default: RUN_DIR/traversal.png)")
    p.add_argument("--data-dir", default=None, help="where the run's data now are, if moved")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    if a.steps < 2:
        raise VgmError("--steps must be >= 2 (the two ends of the range)")
    if not a.span > 0:
        raise VgmError(f"--range must be > 0, got {a.span:g}")
    device = resolve_device(a.device)
    model = load(a.run_dir, device)
    check_kind(model, a.run_dir)
    d = model.config.latent_dim
    if a.dims is not None and a.dims > d:
        raise VgmError(f"--dims {a.dims}: the model has {d} latent dimensions")
    _, splits = run_data(a.run_dir, a.data_dir)
    x = checked_split(model, splits, a.split).to(device)
    if not 0 <= a.i < len(x):
        raise VgmError(f"--i {a.i} is out of range: the {a.split} split has {len(x)} examples")
    check_factorised(model, x[a.i:a.i + 1], a.run_dir)
    torch.manual_seed(a.seed)
    out = a.out or a.run_dir / "traversal.png"
    kl = save_traversals(out, model, x[a.i], x, steps=a.steps, span=a.span, dims=a.dims,
                         title=f"{model.kind}: {a.split}[{a.i}] (first column); each dimension over\n"
                               f"±{a.span:g} prior standard deviations, rows by KL on the {a.split} split")
    print(f"KL(q(z_j|x) ‖ p(z_j)) per dimension, mean over the {len(x)} {a.split} examples (nats):")
    for j in np.argsort(-kl, kind="stable")[:a.dims]:
        print(f"  z{j:<3} {kl[j]:8.4f}")
    print(f"wrote {out}")
    return 0
