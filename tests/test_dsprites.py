"""dSprites generator: the original grid and indexing, deterministic rendering, geometry that follows the factors."""
from __future__ import annotations

import numpy as np
import pytest

from vgm import VgmError, load_data
from vgm.data.dsprites import FACTOR_SIZES, HALF, DSprites


@pytest.fixture(scope="module")
def grid64() -> DSprites:
    return DSprites(64)


def test_grid_and_original_indexing(grid64):
    assert len(grid64) == 737280 == 3 * 6 * 40 * 32 * 32
    assert grid64.strides.tolist() == [245760, 40960, 1024, 32, 1]
    f = np.array([[1, 2, 3, 4, 5], [2, 5, 39, 31, 31], [0, 0, 0, 0, 0]])
    assert grid64.index(f).tolist() == [245760 + 2 * 40960 + 3 * 1024 + 4 * 32 + 5, 737279, 0]
    idx = np.random.default_rng(0).integers(0, len(grid64), 1000)
    assert (grid64.index(grid64.factors(idx)) == idx).all()
    assert np.allclose(grid64.values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert grid64.values[2][0] == 0 and np.isclose(grid64.values[2][-1], 2 * np.pi) and len(grid64.values[2]) == 40


def test_sample_factors_cover_the_grid_uniformly(grid64):
    f = grid64.sample_factors(40000, np.random.default_rng(1))
    assert f.shape == (40000, 5) and f.dtype == np.int64
    for k, size in enumerate(FACTOR_SIZES):
        counts = np.bincount(f[:, k], minlength=size)
        assert len(counts) == size and counts.min() > 0.8 * 40000 / size


def test_images_are_binary_deterministic_and_independent_of_the_batch(grid64):
    f = grid64.sample_factors(300, np.random.default_rng(2))
    x = grid64.images(f)
    assert x.shape == (300, 1, 64, 64) and x.dtype == np.float32
    assert set(np.unique(x)) <= {0.0, 1.0} and (x.sum((1, 2, 3)) > 0).all()
    assert np.array_equal(x, grid64.images(f))
    assert np.array_equal(x[17:18], grid64.images(f[17:18]))
    assert np.array_equal(x, grid64.images(f, chunk=7))
    # orientation: both ends of [0, 2π] are in the grid and draw the same image
    g = f.copy()
    g[:, 2] = 0
    h = g.copy()
    h[:, 2] = 39
    assert np.array_equal(grid64.images(g), grid64.images(h))


def test_geometry_follows_the_factors(grid64):
    side = np.arange(64) + 0.5
    base = np.array([0, 5, 0, 16, 16])
    def sweep(k, values):
        f = np.repeat(base[None], len(values), 0)
        f[:, k] = values
        return grid64.images(f)[:, 0]
    x = sweep(3, np.arange(32))                       # pos_x moves the centroid right, pos_y down
    cx = (x * side[None, None, :]).sum((1, 2)) / x.sum((1, 2))
    assert (np.diff(cx) > 0).all() and np.allclose(x.sum((1, 2)), x[0].sum(), rtol=0.1)   # pixel aliasing only
    y = sweep(4, np.arange(32))
    cy = (y * side[None, :, None]).sum((1, 2)) / y.sum((1, 2))
    assert (np.diff(cy) > 0).all()
    area = sweep(1, np.arange(6)).sum((1, 2))         # a square of side 2·HALF·scale·64 pixels
    side_px = 2 * HALF * grid64.values[1] * 64
    assert ((side_px - 1) ** 2 <= area).all() and (area <= (side_px + 1) ** 2).all()
    shapes = sweep(0, np.arange(3))
    assert not np.array_equal(shapes[0], shapes[1]) and not np.array_equal(shapes[1], shapes[2])


def test_32x32_and_bad_input():
    g = DSprites(32)
    x = g.images(g.sample_factors(50, np.random.default_rng(0)))
    assert x.shape == (50, 1, 32, 32)
    with pytest.raises(VgmError, match="shape"):
        g.images(np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(VgmError, match="out of range"):
        g.images(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(VgmError, match="integer"):
        g.images(np.zeros((2, 5)))
    with pytest.raises(VgmError):
        g.factors(np.array([737280]))


def test_registered_dataset_labels_are_the_factors(monkeypatch):
    monkeypatch.setenv("VGM_DSPRITES_SIZE", "500")
    s = load_data("dsprites32")
    assert s.shape == (1, 32, 32) and len(s.train) + len(s.val) + len(s.test) == 500
    assert s.train_labels.shape == (len(s.train), 5) and s.test_labels.shape == (len(s.test), 5)
    assert s.meta["dataset_size"] == len(s.train) and s.meta["factor_sizes"] == FACTOR_SIZES
    g = DSprites(32)
    assert np.array_equal(g.images(s.test_labels.numpy()), s.test.numpy())
    again = load_data("dsprites32")
    assert np.array_equal(again.train.numpy(), s.train.numpy())      # a fixed sample
    monkeypatch.setenv("VGM_DSPRITES_SIZE", "many")
    with pytest.raises(VgmError, match="VGM_DSPRITES_SIZE"):
        load_data("dsprites32")
