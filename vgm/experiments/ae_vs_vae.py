"""ae-vs-vae: "a VAE can generate, an AE gives garbage".

An AE and a VAE of the same architecture and latent size are trained on the same digits; both decode z ~ N(0, I).
A digit classifier trained on the real training data judges the samples: the Fréchet distance between the
samples' and the real test digits' features, and its mean confidence. Real training digits give the floor.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..models.ae import AE
from ..data import Splits
from ..registry import register_experiment
from ..tools.sample_quality import train_scorer
from ..models.vae import VAE
from . import command_line, write_results
from .common import ae_kw, batch_size, is_small, datasets, pyplot, save_figure, show_grid, train, vae_kw

CLAIM = "A VAE can generate, an AE gives garbage: decode z ~ N(0, I) with both."


@register_experiment("ae-vs-vae", data="labelled images")
def run(out: Path, quick: bool, seed: int, data_dir: str | None, user_data: Splits | None = None) -> dict:
    rows, figures, ratios = [], [], []
    for name, data in datasets(data_dir, data=user_data):
        small = is_small(data)
        epochs = (30 if quick else 100) if small else (5 if quick else 30)
        latent = 8 if small else 16
        hidden = (256, 128) if small else (512, 256)
        scorer = train_scorer(data, epochs=30 if small else 10, seed=seed)
        real = data.test
        n = len(real)
        gen = {}
        floor = scorer.frechet(data.train[:n], real)
        rows.append({"data": name, "model": "real training digits (floor)", "frechet": floor,
                     "confidence": scorer.confidence(data.train[:n]), "test_recon_mse": None})
        for label, cls, kw in (("AE", AE, ae_kw(name)), ("VAE", VAE, vae_kw(name))):
            model, _ = train(cls, data, epochs, seed, latent_dim=latent, hidden=hidden,
                             batch_size=batch_size(small), **kw)
            torch.manual_seed(seed + 1)
            gen[label] = model.sample(n)
            with torch.no_grad():
                mse = ((model.reconstruct(real) - real) ** 2).mean().item()
            rows.append({"data": name, "model": label, "frechet": scorer.frechet(gen[label], real),
                         "confidence": scorer.confidence(gen[label]), "test_recon_mse": mse})
        ae, vae = rows[-2], rows[-1]
        ratios.append((name, ae["frechet"] / max(vae["frechet"], 1e-9), ae, vae))
        for r in rows[-3:]:
            r["classifier_test_acc"] = scorer.test_accuracy
        plt = pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
        show_grid(axes[0], real[:64], "real test digits")
        show_grid(axes[1], gen["AE"][:64], f"AE, z ~ N(0, I)\nFD {ae['frechet']:.1f}, conf {ae['confidence']:.2f}")
        show_grid(axes[2], gen["VAE"][:64], f"VAE, z ~ N(0, I)\nFD {vae['frechet']:.1f}, conf {vae['confidence']:.2f}")
        fig.suptitle(f"{name}: same decoder architecture, latent size {latent}")
        figures.append(save_figure(fig, out / f"samples_{name}.png"))
    held = all(r > 2 for _, r, _, _ in ratios)      # judged on the Fréchet distance; confidence is shown
    verdict = "; ".join(f"{name}: VAE samples' Fréchet distance {vae['frechet']:.1f} vs AE {ae['frechet']:.1f} "
                        f"({r:.1f}x lower), classifier confidence {vae['confidence']:.2f} vs {ae['confidence']:.2f}"
                        for name, r, ae, vae in ratios)
    verdict = ("Held — " if held else "Did not hold — ") + verdict
    return write_results(
        out, name="ae-vs-vae", title="An AE's latent space is not a generative model", claim=CLAIM,
        command=command_line("ae-vs-vae", quick, seed, data_dir, user_data), table=rows, figures=figures, verdict=verdict,
        held=held,
        notes="Fréchet distance (lower is better) is computed in the penultimate layer of an MLP digit classifier "
              "trained on the real training split; confidence is its mean top-class probability. The 'real "
              "training digits' row is the floor a perfect generator would reach with this many samples. "
              "Both models: same MLP encoder/decoder, same latent size, same epochs; selection by validation loss; "
              "likelihood Gaussian (σ = 0.1) / squared error on digits, Bernoulli / cross-entropy on MNIST.")
