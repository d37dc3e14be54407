"""vgm's vector flows beside zuko's (https://github.com/probabilists/zuko) on scikit-learn's digits, at equal time.

    pip install -e '.[bench]'                 # zuko: a benchmark-only dependency
    OMP_NUM_THREADS=1 python benchmarks/vector_flows_vs_zuko.py --budget-s 120

Protocol (the issue's): the 1,797 digits as 64-vectors, split 1,500 train / 297 test by a fixed permutation (seed 0);
uniform dequantization y = (k + u)/17 over the 17 grey levels with fresh noise every batch; batches of 128; Adam
with lr 1e-3; each flow trains until `--budget-s` seconds of process CPU time (training steps only, all threads
together; CPU time rather than wall time, so that other jobs on a shared machine cost no flow its budget); then
the test bits/dim of the last weights, averaged over 10 draws of the dequantization noise:
    bits/dim = −(log p(y) − 64 log 17) / (64 ln 2).
Every flow sees the same y. vgm's flows put logit(α + (1 − 2α) y) (α = 0.05, its Jacobian counted) before their
layers, as `vgm train` does; zuko's are run both on that same logit input ("zuko-...-logit") and on y itself.
Prints a table row per flow and seed, then the JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

import vgm
from vgm.data.dequantize import dequantize, log_scale
from vgm.flows import Logit

LEVELS, DIMS = 17, 64


def digits_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (N, 64) grey levels k/16, 1,500 train / 297 test by a fixed permutation."""
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    return x[perm[:1500]], x[perm[1500:]]


class VgmFlow:
    """A vgm flow model on the 64-vectors: log p(y) of dequantized y (logit inside the model's flow)."""

    def __init__(self, kind: str, **cfg):
        self.model = vgm.MODELS[kind](input_shape=(DIMS,), levels=LEVELS, **cfg)

    def log_prob_y(self, y: torch.Tensor) -> torch.Tensor:
        return self.model.flow.log_prob(y)


class ZukoFlow:
    """A zuko flow on y itself, or on logit(α + (1 − 2α) y) with the logit's log|det| added (the input vgm sees)."""

    def __init__(self, kind: str, logit: bool, **cfg):
        import zuko
        self.model = getattr(zuko.flows, kind)(features=DIMS, **cfg)
        self.logit = Logit(0.05) if logit else None

    def log_prob_y(self, y: torch.Tensor) -> torch.Tensor:
        if self.logit is None:
            return self.model().log_prob(y)
        z, ld = self.logit(y)
        return self.model().log_prob(z) + ld


FLOWS = {
    "vgm-nsf-ar": lambda: VgmFlow("nsf", autoregressive=True, depth=5, hidden=256),
    "vgm-nsf-ar-drop": lambda: VgmFlow("nsf", autoregressive=True, depth=5, hidden=256, dropout=0.2),
    "vgm-nsf-ar-128": lambda: VgmFlow("nsf", autoregressive=True, depth=5, hidden=128),
    "vgm-nsf": lambda: VgmFlow("nsf", depth=5, hidden=256),
    "vgm-maf": lambda: VgmFlow("maf", depth=5, hidden=256),
    "zuko-nsf-logit": lambda: ZukoFlow("NSF", True, transforms=5, hidden_features=(256, 256)),
    "zuko-nsf": lambda: ZukoFlow("NSF", False, transforms=5, hidden_features=(256, 256)),
    "zuko-nsf-res": lambda: ZukoFlow("NSF", False, transforms=5, hidden_features=(256, 256), residual=True),
    "zuko-nsf-res-logit": lambda: ZukoFlow("NSF", True, transforms=5, hidden_features=(256, 256), residual=True),
    "zuko-maf-logit": lambda: ZukoFlow("MAF", True, transforms=5, hidden_features=(256, 256)),
    "zuko-maf": lambda: ZukoFlow("MAF", False, transforms=5, hidden_features=(256, 256)),
}


@torch.no_grad()
def test_bits_per_dim(flow, x: torch.Tensor, draws: int = 10) -> float:
    """Mean over `draws` noise draws (seeds 0..draws−1) of the test bits/dim on the discrete scale."""
    flow.model.eval()
    out = []
    for d in range(draws):
        u = torch.rand(x.shape, generator=torch.Generator().manual_seed(d))
        lp = flow.log_prob_y(dequantize(x, LEVELS, u)).mean().item() + log_scale(LEVELS, DIMS)
        out.append(-lp / (DIMS * math.log(2)))
    return float(np.mean(out))


def train(flow, x: torch.Tensor, budget_s: float, batch_size: int, lr: float, seed: int,
          test_x: torch.Tensor | None = None, every_s: float = 0.0) -> dict:
    """Adam until budget_s CPU seconds of steps; with every_s > 0, the test bits/dim (one noise draw, outside the
    budget) every every_s CPU seconds, to see when a flow starts to overfit."""
    params = list(flow.model.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    seen, steps, cpu, next_look, curve = 0, 0, 0.0, every_s, []
    flow.model.train()
    while cpu < budget_s:
        for xb in x[torch.randperm(len(x), generator=gen)].split(batch_size):
            t0 = time.process_time()
            loss = -flow.log_prob_y(dequantize(xb, LEVELS)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            cpu += time.process_time() - t0
            seen, steps = seen + len(xb), steps + 1
            if every_s and cpu >= next_look:
                curve.append((round(cpu), round(test_bits_per_dim(flow, test_x, draws=1), 3)))
                flow.model.train()
                next_look += every_s
            if cpu >= budget_s:
                break
    out = {"train_cpu_s": round(cpu, 1), "steps": steps, "epochs": round(seen / len(x), 1),
           "examples_per_cpu_s": round(seen / cpu, 1)}
    return {**out, "test_curve": curve} if curve else out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, default=120.0, help="training CPU seconds per flow")
    p.add_argument("--flows", default=",".join(FLOWS), help="comma-separated subset of " + ",".join(FLOWS))
    p.add_argument("--seeds", default="0", help="comma-separated seeds (initialisation, shuffling, noise)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--curve-every-s", type=float, default=0.0,
                   help="also print the test bits/dim (one noise draw) every this many training CPU seconds")
    a = p.parse_args()
    train_x, test_x = digits_split()
    print(f"digits: {len(train_x)} train / {len(test_x)} test, {LEVELS} levels, {torch.get_num_threads()} threads, "
          f"{a.budget_s:g} CPU-s per flow", flush=True)
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        for name in a.flows.split(","):
            torch.manual_seed(seed)
            flow = FLOWS[name]()
            row = {"flow": name, "seed": seed, "params": sum(q.numel() for q in flow.model.parameters()),
                   **train(flow, train_x, a.budget_s, a.batch_size, a.lr, seed, test_x, a.curve_every_s)}
            row["test_bits_per_dim"] = round(test_bits_per_dim(flow, test_x), 4)
            rows.append(row)
            print(f"{name:15s} seed {seed}  {row['params']:>9,} params  {row['examples_per_cpu_s']:8.0f} ex/CPU-s  "
                  f"{row['epochs']:7.1f} epochs  test {row['test_bits_per_dim']:.4f} bits/dim"
                  + (f"  curve {row['test_curve']}" if "test_curve" in row else ""), flush=True)
    print(json.dumps({"budget_s": a.budget_s, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
