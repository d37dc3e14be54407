"""Training throughput with more processes and on a GPU, beside a bare PyTorch loop measured in the same run.

    python benchmarks/distributed.py --data-dir ../shared/data/mnist10k [--epochs 4] [--batch-size 256] [--arch conv]

Rows (examples per second: training examples over the epoch's training wall time; median epoch, then the median
of --rounds interleaved rounds):
  bare loop, 1 process x T threads      a hand-written Adam loop over the same vgm.VAE, data in memory
  vgm train, 1 process x T threads      the CLI's trainer (threads = the machine's cores, T)
  vgm train, 1 process x 1 thread
  vgm train, W processes x 1 thread     torchrun + DDP on gloo, the same global batch
  bare DDP loop, 1 and W processes      the bare loop under torchrun + DistributedDataParallel: the floor
and where CUDA is available: the bare loop and `vgm train` on the GPU in fp32, bf16 and compiled.
The model is the README's MNIST VAE: MLP 784-512-256, z = 32, Bernoulli decoder, dynamic binarisation; with
--arch conv, vgm's convolutional VAE (two stride-2 convolutions, 32 and 64 channels, then 256 units): about 4x the
arithmetic per parameter, so its gradient all-reduce weighs less against its compute.
The bare loops step the trainer's optimizer (torch's fused Adam), and their DDP settings are vgm's (no buffer
broadcast, gradients as bucket views); the bare DDP loop drops a last partial batch and counts only what it trains.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import vgm

HIDDEN = {"mlp": (512, 256), "conv": (256,)}


def model_args(arch: str) -> list[str]:
    return ["--arch", arch, "--latent-dim", "32", "--hidden", ",".join(map(str, HIDDEN[arch])),
            "--binarize", "dynamic"]


def make_model(arch: str) -> vgm.VAE:
    return vgm.VAE(input_shape=(1, 28, 28), latent_dim=32, hidden=HIDDEN[arch], arch=arch)


def cli_throughput(args: list[str], env: dict, nproc: int = 1) -> float:
    """Median training examples/s over the epochs of a `vgm train` run (epoch seconds, validation included)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        head = [sys.executable, "-m", "vgm"] if nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "vgm"]
        r = subprocess.run([*head, "train", "vae", *args, "--quiet", "--out", str(out)], capture_output=True,
                           text=True, env={**os.environ, **env})
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        n = len(vgm.load_data("mnist", data_dir=args[args.index("--data-dir") + 1]).train)
        return statistics.median(n / r["train_seconds"] if "train_seconds" in r else n / r["seconds"] for r in rows)


def bare_throughput(data, epochs: int, batch: int, device: str, arch: str, dtype=None, compile_: bool = False) -> float:
    """A plain Adam loop over vgm.VAE.loss: shuffle, dynamic binarisation, step; examples/s (median epoch)."""
    torch.manual_seed(0)
    model = make_model(arch).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x = data.train.to(device)
    step = torch.compile(model.loss) if compile_ else model.loss
    rates = []
    for _ in range(epochs):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        xs = torch.bernoulli(x[torch.randperm(len(x), device=device)])
        for i in range(0, len(xs), batch):
            with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = step(xs[i:i + batch])["loss"].float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(len(xs) / (time.perf_counter() - t0))
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def bare_ddp_throughput(data_dir: str, epochs: int, batch: int, nproc: int, arch: str) -> float:
    """The bare loop under torchrun: DistributedDataParallel over the same vgm.VAE, each rank its share of every
    global batch (weighted as vgm weights it), 1 thread per process; rank 0's median epoch (examples/s)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rate"
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                            __file__, "--data-dir", data_dir, "--epochs", str(epochs), "--batch-size", str(batch),
                            "--arch", arch, "--bare-ddp-worker", str(out)], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        return float(out.read_text())


def bare_ddp_worker(data_dir: str, epochs: int, batch: int, arch: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from vgm.train import Objective             # model.loss as a module's forward, the one DDP wraps
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    x = vgm.load_data("mnist", data_dir=data_dir).train
    torch.manual_seed(0)
    model = make_model(arch)
    step = DistributedDataParallel(Objective(model), forward_sync_buffers=False, gradient_as_bucket_view=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    share = batch // world
    rates = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        xs = torch.bernoulli(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))])
        for i in range(0, len(xs) - len(xs) % batch, batch):
            loss = step(xs[i + rank * share:i + (rank + 1) * share])["loss"].sum() * (world / batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rates.append(len(xs) // batch * batch / (time.perf_counter() - t0))     # the examples it trained on
    if rank == 0:
        Path(out).write_text(str(statistics.median(rates[1:] if len(rates) > 1 else rates)))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--bare-ddp-worker", default=None, help=argparse.SUPPRESS)     # internal: one torchrun rank
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--arch", choices=sorted(HIDDEN), default="mlp")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the CPU rows (medians reported)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--gpu-batch-size", type=int, default=1024)
    p.add_argument("--gpu-only", action="store_true", help="skip the CPU rows")
    a = p.parse_args()
    if a.bare_ddp_worker:
        return bare_ddp_worker(a.data_dir, a.epochs, a.batch_size, a.arch, a.bare_ddp_worker)
    cores = os.cpu_count() or 1
    data = vgm.load_data("mnist", data_dir=a.data_dir)
    common = ["--data", "mnist", "--data-dir", a.data_dir, *model_args(a.arch), "--epochs", str(a.epochs),
              "--batch-size", str(a.batch_size), "--device", "cpu"]
    name = "MLP VAE 784-512-256-32" if a.arch == "mlp" else "conv VAE 32-64 channels, 256, z 32"
    n_params = sum(p.numel() for p in make_model(a.arch).parameters())
    print(f"MNIST {name}, {n_params:,} parameters, batch {a.batch_size}, {len(data.train)} training digits, "
          f"median of {a.epochs} epochs; {cores} cores; torch {torch.__version__}", flush=True)
    print(f"{'setting':<52} {'examples/s':>12}", flush=True)
    row = lambda name, v: print(f"{name:<52} {v:12,.0f}", flush=True)
    if not a.gpu_only:
        torch.set_num_threads(cores)
        one_thread = {"OMP_NUM_THREADS": "1"}
        rows = {   # measured in interleaved rounds, so that a burst of load from elsewhere hits every row alike
            f"bare loop, 1 process x {cores} threads (CPU)":
                lambda: bare_throughput(data, a.epochs, a.batch_size, "cpu", a.arch),
            f"vgm train, 1 process x {cores} threads (CPU)":
                lambda: cli_throughput(common, {"OMP_NUM_THREADS": str(cores)}),
            "vgm train, 1 process x 1 thread (CPU)": lambda: cli_throughput(common, one_thread),
            f"vgm train, {a.procs} processes x 1 thread (CPU, gloo)":
                lambda: cli_throughput(common, one_thread, nproc=a.procs),
            "bare DDP loop, 1 process x 1 thread (CPU, gloo)":
                lambda: bare_ddp_throughput(a.data_dir, a.epochs, a.batch_size, 1, a.arch),
            f"bare DDP loop, {a.procs} processes x 1 thread (CPU, gloo)":
                lambda: bare_ddp_throughput(a.data_dir, a.epochs, a.batch_size, a.procs, a.arch),
        }
        got: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(a.rounds):
            for name, measure in rows.items():
                got[name].append(measure())
        med = [statistics.median(v) for v in got.values()]
        for name, v in zip(rows, med):
            row(name, v)
        _, _, one, many, bare_one, bare_many = med
        print(f"{a.procs} processes / 1 process (1 thread each): vgm {many / one:.2f}x, bare DDP loop "
              f"{bare_many / bare_one:.2f}x; vgm / bare with {a.procs} processes: {many / bare_many:.2f} "
              f"(medians of {a.rounds} rounds)", flush=True)
    if torch.cuda.is_available():
        gpu = [*common[:-2], "--device", "cuda", "--batch-size", str(a.gpu_batch_size)]
        print(f"GPU: {torch.cuda.get_device_name()}, batch {a.gpu_batch_size}", flush=True)
        row("bare loop, GPU fp32", bare_throughput(data, a.epochs, a.gpu_batch_size, "cuda", a.arch))
        row("vgm train, GPU fp32", cli_throughput(gpu, {}))
        row("bare loop, GPU bf16", bare_throughput(data, a.epochs, a.gpu_batch_size, "cuda", a.arch, torch.bfloat16))
        row("vgm train, GPU bf16", cli_throughput([*gpu, "--precision", "bf16"], {}))
        row("vgm train, GPU fp32 compiled", cli_throughput([*gpu, "--compile"], {}))


if __name__ == "__main__":
    main()
