"""Time of the importance-weighted log p(x) estimate (K = 5000) on the 2,000 mnist10k test digits, beside its floor.

The floor is the time of the decoder's matrix products alone, measured in the same run: the three products of
the 784-512-256-z32 decoder on exactly the shapes the evaluation decodes (chunks of s samples x 500 digits),
with the model's own weight matrices and preallocated outputs, and nothing else. Batches of the evaluation
and of the floor alternate, so load from other processes hits both alike; the ratio is what to compare
across machines (the goal is at most 1.25).

The model is the trained run given by --run, else a VAE trained here for --epochs epochs (the cost does not
depend on how well it is trained; its log p(x) does). On a machine shared with other work, --threads 1
--clock cpu times both sides by this process's CPU time, which other processes' load does not inflate.

    python benchmarks/iwae_eval.py --data-dir ../shared/data/mnist10k [--run runs/mnist-vae] [-k 5000]
"""
from __future__ import annotations

import argparse
import inspect
import os
import resource
import time

import torch

import vgm
from vgm.data import load as load_data
from vgm.elbo import log_px
from vgm.train import TrainConfig, fit


def decoder_weights(model) -> list[torch.Tensor]:
    """The weight matrices (out, in) of an MLP decoder's linear layers, in order."""
    return [m.weight.detach() for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]


def chunk_samples(k: int, n: int, dims: int) -> int:
    """Samples per decoder call that log_px uses for a batch of n examples of `dims` values (its default chunking)."""
    max_elements = inspect.signature(log_px).parameters["max_elements"].default
    return max(1, min(k, max_elements // (dims * n)))


def floor_seconds(weights: list[torch.Tensor], rows: list[int], clock=time.perf_counter) -> float:
    """Time of the products h_i @ W_iᵀ alone for decoder calls of the given numbers of rows."""
    big = max(rows)
    ins = [torch.rand(big, w.shape[1]) for w in weights]
    outs = [torch.empty(big, w.shape[0]) for w in weights]
    for a, w, o in zip(ins, weights, outs):       # warm up (first-touch of the buffers, library init)
        torch.mm(a, w.T, out=o)
    t0 = clock()
    for r in rows:
        for a, w, o in zip(ins, weights, outs):
            torch.mm(a[:r], w.T, out=o[:r])
    return clock() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("VGM_DATA_DIR", "../shared/data/mnist10k"))
    ap.add_argument("--run", default=None, help="a trained 784-512-256-z32 MLP VAE run folder")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of training when no --run is given")
    ap.add_argument("-k", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=2000, help="test digits evaluated (the first n)")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this process's CPU time (meaningful with --threads 1)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    data = load_data("mnist", a.data_dir, binarize="dynamic")
    if a.run:
        model = vgm.load(a.run)
    else:
        torch.manual_seed(0)
        model = vgm.VAE(input_shape=(1, 28, 28), latent_dim=32, hidden=(512, 256))
        t0 = time.perf_counter()
        fit(model, data, TrainConfig(epochs=a.epochs, batch_size=128, device="cpu"), progress=False)
        print(f"trained a 784-512-256-z32 VAE for {a.epochs} epochs in {time.perf_counter() - t0:.0f} s")
    model.eval()
    weights = decoder_weights(model)
    x = data.test[:a.n_test]
    n, dims = x.shape[0], x[0].numel()
    flops = 2 * a.k * n * sum(w.numel() for w in weights)
    torch.manual_seed(0)
    t_eval = t_floor = 0.0
    faults = 0
    sums = {"log_px": 0.0, "elbo": 0.0}
    for i in range(0, n, a.batch_size):
        xb = x[i:i + a.batch_size]
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, clock()
        res = vgm.evaluate(model, xb, iw_samples=a.k, batch_size=a.batch_size)
        t_eval += clock() - t0
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        for key in sums:
            sums[key] += res[key] * xb.shape[0]
        s = chunk_samples(a.k, xb.shape[0], dims)
        t_floor += floor_seconds(weights, [min(s, a.k - d) * xb.shape[0] for d in range(0, a.k, s)], clock)
    print(f"K={a.k} on {n} test digits, batches of {a.batch_size} ({a.threads} threads, torch {torch.__version__}, "
          f"{a.clock} clock): log_px {sums['log_px'] / n:.2f} nats, ELBO {sums['elbo'] / n:.2f}")
    print(f"evaluation {t_eval:.1f} s ({faults} page faults)   floor (decoder products alone, "
          f"{flops / 1e12:.2f} TFLOP at {flops / t_floor / 1e9:.0f} GFLOP/s) {t_floor:.1f} s   "
          f"ratio {t_eval / t_floor:.2f}")


if __name__ == "__main__":
    main()
