"""Time of the K = 5000 importance-weighted log p(x) estimate on the 2,000 mnist10k test digits.

Uses the trained run given by --run (e.g. the README's quality run), or a freshly initialised
784-512-256-z32 VAE (the cost does not depend on the weights).

    python benchmarks/iwae_eval.py --data-dir ../shared/data/mnist10k [--run runs/mnist-vae]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import vgm
from vgm.data import load as load_data


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("VGM_DATA_DIR", "../shared/data/mnist10k"))
    ap.add_argument("--run", default=None)
    ap.add_argument("-k", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x = load_data("mnist", a.data_dir, binarize="dynamic").test
    model = vgm.load(a.run) if a.run else vgm.VAE(input_shape=(1, 28, 28), latent_dim=32, hidden=(512, 256)).eval()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    res = vgm.evaluate(model, x, iw_samples=a.k, batch_size=a.batch_size)
    dt = time.perf_counter() - t0
    decodes = a.k * x.shape[0]
    print(f"K={a.k} on {x.shape[0]} test digits ({a.threads} threads): {dt:.1f} s "
          f"({decodes / dt / 1e6:.2f} M decoded samples/s); log_px {res['log_px']:.2f} nats, ELBO {res['elbo']:.2f}")


if __name__ == "__main__":
    main()
