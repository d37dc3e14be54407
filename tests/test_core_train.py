"""Training behaviour: learning, save/load, exact resume, NaN stop, data loading, architectures."""
from __future__ import annotations

import json

import pytest
import torch

import vgm
from vgm.data import load as load_data
from vgm.train import TrainConfig, fit


def small_vae(shape=(1, 8, 8), **kw):
    torch.manual_seed(0)
    return vgm.VAE(input_shape=shape, latent_dim=kw.pop("latent_dim", 8), hidden=kw.pop("hidden", (128, 64)), **kw)


def test_training_improves_validation_elbo_clearly():
    data = load_data("digits")
    model = small_vae()
    before = vgm.train.evaluate_terms(model, data.val)["elbo"]
    hist = fit(model, data, TrainConfig(epochs=40, batch_size=64, seed=0), progress=False)
    after = max(r["val"]["elbo"] for r in hist)
    assert after > before + 10, (before, after)      # nats per 64-value image
    assert hist[-1]["train"]["kl"] > 1               # the latent code is in use
    # fit leaves the best validation epoch's weights in the model
    torch.manual_seed(0)
    now = vgm.train.evaluate_terms(model, data.val)["elbo"]
    assert abs(now - after) < 1.5                    # one-sample ELBO noise


def test_save_load_gives_identical_outputs(tmp_path):
    model = small_vae(likelihood="gaussian", learn_sigma=True, arch="conv", hidden=(32,))
    with torch.no_grad():
        model.likelihood.raw_sigma.fill_(-1.3)
    model.save(tmp_path)
    loaded = vgm.load(tmp_path)
    assert type(loaded) is vgm.VAE and loaded.config == model.config
    x = torch.rand(5, 1, 8, 8)
    model.eval()
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    torch.testing.assert_close(loaded.encode(x).mean, model.encode(x).mean, rtol=0, atol=0)
    torch.testing.assert_close(loaded.reconstruct(x), model.reconstruct(x), rtol=0, atol=0)
    torch.manual_seed(1); s1 = model.sample(4)
    torch.manual_seed(1); s2 = loaded.sample(4)
    assert torch.equal(s1, s2)
    ae = vgm.AE(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,), recon_loss="mse")
    ae.save(tmp_path / "ae")
    assert torch.equal(vgm.load(tmp_path / "ae").reconstruct(x), ae.eval().reconstruct(x))


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_resumed_training_equals_uninterrupted(tmp_path, binarize):
    data = load_data("digits", binarize=binarize)
    cfg = TrainConfig(epochs=4, batch_size=100, seed=3)
    full = small_vae()
    h_full = fit(full, data, cfg, run_dir=tmp_path / "full", progress=False)
    part = small_vae()
    fit(part, data, TrainConfig(epochs=2, batch_size=100, seed=3), run_dir=tmp_path / "part", progress=False)
    # an interrupted epoch 3 leaves a cut-off metrics line behind; resume must drop it
    with open(tmp_path / "part" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "tr')
    again = small_vae()
    h_res = fit(again, data, cfg, run_dir=tmp_path / "part", resume=True, progress=False)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in h]
    assert strip(h_res) == strip(h_full)
    for a, b in zip(full.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3, 4]


class NaNAfter(vgm.VAE):
    """A VAE whose loss turns NaN at its 7th training step."""
    steps = 0

    def loss(self, x):
        t = super().loss(x)
        if self.training:
            NaNAfter.steps += 1
            if NaNAfter.steps == 7:
                t["loss"] = t["loss"] * float("nan")
        return t


def test_nan_loss_stops_with_epoch_and_step_and_keeps_checkpoint(tmp_path):
    data = load_data("digits")
    torch.manual_seed(0)
    model = NaNAfter(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,))
    NaNAfter.steps = 0
    # 1294 training digits / 256 per batch = 6 steps per epoch: step 7 is epoch 2, step 1
    with pytest.raises(vgm.VgmError, match=r"epoch 2, step 1\b"):
        fit(model, data, TrainConfig(epochs=3, batch_size=256, log_every=50), run_dir=tmp_path, progress=False)
    from vgm.checkpoint import read_safetensors
    _, meta = read_safetensors(tmp_path / "checkpoint.safetensors")
    assert json.loads(meta["info"])["epoch"] == 1
    state, _ = read_safetensors(tmp_path / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values())


def test_digits_splits_are_fixed_across_seeds_and_disjoint():
    from collections import Counter

    import numpy as np
    from sklearn.datasets import load_digits
    torch.manual_seed(1); np.random.seed(1)       # what a run's --seed changes: the global generators
    a = load_data("digits")
    torch.manual_seed(2); np.random.seed(2)
    b = load_data("digits")
    assert a.train.shape == (1294, 1, 8, 8) and a.val.shape == (144, 1, 8, 8) and a.test.shape == (359, 1, 8, 8)
    for split in ("train", "val", "test"):
        assert torch.equal(a.split(split), b.split(split))
    # train, val and test partition the 1,797 images: as multisets (digits has duplicate images) their union
    # is the whole data set, so no example sits in two splits
    rows = lambda t: Counter(r.tobytes() for r in np.asarray(t, dtype=np.float32).reshape(len(t), -1))
    whole = rows(load_digits().images / 16.0)
    assert rows(a.train) + rows(a.val) + rows(a.test) == whole
    assert 0 <= a.train.min() and a.train.max() <= 1


def test_binarization_modes():
    static = load_data("digits", binarize="static")
    assert set(static.train.unique().tolist()) <= {0.0, 1.0}
    dyn = load_data("digits", binarize="dynamic")
    assert dyn.train.unique().numel() > 2                  # grey levels, redrawn by the trainer each epoch
    assert set(dyn.test.unique().tolist()) <= {0.0, 1.0}   # evaluation data are fixed
    assert torch.equal(dyn.test, load_data("digits", binarize="dynamic").test)


@pytest.mark.parametrize("binarize", ["static", "dynamic"])
def test_binarized_pixels_do_not_move_with_val_fraction(binarize):
    """The test split's 0/1 pixels, and each example's validation/training pixels, are the same whatever
    --val-fraction is. Catches: one generator drawing val then test (the test draw then starts after
    n_val·D values, so it moved with --val-fraction: 58,399 of mnist10k's test pixels differed at 0.1 vs 0.2)."""
    a = load_data("digits", binarize=binarize, val_fraction=0.1)
    b = load_data("digits", binarize=binarize, val_fraction=0.2)
    assert torch.equal(a.test, b.test)
    # an example that is in both validation splits has the same pixels in each (rows found through the grey
    # levels of the unbinarized data, which are unique enough on digits once matched with their labels)
    grey = load_data("digits", val_fraction=0.1), load_data("digits", val_fraction=0.2)
    key = lambda g, i: (g.val[i].numpy().tobytes(), int(g.val_labels[i]))
    index_b = {key(grey[1], i): i for i in range(len(grey[1].val))}
    shared = [(i, index_b[key(grey[0], i)]) for i in range(len(grey[0].val)) if key(grey[0], i) in index_b]
    assert len(shared) > 100
    for i, j in shared:
        assert torch.equal(a.val[i], b.val[j])
    # the independent definition: one uniform per value of the test array, in order, by the fixed test seed
    x = torch.as_tensor(load_data("digits").test)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(vgm.data.splits.TEST_BINARIZE_SEED))
    assert torch.equal(a.test, (u < x).float())


@pytest.mark.parametrize("side", [8, 28, 64])
def test_conv_and_mlp_backbones_keep_shapes(side):
    for arch in ("mlp", "conv"):
        m = small_vae((1, side, side), arch=arch, hidden=(32,), latent_dim=5)
        x = torch.rand(3, 1, side, side)
        assert m.decode(m.encode(x).rsample()).mean.shape == x.shape
        assert m.decode(torch.zeros(2, 3, 5)).mean.shape == (2, 3, 1, side, side)   # extra sample dimension
        assert m.loss(x)["loss"].shape == (3,)


def test_standard_64x64_architecture():
    m = vgm.VAE(input_shape=(1, 64, 64), arch="conv", hidden=(256,), latent_dim=10)
    convs = [l for l in m.encoder.conv if isinstance(l, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64] and all(c.stride == (2, 2) for c in convs)


def test_mnist_subset_loads(mnist10k):
    d = load_data("mnist", str(mnist10k))
    assert d.train.shape == (7200, 1, 28, 28) and d.val.shape == (800, 1, 28, 28)
    assert d.test.shape == (2000, 1, 28, 28) and d.test_labels.shape == (2000,)
    assert 0.1 < d.train.mean() < 0.15                      # MNIST's mean grey level is about 0.13


def test_mnist_training_run(mnist10k):
    d = load_data("mnist", str(mnist10k), binarize="dynamic")
    d.train, d.val = d.train[:2000], d.val[:300]
    torch.manual_seed(0)
    m = vgm.VAE(input_shape=(1, 28, 28), latent_dim=16, arch="conv", hidden=(128,))
    h = fit(m, d, TrainConfig(epochs=3, batch_size=128), progress=False)
    assert h[-1]["val"]["elbo"] > h[0]["val"]["elbo"] + 5, [r["val"]["elbo"] for r in h]
