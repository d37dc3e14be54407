"""Test log-likelihood of realnvp, maf and nsf on the four 2-D toy densities, and the density figure.

    OMP_NUM_THREADS=1 python benchmarks/flows_2d.py --runs runs/flows-2d --figure docs/flows_2d.png

Trains each flow with its default config by the command line (`vgm train MODEL --data DATA --epochs 30
--batch-size 256 --seed 0`; a run already in --runs is reused), scores it with `vgm evaluate --json`, and
prints a markdown table with the true density's test log-likelihood where it is known (8gaussians: the
mixture; checkerboard: uniform on area 32). Writes one figure: test data, then each flow's density.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

import vgm
from vgm.flows.plots import density_grid

FLOWS, DATA = ("realnvp", "maf", "nsf"), ("moons", "8gaussians", "checkerboard", "rings")


def true_log_lik(name: str) -> float | None:
    test = vgm.load_data(name).test.double()
    if name == "checkerboard":
        return -math.log(32.0)                       # uniform on 8 squares of side 2
    if name == "8gaussians":
        ang = torch.arange(8) * math.pi / 4
        c = 4 * torch.stack([torch.cos(ang), torch.sin(ang)], 1).double() / math.sqrt(2)
        comp = torch.distributions.Independent(torch.distributions.Normal(c, 0.5 / math.sqrt(2)), 1)
        mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(8)), comp)
        return mix.log_prob(test).mean().item()
    return None


def vgm_cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "vgm.cli", *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    return r.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/flows-2d"))
    p.add_argument("--figure", type=Path, default=Path("flows_2d.png"))
    p.add_argument("--epochs", type=int, default=30)
    a = p.parse_args()
    res: dict[str, dict[str, float]] = {}
    for d in DATA:
        for m in FLOWS:
            run = a.runs / f"{m}-{d}"
            if not (run / "model.safetensors").exists():
                vgm_cli("train", m, "--data", d, "--epochs", str(a.epochs), "--batch-size", "256", "--seed", "0",
                        "--out", str(run), "--quiet", "--force")
            res.setdefault(d, {})[m] = json.loads(vgm_cli("evaluate", str(run), "--json"))["log_px"]
    print("| data | " + " | ".join(FLOWS) + " | true density |\n|---|---|---|---|---|")
    for d in DATA:
        ref = true_log_lik(d)
        print(f"| {d} | " + " | ".join(f"{res[d][m]:.3f}" for m in FLOWS) + f" | {'' if ref is None else f'{ref:.3f}'} |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(len(DATA), 1 + len(FLOWS), figsize=(13, 13))
    for j, d in enumerate(DATA):
        x = vgm.load_data(d).test[:3000].numpy()
        ax[j, 0].scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax[j, 0].set(xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), aspect="equal", title=f"{d}: test data")
        for i, m in enumerate(FLOWS):
            dens, _ = density_grid(vgm.load(a.runs / f"{m}-{d}"), 4.5)
            ax[j, i + 1].imshow(dens, origin="lower", extent=(-4.5, 4.5, -4.5, 4.5), cmap="magma")
            ax[j, i + 1].set_title(f"{m}: {res[d][m]:.3f} nats")
    for axis in ax.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    fig.tight_layout()
    fig.savefig(a.figure, dpi=60)
    print(f"wrote {a.figure}")


if __name__ == "__main__":
    main()
