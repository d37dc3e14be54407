"""dSprites (Matthey et al., 2017), generated: 2D shapes rendered on the fly from their five factors.

Factors, in the original order and sizes (737,280 combinations):
    shape        3   square, ellipse, heart
    scale        6   linspace(0.5, 1, 6)
    orientation 40   linspace(0, 2π, 40)   (both ends included, as in the original: 0 and 2π draw the same image)
    pos_x       32   linspace(0, 1, 32)
    pos_y       32   linspace(0, 1, 32)
index = Σ factor index × stride, strides (245760, 40960, 1024, 32, 1), as in the original file.

Nothing is stored: `images(factors)` draws binary images (a pixel is on when its centre falls inside the
shape), vectorised over the whole batch, so the same factors always give the same image. The geometry (sprite
size, margins, ellipse and heart outlines) is our own, close to but not pixel-identical with the original.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .splits import SPLIT_SEED, Splits, image_splits
from ..errors import VgmError
from ..registry import register_dataset

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SIZE_ENV = "VGM_DSPRITES_SIZE"     # number of grid points drawn for the registered datasets
HALF = 0.15                        # half side of the square at scale 1, as a fraction of the image side
LO, HI = 0.22, 0.78                # sprite centres span [LO, HI] of the image as pos goes 0 -> 1
REACH = 1.5 * HALF                 # no shape reaches further than this from its centre (square: √2·HALF)


class DSprites:
    """The factor grid at one resolution (64 as in the original, or 32 for cheap CPU runs)."""

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES

    def __init__(self, resolution: int = 64):
        if resolution < 8:
            raise VgmError(f"dSprites resolution must be >= 8, got {resolution}")
        self.resolution = resolution
        self.values = (np.arange(3), np.linspace(0.5, 1.0, 6), np.linspace(0.0, 2 * math.pi, 40),
                       np.linspace(0.0, 1.0, 32), np.linspace(0.0, 1.0, 32))
        self.strides = np.array([int(np.prod(FACTOR_SIZES[i + 1:])) for i in range(5)], dtype=np.int64)

    def __len__(self) -> int:
        return int(np.prod(FACTOR_SIZES))

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor index vectors (n, 5), each factor uniform over its values."""
        return np.stack([rng.integers(0, s, size=n) for s in FACTOR_SIZES], axis=1).astype(np.int64)

    def index(self, factors: np.ndarray) -> np.ndarray:
        return self.check(factors) @ self.strides

    def factors(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise VgmError(f"dSprites indices must lie in [0, {len(self)})")
        return np.stack([(index // s) % n for s, n in zip(self.strides, FACTOR_SIZES)], axis=-1)

    def check(self, factors: np.ndarray) -> np.ndarray:
        f = np.asarray(factors)
        if f.ndim != 2 or f.shape[1] != 5 or not np.issubdtype(f.dtype, np.integer):
            raise VgmError(f"dSprites factors must be integer indices of shape (N, 5), got {f.dtype} {f.shape}")
        if f.size and ((f < 0).any() or (f >= np.array(FACTOR_SIZES)).any()):
            raise VgmError(f"dSprites factor indices out of range (sizes {FACTOR_SIZES})")
        return f.astype(np.int64)

    def images(self, factors: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """Binary float32 images (N, 1, R, R) of the given factor indices (N, 5)."""
        f = self.check(factors)
        out = np.empty((len(f), 1, self.resolution, self.resolution), dtype=np.float32)
        for i in range(0, len(f), chunk):
            out[i:i + chunk, 0] = self._render(f[i:i + chunk])
        return out

    def _render(self, f: np.ndarray) -> np.ndarray:
        """Draw on a window of side b around each sprite (a fifth of the pixels), then place it in the image."""
        res, n = self.resolution, len(f)
        val = lambda i: self.values[i].astype(np.float32)[f[:, i]]
        scale, theta = val(1), val(2)
        cx, cy = LO + (HI - LO) * val(3), LO + (HI - LO) * val(4)
        b = min(res, math.ceil(2 * REACH * res) + 2)
        ox = np.clip(np.floor((cx - REACH) * res).astype(np.int64), 0, res - b)   # window corner, in pixels
        oy = np.clip(np.floor((cy - REACH) * res).astype(np.int64), 0, res - b)
        k = np.arange(b)
        col = lambda a: a[:, None, None]
        rows, cols = col(oy) + k[None, :, None], col(ox) + k[None, None, :]     # (n, b, 1), (n, 1, b)
        dx = ((cols + 0.5) / res).astype(np.float32) - col(cx)                  # offsets from the sprite centre
        dy = ((rows + 0.5) / res).astype(np.float32) - col(cy)
        c, s, r = col(np.cos(theta)), col(np.sin(theta)), col(HALF * scale)
        u = (c * dx + s * dy) / r                                # sprite frame: rotated by −θ, unit half-size
        v = (c * dy - s * dx) / r
        inside = np.empty((n, b, b), dtype=bool)
        for i, test in enumerate((square, ellipse, heart)):
            m = f[:, 0] == i
            if m.any():
                inside[m] = test(u[m], v[m])
        out = np.zeros((n, res, res), dtype=np.float32)
        out[np.arange(n)[:, None, None], rows, cols] = inside
        return out


def square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u / 1.15) ** 2 + (v / 0.55) ** 2 <= 1.0


def heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The heart curve (x² + y² − 1)³ ≤ x² y³, pointing down."""
    x, y = 1.1 * u, 0.12 - 1.1 * v
    r2 = x * x + y * y - 1
    return r2 * r2 * r2 <= x * x * y * y * y


def dsprites_splits(n: int, resolution: int = 64, binarize: str = "none", val_fraction: float = 0.1,
                    test_fraction: float = 0.1, seed: int = SPLIT_SEED) -> Splits:
    """A fixed sample of n distinct grid points (by `seed`), split into train / val / test.

    Labels are the factor indices (N, 5); meta holds levels = 2 (the images are binary, so flows dequantize them
    onto 2 grey levels), the factor names and sizes, the resolution, and dataset_size (the number of training
    images, which the β-TCVAE's estimator needs).
    """
    if not 10 <= n <= 737280:
        raise VgmError(f"the dSprites sample size must be between 10 and 737280, got {n}")
    grid = DSprites(resolution)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(grid), size=n, replace=False)
    f = grid.factors(idx)
    n_test = max(1, int(round(test_fraction * n)))
    x = grid.images(f)
    s = image_splits(x[n_test:], f[n_test:], x[:n_test], f[:n_test], binarize, val_fraction,
                     f"dsprites{resolution}", levels=2)
    s.meta.update(factor_names=FACTOR_NAMES, factor_sizes=FACTOR_SIZES, resolution=resolution,
                  dataset_size=len(s.train))
    return s


def sample_size(default: int) -> int:
    text = os.environ.get(SIZE_ENV)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise VgmError(f"${SIZE_ENV} must be an integer, got {text!r}") from None


@register_dataset("dsprites")
def load_dsprites(data_dir=None, binarize="none", val_fraction=0.1) -> Splits:
    """64x64 dSprites: a fixed sample of 20,000 grid points (or $VGM_DSPRITES_SIZE), 10% of them the test split."""
    return dsprites_splits(sample_size(20000), 64, binarize, val_fraction)


@register_dataset("dsprites32")
def load_dsprites32(data_dir=None, binarize="none", val_fraction=0.1) -> Splits:
    """32x32 dSprites: a fixed sample of 50,000 grid points (or $VGM_DSPRITES_SIZE), 10% of them the test split."""
    return dsprites_splits(sample_size(50000), 32, binarize, val_fraction)
