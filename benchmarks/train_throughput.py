"""Training throughput of an MLP VAE 784-512-256-z32 on MNIST, beside a bare PyTorch loop and plain matmuls.

Prints, for each batch size, examples/s of
  bare      a hand-written VAE (nn.Linear + F.binary_cross_entropy_with_logits + the closed-form KL) in a bare loop
  bare+vgm  vgm.VAE (torch.distributions) in the same bare loop
  vgm.fit   vgm.VAE trained by vgm's trainer (progress bar, checkpointing off, per-epoch validation as in bare)
and the VAE step's GFLOP/s next to the GFLOP/s of plain torch.matmul on the same layer sizes, measured in the
same run, and the default Adam's step time beside the fused one's. Every variant steps torch's fused Adam, the
trainer's optimizer, so the ratio is the trainer's overhead.
Rounds are interleaved and medians reported, so load from other processes hits all variants alike.

    python benchmarks/train_throughput.py --data-dir ../shared/data/mnist10k
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import vgm
from vgm.data import load as load_data
from vgm.train import TrainConfig, fit

D, H1, H2, Z = 784, 512, 256, 32
ENC = [(D, H1), (H1, H2), (H2, 2 * Z)]
DEC = [(Z, H2), (H2, H1), (H1, D)]


class BareVAE(nn.Module):
    """The same network written plainly: no distributions objects."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, H1), nn.ReLU(), nn.Linear(H1, H2), nn.ReLU(), nn.Linear(H2, 2 * Z))
        self.dec = nn.Sequential(nn.Linear(Z, H2), nn.ReLU(), nn.Linear(H2, H1), nn.ReLU(), nn.Linear(H1, D))

    def forward(self, x):
        x = x.flatten(1)
        mu, s = self.enc(x).chunk(2, -1)
        sigma = F.softplus(s) + 1e-6
        z = mu + sigma * torch.randn_like(mu)
        recon = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(1)
        kl = 0.5 * (sigma ** 2 + mu ** 2 - 1 - 2 * sigma.log()).sum(1)
        return (recon + kl).mean()


def bare_loop(model, loss_fn, data, epochs, bs, seed):
    """A plain loop: shuffle + dynamic binarisation per epoch, Adam, and a validation pass per epoch."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)       # the trainer's optimizer
    g = torch.Generator().manual_seed(seed)
    x, n = data.train, data.train.shape[0]
    t0 = time.perf_counter()
    for _ in range(epochs):
        xs = torch.bernoulli(x[torch.randperm(n, generator=g)], generator=g)
        for i in range(0, n, bs):
            loss = loss_fn(model, xs[i:i + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            model.eval()
            for i in range(0, data.val.shape[0], 1000):
                loss_fn(model, data.val[i:i + 1000])
            model.train()
    return epochs * n / (time.perf_counter() - t0)


def vgm_fit(data, epochs, bs, seed):
    torch.manual_seed(seed)
    model = vgm.VAE(input_shape=(1, 28, 28), latent_dim=Z, hidden=(H1, H2))
    t0 = time.perf_counter()
    fit(model, data, TrainConfig(epochs=epochs, batch_size=bs, seed=seed, device="cpu"), progress=False)
    return epochs * data.train.shape[0] / (time.perf_counter() - t0)


def matmul_gflops(bs: int, reps: int = 30) -> float:
    """GFLOP/s of plain matmuls with exactly the shapes of one training step (forward + both backward products)."""
    shapes = []
    for a, b in ENC + DEC:
        shapes += [(bs, a, b), (bs, b, a), (a, bs, b)]      # forward, grad wrt input, grad wrt weight
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    for a, b in mats:
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        for a, b in mats:
            a @ b
    return flops * reps / (time.perf_counter() - t0) / 1e9


def adam_steps(fused: bool, steps: int = 200) -> tuple[float, torch.Tensor]:
    """ms per Adam step over the VAE's parameters (default or fused kernel) and the weights after 20 seeded steps."""
    torch.manual_seed(0)
    model = vgm.VAE(input_shape=(1, 28, 28), latent_dim=Z, hidden=(H1, H2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t0) / steps * 1e3, weights


def step_flops_per_example() -> int:
    return 3 * sum(2 * a * b for a, b in ENC + DEC)   # forward + backward (≈ 2x forward)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("VGM_DATA_DIR", "../shared/data/mnist10k"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-sizes", default="128,256")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = load_data("mnist", a.data_dir, binarize="dynamic")
    print(f"torch {torch.__version__}, {a.threads} threads, {data.train.shape[0]} training digits, "
          f"{a.epochs} epochs per measurement, median of {a.rounds} interleaved rounds")
    bare_fn = lambda m, x: m(x)
    vgm_fn = lambda m, x: m.loss(x)["loss"].mean()
    print(f"{'batch':>5} {'bare ex/s':>10} {'bare+vgm.VAE':>13} {'vgm.fit ex/s':>13} {'fit/bare':>9} "
          f"{'VAE GFLOP/s':>12} {'matmul GFLOP/s':>15} {'VAE/matmul':>11}")
    for bs in map(int, a.batch_sizes.split(",")):
        res = {"bare": [], "bare_vgm": [], "fit": [], "mm": []}
        for r in range(a.rounds):
            torch.manual_seed(r)
            res["bare"].append(bare_loop(BareVAE(), bare_fn, data, a.epochs, bs, r))
            torch.manual_seed(r)
            res["bare_vgm"].append(bare_loop(vgm.VAE(input_shape=(1, 28, 28), latent_dim=Z, hidden=(H1, H2)),
                                             vgm_fn, data, a.epochs, bs, r))
            res["fit"].append(vgm_fit(data, a.epochs, bs, r))
            res["mm"].append(matmul_gflops(bs))
        med = {k: statistics.median(v) for k, v in res.items()}
        gflops = med["fit"] * step_flops_per_example() / 1e9
        print(f"{bs:>5} {med['bare']:>10.0f} {med['bare_vgm']:>13.0f} {med['fit']:>13.0f} "
              f"{med['bare'] / med['fit']:>8.2f}x {gflops:>12.1f} {med['mm']:>15.1f} {gflops / med['mm']:>10.0%}")
    (plain_ms, plain_w), (fused_ms, fused_w) = adam_steps(False), adam_steps(True)
    print(f"Adam step over {plain_w.numel():,} parameters: default {plain_ms:.2f} ms, fused (the trainer's) "
          f"{fused_ms:.2f} ms; weights after 20 steps differ by at most {(plain_w - fused_w).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
