"""Shared fixtures: small IDX folders written on the fly, the real MNIST subset when present, a CLI runner."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST10K = Path(os.environ.get("VGM_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist10k"))


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    """Write an array in the IDX format (the inverse of vgm.data.read_idx)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D}
    arr = np.ascontiguousarray(arr.astype(">f4") if arr.dtype.kind == "f" else arr.astype(np.uint8))
    head = bytes([0, 0, codes[arr.dtype], arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = head + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_mnist_folder(folder: Path, n_train=300, n_test=100, side=28, seed=0, gz=True) -> Path:
    """An MNIST-layout folder of random blob images (uint8) with labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = (rng.random((n, side, side)) ** 3 * 255).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", imgs, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n).astype(np.uint8), gz)
    return folder


@pytest.fixture
def mnist10k() -> Path:
    if not (MNIST10K / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST subset not found at {MNIST10K} (it lives in ../shared/data/mnist10k on the "
                    "team's machines; set VGM_TEST_MNIST to an MNIST-layout folder to run this test)")
    return MNIST10K


def run_cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run `python -m vgm.cli ARGS` in a subprocess, capturing output."""
    e = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "vgm.cli", *map(str, args)], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium_or_skip() -> Path:
    """Debian's chromium + chromedriver, installed with apt-get when absent (as root), and selenium; else the
    calling test skips, saying why."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing and cannot be installed here (needs root and "
                        "apt-get): apt-get install chromium chromium-driver")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
        r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:     # stale or missing package lists: refresh once and retry
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
            r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
        if r.returncode != 0 or not CHROMEDRIVER.exists():
            pytest.skip(f"could not install chromium with apt-get: {(r.stderr or r.stdout).strip()[-300:]}")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    return CHROMIUM


@pytest.fixture(scope="session")
def png_folder(tmp_path_factory):
    """scikit-learn's digits as 8-bit PNGs in class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits
    root = tmp_path_factory.mktemp("pngs") / "digits"
    d = load_digits()
    for i, (img, y) in enumerate(zip(d.images[:600], d.target[:600])):
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 255 / 16).astype(np.uint8)).save(root / str(y) / f"{i:04d}.png")
    return root
