"""Glow on real colour photographs: 32x32 patches of scikit-learn's two sample photos (shipped with it, no
download), bits/dim on the 8-bit scale, and samples at three temperatures beside real test patches.

The test patches come from a band of rows across the middle of each photo (rows 192-287, stride 16) and the
training patches from the rows above and below it (stride 8), so no test pixel is seen in training.

    python benchmarks/photo_flow.py --epochs 30 --out runs/glow-photos --figure docs/glow_photos.png
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def patches(path: Path) -> tuple[int, int]:
    """Write the train / test patches as an .npz (uint8, N x 32 x 32 x 3); return their counts."""
    from sklearn.datasets import load_sample_images

    def cut(im, r0: int, r1: int, stride: int) -> list[np.ndarray]:
        return [im[i:i + 32, j:j + 32] for i in range(r0, r1 - 31, stride) for j in range(0, im.shape[1] - 31, stride)]

    train, test = [], []
    for im in load_sample_images().images:
        train += cut(im, 0, 192, 8) + cut(im, 288, im.shape[0], 8)
        test += cut(im, 192, 288, 16)
    train, test = np.stack(train).astype(np.uint8), np.stack(test).astype(np.uint8)
    np.savez(path, train=train, test=test)
    return len(train), len(test)


def figure(run: Path, path: Path, seed: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import vgm
    from vgm.plots import grid
    from vgm.run import checked_split, run_data

    model = vgm.load(run)
    test = checked_split(model, run_data(run, None)[1], "test")
    real = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:64]]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), layout="tight")
    axes[0].imshow(grid(real, 8))
    axes[0].set_title("test patches (held-out band)", fontsize=9)
    for ax, t in zip(axes[1:], (0.5, 0.7, 1.0)):
        torch.manual_seed(seed)
        ax.imshow(grid(model.sample(64, temperature=t).clamp(0, 1), 8))
        ax.set_title(f"glow samples, T = {t}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/glow-photos"))
    p.add_argument("--figure", type=Path, default=None, help="PNG of test patches and samples at T = 0.5, 0.7, 1")
    p.add_argument("--figure-only", action="store_true", help="draw the figure from the run in --out")
    a = p.parse_args()
    if not a.figure_only:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        data = a.out.parent / "photo_patches.npz"
        n_train, n_test = patches(data)
        print(f"{n_train} training and {n_test} test patches in {data}", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vgm", "train", "glow", "--data", str(data), "--epochs", str(a.epochs),
                        "--batch-size", str(a.batch_size), "--seed", str(a.seed), "--out", str(a.out), "--force",
                        "--quiet"], check=True)
        print(f"trained in {time.perf_counter() - t0:.0f} s", flush=True)
        subprocess.run([sys.executable, "-m", "vgm", "evaluate", str(a.out)], check=True)
    if a.figure:
        figure(a.out, a.figure, a.seed)
        print(f"wrote {a.figure}")


if __name__ == "__main__":
    main()
