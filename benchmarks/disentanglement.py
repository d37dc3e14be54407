"""MIG and FactorVAE score of a β-VAE and a β-TCVAE on 64x64 dSprites after a fixed CPU budget.

    OMP_NUM_THREADS=1 python benchmarks/disentanglement.py                 # the figures in docs/disentanglement.md
    python benchmarks/disentanglement.py --epochs 1 --images 2000 --n-points 50   # a smoke run

The standard architecture (4 convolutions 32-32-64-64, a 256-unit layer, 10 latents, Bernoulli decoder), Adam,
batches of 64; the data are a fixed sample of the grid (80% train, 10% validation, 10% test). Metrics use fresh
grid samples: MIG and DCI (random-forest importances) on --n-codes points, the FactorVAE score with --n-points
training and half as many evaluation votes of 64 images. Prints one table row per model, then the JSON.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from vgm.models.betavae import BetaVAE
from vgm.data.dsprites import DSprites, dsprites_splits
from vgm.metrics import dci, factor_vae_score, mig
from vgm.metrics.beta_vae_score import represent
from vgm.tools.metrics import encoder_of
from vgm.models.tcvae import TCVAE
from vgm.train import TrainConfig, evaluate_terms, fit

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8000, help="grid points drawn for the data")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta", type=float, default=4.0, help="β of the β-VAE")
    p.add_argument("--tc-beta", type=float, default=6.0, help="β (on the total correlation) of the β-TCVAE")
    p.add_argument("--n-codes", type=int, default=3000)
    p.add_argument("--n-points", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    splits = dsprites_splits(a.images, resolution=64)
    grid = DSprites(64)
    steps = a.epochs * -(-len(splits.train) // a.batch_size)
    rows = []
    for name, cls, kw in (("β-VAE", BetaVAE, {"beta": a.beta}),
                          ("β-TCVAE", TCVAE, {"beta": a.tc_beta, "dataset_size": len(splits.train)})):
        torch.manual_seed(a.seed)
        model = cls(input_shape=(1, 64, 64), **kw)
        t0 = time.perf_counter()
        fit(model, splits, TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                                       device="cpu"), progress=False)
        train_s = time.perf_counter() - t0
        model.eval()
        torch.manual_seed(a.seed)
        terms = evaluate_terms(model, splits.test, 500)
        t0 = time.perf_counter()
        encode = encoder_of(model)
        rng = np.random.default_rng(a.seed)
        factors = grid.sample_factors(a.n_codes, rng)
        codes = represent(encode, grid, factors)
        fv = factor_vae_score(encode, grid, n_train=a.n_points, n_eval=a.n_points // 2, seed=a.seed)
        row = {"model": name, "beta": kw["beta"], "steps": steps, "train_s": round(train_s, 1),
               "test_recon": round(terms["recon"], 2), "test_kl": round(terms["kl"], 2),
               "mig": round(mig(codes, factors), 4), "factor_vae_score": fv["eval_accuracy"],
               "active_dims": fv["active_dims"],
               "dci_disentanglement": round(dci(codes, factors, model="forest", seed=a.seed)["disentanglement"], 4),
               "metrics_s": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(" | ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    print(json.dumps({"config": vars(a), "train_images": len(splits.train), "threads": torch.get_num_threads(),
                      "rows": rows}))


if __name__ == "__main__":
    main()
