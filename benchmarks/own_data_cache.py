"""Image folders larger than memory: decoding once into the uint8 cache, and training from it with DataLoader workers.

Builds a synthetic folder of 64x64 RGB PNGs (smooth random colour fields with a shape on them; 100,000 of them
take a few minutes and about 0.6 GB; files already there are kept), then, for each size, in a fresh process:
  cache build   images/s decoding the folder into the cache (vgm.data.load with memory_limit=0)
  read pass     images/s reading every split once through vgm.data.loader (workers), no training
  peak RSS      of that process (build, read pass and training together) and of its largest worker
and, on the smallest size, training examples/s of vgm.VAE(arch='conv', input_shape=(3, 64, 64),
likelihood='bernoulli') from the cache through the loader vs from the same training split held in memory as a float
tensor (rounds interleaved, medians, so load from other processes hits both alike). Goals: throughput from the cache
>= 80% of in memory; peak RSS flat in the number of images and below 1 GB while 100,000 decoded images are 1.2 GB.

    python benchmarks/own_data_cache.py                                   # 25,000, 50,000, 100,000 (slow)
    python benchmarks/own_data_cache.py --sizes 5000,10000,20000 --steps 5 --rounds 4
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

SIDE = 64


def synthetic_png(args: tuple[Path, int]) -> None:
    """Image i: an 8x8 random colour field upsampled to 64x64 with an ellipse on it (PNG-compressible, like photos)."""
    from PIL import Image, ImageDraw

    path, i = args
    if path.exists():
        return
    rng = np.random.default_rng(i)
    img = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize((SIDE, SIDE), Image.BILINEAR)
    x0, y0 = rng.integers(0, SIDE // 2, 2)
    w, h = rng.integers(8, SIDE // 2, 2)
    ImageDraw.Draw(img).ellipse((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img.save(path)


def make_folders(root: Path, sizes: list[int], workers: int) -> dict[int, Path]:
    """root/all/NNNNNN.png for the largest size, and root/nSIZE/ holding hard links to the first SIZE of them."""
    everything = root / "all"
    everything.mkdir(parents=True, exist_ok=True)
    n = max(sizes)
    todo = [(everything / f"{i:06d}.png", i) for i in range(n) if not (everything / f"{i:06d}.png").exists()]
    if todo:
        print(f"writing {len(todo):,} synthetic {SIDE}x{SIDE} PNGs into {everything} (this takes a while)", flush=True)
        t = time.perf_counter()
        with Pool(max(1, workers)) as pool:
            pool.map(synthetic_png, todo, chunksize=256)
        print(f"  {len(todo) / (time.perf_counter() - t):,.0f} PNGs/s", flush=True)
    out = {}
    for size in sizes:
        folder = root / f"n{size}"
        if not folder.is_dir() or len(os.listdir(folder)) != size:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            for i in range(size):
                os.link(everything / f"{i:06d}.png", folder / f"{i:06d}.png")
        out[size] = folder
    return out


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory (MB) of this process and of its largest finished child (Linux: ru_maxrss in KB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024, kids / 1024


def conv_vae():
    import vgm
    return vgm.VAE(arch="conv", input_shape=(3, SIDE, SIDE), likelihood="bernoulli")


def train_steps(model, opt, batches, steps: int) -> float:
    """examples/s over `steps` optimiser steps on the batches an iterator yields."""
    t, n = time.perf_counter(), 0
    for _ in range(steps):
        x = next(batches)
        loss = model.loss(x)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(x)
    return n / (time.perf_counter() - t)


def forever(make):
    """Batches from make() epoch after epoch (a fresh pass when one ends)."""
    while True:
        yield from make()


def child_size(folder: Path, cache: Path, workers: int, batch: int) -> dict:
    """Build the cache for `folder`, read every split once through the loader; report speeds and peak RSS."""
    import torch
    from vgm.data import load, loader

    t = time.perf_counter()
    s = load(str(folder), memory_limit=0, cache_dir=str(cache), workers=workers)
    build = time.perf_counter() - t
    n = len(s.train) + len(s.val) + len(s.test)
    t, seen = time.perf_counter(), 0
    for split in (s.train, s.val, s.test):
        for x in loader(split, batch, torch.Generator().manual_seed(0), workers=workers):
            seen += len(x)
    read = time.perf_counter() - t
    assert seen == n and s.streamed
    own, kids = peak_rss_mb()
    decoded = n * 3 * SIDE * SIDE / 2**30
    return {"images": n, "decoded_gib": decoded, "build_images_per_s": n / build, "read_images_per_s": n / read,
            "peak_rss_mb": own, "peak_worker_rss_mb": kids}


def child_compare(folder: Path, cache: Path, workers: int, batch: int, steps: int, rounds: int) -> dict:
    """Training examples/s from the cache (loader, workers) vs the same training split in memory, interleaved."""
    import torch
    from vgm.data import load, loader

    s = load(str(folder), memory_limit=0, cache_dir=str(cache), workers=workers)     # the cache built before
    memory = s.train[torch.arange(len(s.train))]                                      # the same images, as floats
    g_mem, g_disk = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)

    def in_memory():
        perm = torch.randperm(len(memory), generator=g_mem)
        for i in range(0, len(memory), batch):
            yield memory[perm[i:i + batch]]

    streamed = loader(s.train, batch, g_disk, workers=workers)
    torch.manual_seed(0)
    model = conv_vae()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mem_it, disk_it = forever(in_memory), forever(lambda: iter(streamed))
    train_steps(model, opt, mem_it, 2)                  # warm-up: allocator, worker start
    train_steps(model, opt, disk_it, 2)
    rates = {"memory": [], "cache": []}
    for _ in range(rounds):
        rates["memory"].append(train_steps(model, opt, mem_it, steps))
        rates["cache"].append(train_steps(model, opt, disk_it, steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"train_images": len(memory), "memory_examples_per_s": med["memory"],
            "cache_examples_per_s": med["cache"], "ratio": med["cache"] / med["memory"], "rounds": rates}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"child {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="25000,50000,100000", help="numbers of images, comma-separated")
    p.add_argument("--root", default="/tmp/vgm-own-data-bench", help="where the PNG folders and caches go")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (decoding and training)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of memory vs cache training")
    p.add_argument("--child", choices=("size", "compare"), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    a = p.parse_args()
    root = Path(a.root)
    if a.child:
        cache = root / "cache"
        res = (child_size(Path(a.folder), cache, a.workers, a.batch_size) if a.child == "size" else
               child_compare(Path(a.folder), cache, a.workers, a.batch_size, a.steps, a.rounds))
        print(json.dumps(res))
        return
    sizes = sorted(int(v) for v in a.sizes.split(","))
    folders = make_folders(root, sizes, a.workers)
    shutil.rmtree(root / "cache", ignore_errors=True)          # every size builds its cache from scratch
    common = ["--root", a.root, "--workers", str(a.workers), "--batch-size", str(a.batch_size)]
    print(f"{'images':>8} {'decoded':>9} {'cache build':>13} {'read pass':>12} {'peak RSS':>9} {'worker RSS':>11}")
    for size in sizes:
        r = run_child("--child", "size", "--folder", str(folders[size]), *common)
        print(f"{r['images']:>8,} {r['decoded_gib']:>7.2f}GiB {r['build_images_per_s']:>8,.0f} img/s "
              f"{r['read_images_per_s']:>7,.0f} img/s {r['peak_rss_mb']:>6,.0f} MB {r['peak_worker_rss_mb']:>8,.0f} MB",
              flush=True)
    small = sizes[0]
    r = run_child("--child", "compare", "--folder", str(folders[small]), *common, "--steps", str(a.steps),
                  "--rounds", str(a.rounds))
    print(f"conv VAE training on the {r['train_images']:,} training images of n={small:,}, batch {a.batch_size}, "
          f"{a.workers} workers, medians of {a.rounds} rounds of {a.steps} steps:")
    print(f"  in memory   {r['memory_examples_per_s']:8.1f} examples/s")
    print(f"  from cache  {r['cache_examples_per_s']:8.1f} examples/s   ({100 * r['ratio']:.0f}% of in memory; goal >= 80%)")
    shutil.rmtree(root / "cache", ignore_errors=True)


if __name__ == "__main__":
    main()
