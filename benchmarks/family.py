"""Issue 14's measurements: the new models beside the old, each on its claim.

    disentangle   β-VAE (β = 4), β-TCVAE (β = 6), FactorVAE (γ = 35), DIP-VAE-I (λ_od = 10, λ_d = 100) on 32x32
                  dSprites, beta-sweep's FULL budget (24,000 images, 6 epochs of 64) and its metrics (MIG, SAP, DCI,
                  β-VAE and FactorVAE scores), per seed
    mnist         on MNIST (a folder of the IDX files): a CVAE, its class-conditional samples scored by the digit
                  classifier of the experiments (train_scorer) — the fraction classified as the asked-for digit;
                  a VQ-VAE (with and without --ema): reconstruction MSE, perplexity, dead codes, samples from its
                  learned prior, and the Fréchet distance of the classifier's features beside a VAE's samples

    python benchmarks/family.py --part mnist --data-dir /work/shared/data/mnist10k --device cuda --out out/family
    OMP_NUM_THREADS=1 python benchmarks/family.py --part cvae --data-dir ../shared/data/mnist10k --cvae-latents 4,8,16
Writes OUT/family_PART.json (appended as each model finishes) and sample grids.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import vgm
from vgm.data.dsprites import DSprites, dsprites_splits
from vgm.experiments.beta_sweep import FULL, QUICK, measure
from vgm.models import CVAE, VAE, VQVAE, BetaVAE, DIPVAE, FactorVAE, TCVAE
from vgm.plots import save_examples
from vgm.tools.sample_quality import train_scorer
from vgm.train import TrainConfig, fit

DISENTANGLE = [("betavae", BetaVAE, {"beta": 4.0}), ("tcvae", TCVAE, {"beta": 6.0}),
               ("factorvae", FactorVAE, {"gamma": 35.0}), ("dipvae", DIPVAE, {"dip_type": "i"})]


def trained(cls, data, epochs: int, seed: int, device: str, batch_size: int, **config):
    torch.manual_seed(seed)
    model = cls(input_shape=data.shape, **config)
    t0 = time.perf_counter()
    fit(model, data, TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device=device), progress=False)
    return model.eval(), time.perf_counter() - t0


def record(out: Path, part: str, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(out / f"family_{part}.json", "a") as f:
        f.write(json.dumps(row) + "\n")


def disentangle(out: Path, seeds: list[int], device: str, quick: bool, epochs: int) -> None:
    budget = QUICK if quick else replace(FULL, epochs=epochs)
    splits = dsprites_splits(budget.images, resolution=32)
    grid = DSprites(32)
    for seed in seeds:
        for kind, cls, kw in DISENTANGLE:
            if kind == "tcvae":
                kw = {**kw, "dataset_size": len(splits.train)}
            model, seconds = trained(cls, splits, budget.epochs, seed, device, budget.batch_size, **kw)
            row = {"model": kind, "seed": seed, **{k: v for k, v in kw.items() if k != "dataset_size"},
                   **measure(model.cpu(), splits, grid, budget, seed), "train_seconds": round(seconds, 1)}
            record(out, "disentangle", row)


def conditional_samples(out: Path, data, scorer, real, epochs: int, device: str, latent: int, n: int) -> None:
    """A CVAE's samples, n // 10 per digit: the fraction the classifier calls the asked-for digit, and their FD."""
    cvae, s = trained(CVAE, data, epochs, 0, device, 128, latent_dim=latent)
    torch.manual_seed(1)
    x = torch.cat([cvae.sample(n // 10, label=c) for c in range(10)]).cpu()
    want = torch.arange(10).repeat_interleave(n // 10)
    acc = (scorer.predict(x) == want).float().mean().item()
    per = [(scorer.predict(x[want == c]) == c).float().mean().item() for c in range(10)]
    ev = vgm.evaluate(cvae, data.test, 100, 500, labels=data.test_labels)
    save_examples(out / f"cvae_samples_z{latent}.png", torch.cat([cvae.sample(10, label=c) for c in range(10)]).cpu(),
                  title="cvae: one row per digit 0-9")
    record(out, "mnist", {"model": "cvae", "epochs": epochs, "latent_dim": latent, "train_seconds": round(s, 1),
                          "label_accuracy": acc, "per_digit": per, "test_elbo": ev["elbo"],
                          "frechet": scorer.frechet(x, real)})


def mnist(out: Path, data_dir: str, epochs: int, device: str, cvae_epochs: int, cvae_latents: list[int],
          n: int = 1000) -> None:
    data = vgm.load_data("mnist", data_dir=data_dir)
    t0 = time.perf_counter()
    scorer = train_scorer(data)
    record(out, "mnist", {"model": "scorer", "test_accuracy": scorer.test_accuracy,
                          "seconds": round(time.perf_counter() - t0, 1)})
    real = data.test[:n].cpu()
    for latent in cvae_latents:
        conditional_samples(out, data, scorer, real, cvae_epochs, device, latent, n)
    vae, s = trained(VAE, data, epochs, 0, device, 128)
    torch.manual_seed(1)
    xs = vae.sample(n).cpu()
    ev = vgm.evaluate(vae, data.test, 0, 500)
    record(out, "mnist", {"model": "vae", "epochs": epochs, "train_seconds": round(s, 1), "test_mse": ev["mse"],
                          "test_recon": ev["recon"], "frechet": scorer.frechet(xs, real),
                          "confidence": scorer.confidence(xs)})
    for ema in (False, True):
        vq, s = trained(VQVAE, data, epochs, 0, device, 128, ema=ema)
        torch.manual_seed(1)
        xs = vq.sample(n).cpu()
        ev = vgm.evaluate(vq, data.test, 0, 500)
        name = "vqvae_ema" if ema else "vqvae"
        save_examples(out / f"{name}_samples.png", xs[:64], title=f"{name}: samples from the learned code prior")
        record(out, "mnist", {"model": name, "epochs": epochs, "train_seconds": round(s, 1), "test_mse": ev["mse"],
                              "test_recon": ev["recon"], "prior_nll": ev["kl"], "perplexity": ev["perplexity"],
                              "dead_codes": ev["dead_codes"], "frechet": scorer.frechet(xs, real),
                              "confidence": scorer.confidence(xs)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("disentangle", "mnist", "cvae"), required=True,
                   help="cvae: the CVAEs of the mnist part alone")
    p.add_argument("--out", type=Path, default=Path("out/family"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=20, help="MNIST epochs per model")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dsprites-epochs", type=int, default=FULL.epochs, help="epochs per dSprites model")
    p.add_argument("--cvae-epochs", type=int, default=20)
    p.add_argument("--cvae-latents", default="4", help="latent sizes of the CVAEs trained (comma-separated)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.part == "disentangle":
        disentangle(a.out, [int(s) for s in a.seeds.split(",")], a.device, a.quick, a.dsprites_epochs)
    elif a.part == "cvae":
        data = vgm.load_data("mnist", data_dir=a.data_dir)
        scorer = train_scorer(data)
        for latent in [int(v) for v in a.cvae_latents.split(",")]:
            conditional_samples(a.out, data, scorer, data.test[:1000].cpu(), a.cvae_epochs, a.device, latent, 1000)
    else:
        mnist(a.out, a.data_dir, a.epochs, a.device, a.cvae_epochs, [int(v) for v in a.cvae_latents.split(',')])
    print(f"{a.part}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
