"""dSprites generator: the original grid and indexing, deterministic rendering, geometry that follows the factors;
every image dataset's grey levels, which decide how flows dequantize it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vgm
from vgm import VgmError, load_data
from vgm.data.dsprites import FACTOR_SIZES, HALF, DSprites

from conftest import run_cli


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


def check_levels(s: vgm.Splits, name: str) -> None:
    """meta["levels"] = L >= 2, every value on the lattice k/(L−1), and all L levels present in the data."""
    levels = s.meta.get("levels", 0)
    assert levels >= 2, (name, s.meta)
    x = torch.cat([s.train.flatten(), s.val.flatten(), s.test.flatten()]).double() * (levels - 1)
    k = torch.round(x)
    assert (x - k).abs().max() < 1e-4, (name, levels)               # a finer lattice than meta says
    assert len(torch.unique(k)) == levels, (name, levels)            # or a coarser one


def is_image(s: vgm.Splits) -> bool:
    return s.train.is_floating_point() and s.train.dim() == 4


def test_every_image_dataset_reports_its_grey_levels(monkeypatch):
    """A dataset whose levels do not reach the models is modelled as continuous by flows (no dequantization):
    an unbounded likelihood. Datasets that need the user's files are checked in the MNIST test below."""
    monkeypatch.setenv("VGM_DSPRITES_SIZE", "300")
    checked = set()
    for name in sorted(vgm.DATASETS):
        try:
            s = load_data(name)
        except VgmError as e:
            assert "--data-dir" in str(e), (name, e)                 # only a missing file may stop a load
            continue
        if is_image(s):
            check_levels(s, name)
            binary = load_data(name, binarize="static")
            check_levels(binary, name)
            assert binary.meta["levels"] == 2 and load_data(name, binarize="dynamic").meta["levels"] == 2
            checked.add(name)
    assert checked == {"digits", "dsprites", "dsprites32"}


def test_mnist_reports_256_grey_levels(mnist10k):
    s = load_data("mnist", data_dir=str(mnist10k))
    check_levels(s, "mnist")
    assert s.meta["levels"] == 256
    check_levels(load_data("mnist", data_dir=str(mnist10k), binarize="static"), "mnist")


def test_realnvp_on_dsprites_is_dequantized_and_scores_a_probability(tmp_path):
    """Binary images seen as continuous give log p(x) ≈ +227 nats here (+400 on the full data); dequantized
    onto 2 levels, log p(x) is a lower bound on log P(x) ≤ 0."""
    env = {"VGM_DSPRITES_SIZE": "300"}
    run = tmp_path / "run"
    r = run_cli("train", "realnvp", "--data", "dsprites32", "--epochs", "1", "--depth", "2", "--hidden", "8",
                "--batch-size", "64", "--out", run, "--quiet", "--seed", "0", env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("evaluate", run, "--json", env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["levels"] == 2 and vgm.load(run).config.levels == 2
    assert res["log_px"] <= 0 and res["bits_per_dim"] == pytest.approx(-res["log_px"] / (1024 * np.log(2)))
