"""Speed of the sequence VAEs on the CPU: training steps per second and importance-weighted evaluation throughput.

    python benchmarks/sequences.py [--threads 1] [--steps 50]

Prints, for seqvae (GRU and LSTM) and vrnn on the census names (batch 128) and on co2 windows (52 steps):
milliseconds per training step (forward + backward + Adam), and sequences x samples per second of log_px.
"""
from __future__ import annotations

import argparse
import time

import torch

import vgm  # noqa: F401
from vgm.data import load as load_data
from vgm.models.seqvae import SeqVAE
from vgm.models.vrnn import VRNN

KEYS = ("likelihood", "alphabet", "input_dim", "max_len")


def step_ms(model, x: torch.Tensor, steps: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        loss = model.loss(x)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return 1000 * (time.perf_counter() - t0) / steps


def iw_rate(model, x: torch.Tensor, k: int) -> float:
    model.eval()
    t0 = time.perf_counter()
    model.log_px(x, k)
    return x.shape[0] * k / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=50)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), batch 128, hidden 128, latent 16")
    print(f"{'data':<6} {'model':<12} {'ms/step':>8} {'IW seq-samples/s':>17}")
    for name in ("names", "co2"):
        data = load_data(name)
        x = data.train[:128]
        for label, cls, kw in (("seqvae-gru", SeqVAE, {}), ("seqvae-lstm", SeqVAE, {"cell": "lstm"}),
                               ("vrnn", VRNN, {})):
            torch.manual_seed(0)
            model = cls(cls.Config(**{k: data.meta[k] for k in KEYS}, **kw))
            ms = step_ms(model, x, a.steps)
            rate = iw_rate(model, data.test[:100], 100)
            print(f"{name:<6} {label:<12} {ms:8.1f} {rate:17,.0f}")


if __name__ == "__main__":
    main()
