"""beta-sweep: "a high β forces a disentangled latent space, at the price of blurrier reconstructions".

β-VAEs with β ∈ {1, 2, 4, 8, 16}, and beside them the other penalties of disentanglement_lib's study: a β-TCVAE
(β = 6 on the total correlation only), a FactorVAE (γ = 35 on a discriminator's TC estimate) and a DIP-VAE-I
(λ_od = 10, λ_d = 100 on the covariance of the posterior means); the standard architecture for 32x32 dSprites,
one fixed training budget each. For every model: test reconstruction error
and KL (nats), MIG, SAP, DCI, the β-VAE and FactorVAE scores (vgm.metrics, from fresh grid samples), and a
latent traversal grid. The claim holds when the reconstruction error rises with β (Spearman ρ ≥ 0.9) and the
best MIG among β ≥ 4 beats β = 1 by at least 0.05.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import scipy.stats
import torch

from ..models import betavae, dipvae, factorvae, tcvae
from ..data.dsprites import DSprites, dsprites_splits
from ..tools.metrics import encoder_of, score_all
from ..registry import register_experiment
from ..train import evaluate_terms
from ..tools.traversal import save_traversals
from . import command_line, write_results
from .common import pyplot, save_figure, train

CLAIM = ('A weight β on the KL term is a "deviation budget": a high β forces an efficient, disentangled latent '
         'space (one factor per dimension), at the price of blurrier reconstructions.')
BETAS = (1, 2, 4, 8, 16)
TC_BETA = 6.0
FACTOR_GAMMA = 35.0
DIP = {"dip_type": "i", "lambda_od": 10.0, "lambda_d": 100.0}
MIG_MARGIN = 0.05


@dataclass(frozen=True)
class Budget:
    images: int          # grid points drawn for the data (80% train, 10% val, 10% test)
    epochs: int
    batch_size: int
    n_codes: int         # grid points for MIG / SAP / DCI
    n_points: int        # training points of the β-VAE / FactorVAE scores (half as many to evaluate)


FULL = Budget(images=24000, epochs=6, batch_size=64, n_codes=5000, n_points=500)    # ≈ 1,800 steps per model
QUICK = Budget(images=1000, epochs=1, batch_size=64, n_codes=300, n_points=20)


def measure(model, splits, grid: DSprites, budget: Budget, seed: int) -> dict:
    torch.manual_seed(seed)
    terms = evaluate_terms(model, splits.test)
    s = score_all(encoder_of(model), grid, n_codes=budget.n_codes, n_train=budget.n_points,
                  n_eval=budget.n_points // 2, n_variance=min(10000, budget.n_codes), dci_model="forest",
                  seed=seed)
    return {"test_recon": terms["recon"], "test_kl": terms["kl"], "mig": s["mig"], "sap": s["sap"],
            "dci_disentanglement": s["dci"]["disentanglement"], "dci_completeness": s["dci"]["completeness"],
            "dci_informativeness": s["dci"]["informativeness"],
            "beta_vae_score": s["beta_vae_score"]["eval_accuracy"],
            "factor_vae_score": s["factor_vae_score"]["eval_accuracy"]}


def verdict_of(rows: list[dict]) -> tuple[str, bool, dict]:
    sweep = [r for r in rows if r["model"] == "betavae"]
    betas = [r["beta"] for r in sweep]
    rho_recon = float(scipy.stats.spearmanr(betas, [r["test_recon"] for r in sweep])[0])
    rho_mig = float(scipy.stats.spearmanr(betas, [r["mig"] for r in sweep])[0])
    mig1 = next(r["mig"] for r in sweep if r["beta"] == 1)
    best = max((r for r in sweep if r["beta"] >= 4), key=lambda r: r["mig"])
    blur = rho_recon >= 0.9 - 1e-9
    disentangles = best["mig"] >= mig1 + MIG_MARGIN
    held = blur and disentangles
    verdict = (f"{'held' if held else 'did not hold'}: reconstruction error vs β Spearman ρ = {rho_recon:.2f} "
               f"({'rises' if blur else 'does not rise steadily'}); MIG {mig1:.3f} at β = 1 vs {best['mig']:.3f} "
               f"at β = {best['beta']:g} ({'+' if best['mig'] >= mig1 else ''}{best['mig'] - mig1:.3f}, "
               f"needed +{MIG_MARGIN}); ρ(β, MIG) = {rho_mig:.2f}")
    return verdict, held, {"spearman_beta_recon": rho_recon, "spearman_beta_mig": rho_mig}


def plot(rows: list[dict], path: Path) -> str:
    plt = pyplot()
    sweep = [r for r in rows if r["model"] == "betavae"]
    others = [(r, style, label) for r in rows for kind, style, label in (
        ("tcvae", "r*", f"β-TCVAE (β = {TC_BETA:g} on TC)"), ("factorvae", "gs", f"FactorVAE (γ = {FACTOR_GAMMA:g})"),
        ("dipvae", "mD", "DIP-VAE-I (λ_od = 10)")) if r["model"] == kind]
    panels = (("test_recon", "reconstruction error (nats)"), ("test_kl", "KL (nats)"), ("mig", "MIG"),
              ("factor_vae_score", "FactorVAE score"), ("dci_disentanglement", "DCI disentanglement"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (key, label) in zip(axes, panels):
        ax.plot([r["beta"] for r in sweep], [r[key] for r in sweep], "o-", label="β-VAE")
        for r, style, label in others:        # drawn at the β of their VAE part (1 for FactorVAE / DIP-VAE)
            ax.plot([r["beta"]], [r[key]], style, markersize=10 if style == "r*" else 7, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("β")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


@register_experiment("beta-sweep")
def run(out: Path, quick: bool, seed: int, data_dir: str | None) -> dict:
    budget = QUICK if quick else FULL
    splits = dsprites_splits(budget.images, resolution=32)
    grid = DSprites(32)
    shown = splits.test[0]
    models = [("betavae", betavae.BetaVAE, {"beta": float(b)}) for b in BETAS]
    models.append(("tcvae", tcvae.TCVAE, {"beta": TC_BETA, "dataset_size": len(splits.train)}))
    models.append(("factorvae", factorvae.FactorVAE, {"beta": 1.0, "gamma": FACTOR_GAMMA}))
    models.append(("dipvae", dipvae.DIPVAE, {"beta": 1.0, **DIP}))
    rows, figures = [], []
    for kind, cls, kw in models:
        t0 = time.perf_counter()
        model, history = train(cls, splits, budget.epochs, seed, batch_size=budget.batch_size, **kw)
        seconds = time.perf_counter() - t0
        setting = {"tcvae": f"β = {TC_BETA:g} on TC", "factorvae": f"γ = {FACTOR_GAMMA:g}",
                   "dipvae": "type i, λ_od = 10, λ_d = 100"}.get(kind, f"β = {kw['beta']:g}")
        row = {"model": kind, "beta": kw["beta"], "setting": setting, **measure(model, splits, grid, budget, seed),
               "train_seconds": round(seconds, 1)}
        name = f"traversal_{kind}_beta{kw['beta']:g}.png" if kind in ("betavae", "tcvae") else f"traversal_{kind}.png"
        kl = save_traversals(out / name, model, shown, splits.test,
                             title=f"{kind} {setting}: traversals over [−3, 3], rows by KL")
        row["active_dims"] = int((kl > 0.1).sum())
        rows.append(row)
        figures.append(name)
    figures.insert(0, plot(rows, out / "metrics_vs_beta.png"))
    verdict, held, stats = verdict_of(rows)
    steps = budget.epochs * -(-len(splits.train) // budget.batch_size)
    notes = (f"32x32 dSprites, {len(splits.train)} training images, {budget.epochs} epochs of batches of "
             f"{budget.batch_size} ({steps} steps) per model, Adam lr 1e-3, seed {seed} — far shorter than the "
             f"literature's 300,000 steps on 64x64 images, so absolute scores are lower. Metrics on fresh grid "
             f"samples: MIG/SAP/DCI (random-forest importances) on {budget.n_codes} points, β-VAE and FactorVAE "
             f"scores with {budget.n_points} training and {budget.n_points // 2} evaluation points of 64 images. "
             f"active_dims: latent dimensions with mean KL > 0.1 nats. One seed: Locatello et al. (2019) show "
             f"that the seed moves these scores about as much as β does. The verdict is the β-VAE sweep's; the "
             f"β-TCVAE, FactorVAE and DIP-VAE rows compare the other penalties at the same budget (published "
             f"dSprites MIG, disentanglement_lib's study: β-TCVAE ≈ 0.45, β-VAE ≈ 0.21, FactorVAE ≈ 0.15 after "
             f"300,000 steps on 64x64 images).")
    return write_results(out, name="beta-sweep", title="β-VAE and disentanglement on dSprites", claim=CLAIM,
                         command=command_line("beta-sweep", quick, seed, data_dir), table=rows, figures=figures,
                         verdict=verdict, held=held, notes=notes, **stats)
