"""latent-dim: "fewer dimensions, blurrier reconstructions".

AE and VAE with z ∈ {2, 4, 8, 16, 32, 64}: test reconstruction error (MSE of the reconstruction from the posterior
mean, comparable across both), the VAE's KL and ELBO, and the number of active units (Burda et al., 2016):
    unit u is active  ⇔  Cov_x( E_{q(z|x)}[z_u] ) > 0.01.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..models.ae import AE
from ..data import Splits
from ..registry import register_experiment
from ..train import evaluate_terms
from ..models.vae import VAE
from . import command_line, write_results
from .common import ae_kw, batch_size, is_small, datasets, pyplot, save_figure, show_grid, train, vae_kw

CLAIM = "Fewer latent dimensions, blurrier reconstructions."
ACTIVE_THRESHOLD = 0.01


@torch.no_grad()
def active_units(model, x: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Burda et al.'s count: latent units whose posterior mean varies across the data by more than `threshold`."""
    return int((model.encode(x).mean.var(0) > threshold).sum())


@register_experiment("latent-dim", data="images")
def run(out: Path, quick: bool, seed: int, data_dir: str | None, user_data: Splits | None = None) -> dict:
    dims = (2, 16) if quick else (2, 4, 8, 16, 32, 64)
    rows, figures, summary = [], [], []
    plt = pyplot()
    for name, data in datasets(data_dir, data=user_data):
        small = is_small(data)
        epochs = (20 if quick else 100) if small else (3 if quick else 20)
        hidden = (256, 128) if small else (512, 256)
        x = data.test
        shown = x[:8]
        recon = {}
        for d in dims:
            for label, cls, kw in (("AE", AE, ae_kw(name)), ("VAE", VAE, vae_kw(name))):
                model, _ = train(cls, data, epochs, seed, latent_dim=d, hidden=hidden,
                                 batch_size=batch_size(small), **kw)
                torch.manual_seed(seed)
                terms = evaluate_terms(model, x)
                with torch.no_grad():
                    rec = model.reconstruct(x)
                recon[label, d] = rec[:8]
                rows.append({"data": name, "model": label, "latent_dim": d,
                             "test_recon_mse": ((rec - x) ** 2).mean().item(),
                             "test_recon_nats": terms["recon"] if label == "VAE" else None, "test_kl": terms.get("kl"),
                             "test_elbo": terms.get("elbo"), "active_units": active_units(model, x)})
        mine = [r for r in rows if r["data"] == name]
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
        for label, mk in (("AE", "o-"), ("VAE", "s-")):
            rs = [r for r in mine if r["model"] == label]
            axes[0].plot(dims, [r["test_recon_mse"] for r in rs], mk, label=label)
            axes[2].plot(dims, [r["active_units"] for r in rs], mk, label=label)
        vae = [r for r in mine if r["model"] == "VAE"]
        axes[1].plot(dims, [-r["test_elbo"] for r in vae], "s-", label="−ELBO (VAE)")
        axes[1].plot(dims, [r["test_kl"] for r in vae], "^--", label="KL (VAE)")
        axes[1].plot(dims, [r["test_recon_nats"] for r in vae], "v--", label="recon (VAE)")
        axes[2].plot(dims, dims, ":", color="grey", label="all units")
        for ax, t, yl in ((axes[0], "test reconstruction error", "MSE per pixel"),
                          (axes[1], "VAE: ELBO = −(recon + KL)", "nats per image"),
                          (axes[2], "active units (Cov_x E_q[z] > 0.01)", "units")):
            ax.set_xscale("log", base=2), ax.set_xticks(dims, [str(d) for d in dims])
            ax.set_title(t), ax.set_xlabel("latent dimension z"), ax.set_ylabel(yl), ax.legend()
        axes[0].set_yscale("log")
        fig.suptitle(f"{name}: latent size against reconstruction, KL and active units")
        figures.append(save_figure(fig, out / f"curves_{name}.png"))
        fig, axes = plt.subplots(2, 1, figsize=(1.1 * 8, 1.1 * 2 * (len(dims) + 1)))
        for ax, label in zip(axes, ("AE", "VAE")):
            show_grid(ax, torch.cat([shown] + [recon[label, d] for d in dims]), ncol=8,
                      title=f"{label}: test digits (top), then reconstructions with z = {', '.join(map(str, dims))}")
        figures.append(save_figure(fig, out / f"reconstructions_{name}.png"))
        lo, hi = dims[0], dims[-1]
        mse = {(r["model"], r["latent_dim"]): r["test_recon_mse"] for r in mine}
        act = {r["latent_dim"]: r["active_units"] for r in vae}
        summary.append((name, mse, act, lo, hi))
    held = all(m["AE", lo] > m["AE", hi] and m["VAE", lo] > m["VAE", hi] for _, m, _, lo, hi in summary)
    verdict = "; ".join(
        f"{name}: test MSE at z={lo} vs z={hi} is {m['AE', lo]:.4f} vs {m['AE', hi]:.4f} (AE, "
        f"{m['AE', lo] / m['AE', hi]:.1f}x) and {m['VAE', lo]:.4f} vs {m['VAE', hi]:.4f} (VAE, "
        f"{m['VAE', lo] / m['VAE', hi]:.1f}x); the VAE uses {a[hi]} of {hi} units at z={hi}"
        for name, m, a, lo, hi in summary)
    verdict = ("Held — " if held else "Did not hold — ") + verdict
    return write_results(
        out, name="latent-dim", title="Latent size: reconstructions, KL and active units", claim=CLAIM,
        command=command_line("latent-dim", quick, seed, data_dir, user_data), table=rows, figures=figures,
        verdict=verdict, held=held,
        notes="Reconstruction MSE is per pixel, from the decoder mean at the posterior mean (AE: the code), on the "
              "test split. recon/KL/ELBO in nats per image (VAE: one reparameterised sample). Active units follow "
              "Burda et al. (2016); for the AE, whose codes have no fixed scale, the count is shown for "
              "comparison only — any unused direction can still vary. Same MLP, epochs and seed for every run.")
