"""The user's own data (--data PATH): image folders, .npy/.npz arrays, .csv/.tsv tables, the uint8 disk cache
streamed by DataLoader workers, the record that finds the data again, and the discretised logistic."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import vgm
from vgm.data import load, loader, reload, streamed, unstandardize
from vgm.data.source import parse_size
from vgm.errors import VgmError
from vgm.models.discretized_logistic import DiscretizedLogistic
from vgm.train import TrainConfig, fit

from conftest import write_idx


def one_line_error(fragment: str, fn, *args, **kwargs) -> str:
    with pytest.raises(VgmError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and fragment in msg, msg
    return msg


# ------------------------------------------------------------------------------------------ discretised logistic

def logistic_params(n=7, k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if k is None else (n, k)
    loc = torch.rand(shape, generator=g, dtype=torch.float64) * 1.6 - 0.3       # some centres outside [0, 1]
    log_scale = torch.rand(shape, generator=g, dtype=torch.float64) * 10 - 8   # s from 3e-4 to 7
    logits = None if k is None else torch.randn(shape, generator=g, dtype=torch.float64) * 2
    return loc, log_scale, logits


@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("levels", [256, 17])
def test_discretized_logistic_sums_to_one_over_the_levels(k, levels):
    loc, log_scale, logits = logistic_params(k=k)
    d = DiscretizedLogistic(loc, log_scale, logits, levels=levels)
    x = torch.arange(levels, dtype=torch.float64)[:, None] / (levels - 1)
    total = d.log_prob(x).exp().sum(0)                        # (levels, n) -> n
    assert torch.allclose(total, torch.ones_like(total), rtol=0, atol=1e-12), total


def reference_probs(loc, log_scale, levels=256):
    """P(k) as plain CDF differences in float64, edges extended to ±∞: the definition, nothing rearranged."""
    k = torch.arange(levels, dtype=torch.float64)[:, None]
    top, s = levels - 1, log_scale.exp()
    upper = torch.where(k == top, torch.tensor(1.0, dtype=torch.float64), torch.sigmoid(((k + 0.5) / top - loc) / s))
    lower = torch.where(k == 0, torch.tensor(0.0, dtype=torch.float64), torch.sigmoid(((k - 0.5) / top - loc) / s))
    return upper - lower                                        # (levels, n)


def test_discretized_logistic_equals_cdf_differences():
    loc, log_scale, _ = logistic_params(n=9)
    log_scale = log_scale.clamp(min=-5)                         # where the plain differences are still accurate
    x = torch.arange(256, dtype=torch.float64)[:, None] / 255
    want = reference_probs(loc, log_scale)
    got = DiscretizedLogistic(loc, log_scale).log_prob(x).exp()
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-15)
    # a mixture: Σ_j π_j P_j(k)
    loc3, ls3, logits = logistic_params(n=4, k=3, seed=1)
    ls3 = ls3.clamp(min=-5)
    mix = sum(torch.softmax(logits, -1)[:, j] * reference_probs(loc3[:, j], ls3[:, j]) for j in range(3))
    got = DiscretizedLogistic(loc3, ls3, logits).log_prob(x).exp()
    assert torch.allclose(got, mix, rtol=1e-9, atol=1e-15)


def test_discretized_logistic_far_tails_are_finite_and_right_in_float32():
    """10 bins above a sharp centre: σ(a) − σ(b) is 0 in float32 (and float64); the log-space form is not."""
    loc, log_scale = torch.tensor([128 / 255]), torch.tensor([-7.0])  # s = 9e-4, a bin is 1/255 = 4.3 s
    x = torch.tensor([138 / 255])
    a, b = (10.5 / 255) / math.exp(-7), (9.5 / 255) / math.exp(-7)   # standardised bin edges, both ≈ 40
    # right tail: σ(a) − σ(b) = σ(−b) − σ(−a), with no cancellation
    want = math.log(1 / (1 + math.exp(b)) - 1 / (1 + math.exp(a)))
    loc.requires_grad_(True)
    lp = DiscretizedLogistic(loc, log_scale).log_prob(x)
    lp.sum().backward()
    assert math.isfinite(lp.item()) and abs(lp.item() - want) < 1e-3 * abs(want), (lp.item(), want)
    assert torch.isfinite(loc.grad).all()


def test_discretized_logistic_mean_and_samples():
    loc, log_scale, logits = logistic_params(n=3, k=2, seed=2)
    d = DiscretizedLogistic(loc, log_scale.clamp(min=-6, max=-2), logits)   # spread over up to a few dozen levels
    x = torch.arange(256, dtype=torch.float64)[:, None] / 255
    assert torch.allclose(d.mean, (d.log_prob(x).exp() * x).sum(0), rtol=0, atol=1e-12)
    sharp = DiscretizedLogistic(loc, torch.full_like(log_scale, math.log(1 / 255)), logits)   # s = one bin
    p = sharp.log_prob(x).exp()                                 # (256, 3)
    torch.manual_seed(0)
    s = sharp.sample((20_000,))                                 # (20000, 3), on the lattice
    assert torch.equal(torch.round(s * 255) / 255, s)
    freq = torch.stack([torch.bincount(torch.round(s[:, i] * 255).long(), minlength=256) for i in range(3)], 1)
    tv = 0.5 * (freq / len(s) - p).abs().sum(0)                 # sampling noise ≈ 0.01; rounding down instead
    assert (tv < 0.03).all(), tv                                # of to the nearest level gives ≈ 0.25


# ------------------------------------------------------------------------------------------- image folders

def digits_u8(n=400):
    """scikit-learn's digits as uint8 0..255, ordered by class then index (the order a class-folder tree sorts in)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = np.round(d.images[:n] * 255 / 16).astype(np.uint8), d.target[:n]
    order = np.lexsort((np.arange(len(y)), y))
    return x[order], y[order]


def write_png_tree(root, x, y, n_train):
    """root/train/<label>/<i>.png and root/test/<label>/<i>.png, names sorting in the order of x."""
    for i, (img, label) in enumerate(zip(x, y)):
        split = "train" if i < n_train else "test"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}.png")


def test_the_same_digits_as_idx_png_and_npz_give_identical_tensors_and_training(tmp_path):
    x, y = digits_u8()
    tr = np.arange(len(x)) % 5 != 0                  # 320 train, 80 test, each in class order
    xt, yt, xs, ys = x[tr], y[tr], x[~tr], y[~tr]
    idx = tmp_path / "idx"
    idx.mkdir()
    for prefix, imgs, labels in (("train", xt, yt), ("t10k", xs, ys)):
        write_idx(idx / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(idx / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    write_png_tree(tmp_path / "png", np.concatenate([xt, xs]), np.concatenate([yt, ys]), len(xt))
    np.savez(tmp_path / "d.npz", train=xt, test=xs, train_labels=yt, test_labels=ys)
    runs = {"idx": load("mnist", str(idx)), "png": load(str(tmp_path / "png")), "npz": load(str(tmp_path / "d.npz"))}
    ref = runs["idx"]
    for name, s in runs.items():
        for split in ("train", "val", "test", "train_labels", "val_labels", "test_labels"):
            assert torch.equal(getattr(s, split), getattr(ref, split)), (name, split)
        assert s.meta["levels"] == 256
    assert runs["png"].meta["classes"] == [str(c) for c in range(10)]
    histories = {}
    for name, s in runs.items():
        torch.manual_seed(0)
        model = vgm.VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,))
        history = fit(model, s, TrainConfig(epochs=2, batch_size=64, seed=0, device="cpu"), progress=False)
        histories[name] = [{k: v for k, v in h.items() if k not in ("seconds", "train_seconds")} for h in history]
    assert histories["png"] == histories["idx"] == histories["npz"]


def write_signed_images(root, n, classes=("cat", "dog", "owl"), side=6):
    """Image i is constant 3·i + 1 (its signature) in class folder i % 3; returns {signature: class index}."""
    for i in range(n):
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((side, side), 3 * i + 1, np.uint8)).save(folder / f"img{i}.png")
    return {3 * i + 1: i % len(classes) for i in range(n)}


def test_folder_labels_and_fixed_splits(tmp_path):
    truth = write_signed_images(tmp_path / "f", 60)
    s = load(str(tmp_path / "f"))
    sig = lambda t: torch.round(t[:, 0, 0, 0] * 255).long().tolist()
    seen = []
    for split in ("train", "val", "test"):
        ids = sig(getattr(s, split))
        assert getattr(s, split + "_labels").tolist() == [truth[i] for i in ids], split
        seen += ids
    assert sorted(seen) == sorted(truth)                                    # each image in exactly one split
    assert len(s.test) == 12 and len(s.val) == 5                            # 20% of 60; 10% of the other 48
    assert s.meta["classes"] == ["cat", "dog", "owl"]
    # the test split is fixed: the same for any validation share, and a given share is the one used
    assert torch.equal(load(str(tmp_path / "f"), val_fraction=0.3).test, s.test)
    assert len(load(str(tmp_path / "f"), test_fraction=0.5).test) == 30


def test_images_outside_class_folders_give_no_labels_and_are_searched_recursively(tmp_path):
    root = tmp_path / "f"
    write_signed_images(root / "deep" / "er", 10)
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(root / "top.png")
    (root / ".hidden").mkdir()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(root / ".hidden" / "x.png")
    (root / "notes.txt").write_text("not an image")
    s = load(str(root))
    assert s.train_labels is None and "classes" not in s.meta
    assert len(s.train) + len(s.val) + len(s.test) == 11


def test_resize_is_antialiased_and_crop_and_channels_convert(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)    # 1-pixel checkerboard
    Image.fromarray(checker).save(root / "a.png")
    wide = np.zeros((8, 16, 3), np.uint8)                                  # 16 wide, 8 high: red | green | blue
    wide[:, :4] = (255, 0, 0)
    wide[:, 4:12] = (0, 255, 0)
    wide[:, 12:] = (0, 0, 255)
    Image.fromarray(wide).save(root / "b.png")
    Image.fromarray(np.full((5, 5, 3), (200, 100, 50), np.uint8)).save(root / "c.png")
    one_line_error("--channels", load, str(root))                          # grey a.png, colour b.png
    one_line_error("--image-size", load, str(root), channels=3)           # 32x32, 16x8 and 5x5
    everything = lambda s: torch.cat([s.train, s.val, s.test])
    s = load(str(root), image_size=8, channels=3, test_fraction=0.34)
    imgs = list(everything(s))
    assert all(t.shape == (3, 8, 8) for t in imgs)
    by_kind = {}
    for t in imgs:
        u = torch.round(t * 255)
        if (u[0] == u[1]).all() and (u[1] == u[2]).all():
            by_kind["checker"] = u[0]
        elif u[0].std() == 0 and u[0, 0, 0] == 200:
            by_kind["flat"] = u
        else:
            by_kind["wide"] = u
    # averaging 4x4 blocks of a checkerboard gives mid-grey; point sampling would give 0 or 255
    assert (by_kind["checker"] - 127.5).abs().max() <= 16
    assert torch.equal(by_kind["flat"], torch.tensor([200.0, 100, 50])[:, None, None].expand(3, 8, 8))
    # crop center keeps the green middle 8x8, and only it: the red and blue sides do not bleed in
    assert torch.equal(by_kind["wide"], torch.tensor([0.0, 255, 0])[:, None, None].expand(3, 8, 8))
    wide_none = [t for t in everything(load(str(root), image_size=8, channels=3, crop="none", test_fraction=0.34))
                 if not ((t[0] == t[1]).all() or t[0].std() == 0)][0]
    assert wide_none[0, :, 0].min() > 0.8 and wide_none[2, :, -1].min() > 0.8    # stretched: red left, blue right
    grey = everything(load(str(root), image_size=8, channels=1, test_fraction=0.34))
    flat = [t for t in grey if t.std() == 0 and 0.2 < t[0, 0, 0] < 0.8][0]
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50                          # ITU-R 601
    assert abs(float(flat[0, 0, 0]) * 255 - luma) <= 0.5 + 1e-9


@pytest.mark.parametrize("side", [5, 4, 12])
def test_centre_crop_is_crop_then_resize(tmp_path, side):
    """Three images share their centred square (random pixels) and differ outside it (red, blue, noise): each must
    decode to Pillow's crop() of that square resized with the same filter, exactly, whatever lies outside.
    catches: resize(..., box=box) in folder.decode, whose bicubic filter read pixels outside the box (its edge
    pixels took colour from the sides); and a box of half pixels when the difference in sides is odd."""
    root = tmp_path / "f"
    root.mkdir()
    rng = np.random.default_rng(4)
    centre = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    outsides = {"red": np.full((9, 20, 3), (255, 0, 0), np.uint8), "blue": np.full((9, 20, 3), (0, 0, 255), np.uint8),
                "noise": rng.integers(0, 256, (9, 20, 3), dtype=np.uint8)}
    for name, img in outsides.items():
        img[:, 5:14] = centre                        # 20 wide, 9 high: the centred 9x9 square is columns 5..13
        Image.fromarray(img).save(root / f"{name}.png")
    want = Image.fromarray(outsides["red"]).crop((5, 0, 14, 9)).resize((side, side), Image.Resampling.BICUBIC)
    want = torch.from_numpy(np.asarray(want).transpose(2, 0, 1).copy()).float()
    s = load(str(root), image_size=side, test_fraction=0.34)
    got = torch.round(torch.cat([s.train, s.val, s.test]) * 255)
    assert len(got) == 3 and all(torch.equal(g, want) for g in got), (got - want).abs().amax((1, 2, 3))


def test_sixteen_bit_and_palette_images(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    v16 = np.array([[0, 1000, 65535, 30000]], np.uint16).repeat(4, 0)     # 1000 → 3.89 → 4 (not 1000 // 256 = 3)
    Image.fromarray(v16).save(root / "a.png")                             # 16-bit grey
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8).repeat(2, 0).repeat(2, 1), "P")
    pal.putpalette([10, 10, 10, 90, 90, 90] + [0] * 762)
    pal.save(root / "b.png")
    Image.fromarray(np.full((4, 4), 5, np.uint8)).save(root / "c.png")
    s = load(str(root), channels=1, test_fraction=0.34)
    rows = [torch.round(t[0] * 255) for t in torch.cat([s.train, s.val, s.test])]
    a = [r for r in rows if r[0, 2] == 255][0]
    assert a[0].tolist() == [0, 4, 255, round(30000 * 255 / 65535)]
    b = [r for r in rows if r[0, 0] == 10][0]
    assert b[0].tolist() == [10, 10, 90, 90]


def test_streamed_cache_equals_memory_and_loader_covers_each_example(tmp_path, capsys, monkeypatch):
    root = tmp_path / "f"
    rng = np.random.default_rng(1)
    for i in range(50):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(root / f"c{i % 2}" / f"{i:03d}.png")
    cache = tmp_path / "cache"
    mem = load(str(root))
    disk = load(str(root), memory_limit=0, cache_dir=str(cache))
    assert disk.streamed and not mem.streamed and disk.shape == mem.shape == (3, 8, 8) and disk.kind == "images"
    for split in ("train", "val", "test"):
        d, m = getattr(disk, split), getattr(mem, split)
        assert torch.equal(d[torch.arange(len(d))], m) and torch.equal(d[3], m[3]) and torch.equal(d[2:5], m[2:5])
        assert torch.equal(getattr(disk, split + "_labels"), getattr(mem, split + "_labels"))
    monkeypatch.setattr(streamed, "HAVE_PREADV", False)                     # the seek + readinto path
    assert torch.equal(disk.train[torch.arange(len(disk.train))], mem.train)
    monkeypatch.undo()
    assert "decoding 50 images" in capsys.readouterr().err
    entries = sorted(cache.iterdir())
    assert len(entries) == 1
    load(str(root), memory_limit=0, cache_dir=str(cache))                   # unchanged folder: read from the cache
    assert "decoding" not in capsys.readouterr().err and sorted(cache.iterdir()) == entries
    batches = loader(disk.train, 8, torch.Generator().manual_seed(0), workers=2)
    epochs = [torch.cat(list(batches)) for _ in range(2)]
    key = lambda x: sorted(map(tuple, torch.round(x.flatten(1) * 255).long().tolist()))
    for e in epochs:
        assert e.dtype == torch.float32 and key(e) == key(mem.train)        # every example once per epoch
    assert not torch.equal(epochs[0], epochs[1])                            # reshuffled
    assert torch.equal(torch.cat(list(loader(disk.val, 4))), mem.val)       # in order without a generator
    # a changed folder is decoded again, and its old entry goes
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "c0" / "000.png")
    changed = load(str(root), memory_limit=0, cache_dir=str(cache))
    assert "decoding" in capsys.readouterr().err and len(list(cache.iterdir())) == 1
    assert sorted(cache.iterdir()) != entries
    assert torch.equal(changed.train[torch.arange(len(changed.train))], load(str(root)).train)


def test_arrays_streamed_in_place_or_through_the_cache(tmp_path):
    x = (np.random.default_rng(2).random((40, 3, 5, 5)) * 255).astype(np.uint8)
    np.save(tmp_path / "nchw.npy", x)
    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1))
    mem = load(str(tmp_path / "nchw.npy"))
    in_place = load(str(tmp_path / "nchw.npy"), memory_limit=0, cache_dir=str(tmp_path / "c"))
    cached = load(str(tmp_path / "nhwc.npz"), memory_limit="0", cache_dir=str(tmp_path / "c"))
    assert in_place.train.path == tmp_path / "nchw.npy"                     # no copy
    assert cached.train.path.parent.parent == tmp_path / "c"
    for s in (in_place, cached):
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(s, split)[:], getattr(mem, split))


def test_array_layouts_dtypes_and_values(tmp_path):
    rng = np.random.default_rng(3)
    x = (rng.random((30, 3, 6, 5)) * 255).astype(np.uint8)
    save = lambda name, a: (np.save(tmp_path / name, a), str(tmp_path / name))[1]
    ref = load(save("nchw.npy", x))
    assert ref.shape == (3, 6, 5) and ref.meta["levels"] == 256
    assert torch.equal(load(save("nhwc.npy", x.transpose(0, 2, 3, 1))).train, ref.train)
    assert torch.equal(load(save("f.npy", x / np.float32(255))).train, ref.train)
    assert load(save("f.npy", x / np.float32(255))).meta["levels"] == 256
    assert load(save("off.npy", x / 300.0)).meta["levels"] == 0
    grey = load(save("nhw.npy", x[:, 0]))
    assert grey.shape == (1, 6, 5) and torch.equal(grey.train[:, 0], ref.train[:, 0])
    amb = save("amb.npy", x[:, :, :3, :3].transpose(0, 2, 3, 1).copy())    # (30, 3, 3, 3)
    one_line_error("--layout NCHW or --layout NHWC", load, amb)
    assert load(amb, layout="NHWC").shape == (3, 3, 3)
    one_line_error("--layout", load, save("neither.npy", np.zeros((4, 8, 8, 8), np.uint8)))
    one_line_error(".csv", load, save("table.npy", np.zeros((10, 4), np.float32)))
    one_line_error("dtype int64", load, save("i64.npy", x.astype(np.int64)))
    bad = x / np.float32(255)
    bad[3, 0, 0, 0] = np.nan
    one_line_error("NaN", load, save("nan.npy", bad))
    one_line_error("outside [0, 1]", load, save("big.npy", x * np.float32(2)))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is no zip")
    one_line_error("cannot read", load, str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "obj.npz", x=np.array([object()] * 3))
    one_line_error("dtype object", load, str(tmp_path / "obj.npz"))
    np.savez(tmp_path / "half.npz", train=x)
    one_line_error("'test'", load, str(tmp_path / "half.npz"))
    np.savez(tmp_path / "named.npz", images=x)
    one_line_error("'x'", load, str(tmp_path / "named.npz"))
    np.savez(tmp_path / "lab.npz", x=x, y=np.arange(29))
    one_line_error("labels", load, str(tmp_path / "lab.npz"))
    np.savez(tmp_path / "sizes.npz", train=x, test=x[:5, :, :4])
    one_line_error("differ from 'train' images", load, str(tmp_path / "sizes.npz"))
    np.savez(tmp_path / "split.npz", train=x, test=x[:5])
    one_line_error("--test-fraction does not apply", load, str(tmp_path / "split.npz"), test_fraction=0.3)


# -------------------------------------------------------------------------------------------------- tables

def test_table_is_standardised_with_the_training_split_and_maps_back(tmp_path):
    rng = np.random.default_rng(4)
    values = np.round(rng.normal([10, -3, 500], [2, 0.5, 90], (50, 3)), 3)
    values[:, 1] = 7.0                                                      # a constant column: std kept at 1
    lines = ["height,flat,weight"] + [",".join(map(str, r)) for r in values]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n\n")
    s = load(str(tmp_path / "t.csv"))
    assert s.kind == "vectors" and s.shape == (3,) and s.meta["defaults"] == {"likelihood": "gaussian", "sigma": 1.0, "learn_sigma": True}
    st = s.meta["standardize"]
    assert st["columns"] == ["height", "flat", "weight"] and st["std"][1] == 1.0
    back = lambda t: unstandardize(t.double(), st).numpy()
    train = back(s.train)
    assert np.allclose(np.mean(train[:, [0, 2]], 0), st["mean"][::2], atol=1e-5)
    assert np.allclose(np.std(train, 0), [st["std"][0], 0, st["std"][2]], rtol=1e-5, atol=1e-6)
    assert np.allclose(s.train.double().mean(0)[[0, 2]], 0, atol=1e-6)
    assert np.allclose(s.train.double().std(0, unbiased=False)[[0, 2]], 1, atol=1e-6)
    every = np.concatenate([back(s.train), back(s.val), back(s.test)])      # all the table's rows, in its units
    assert np.allclose(np.sort(every, 0), np.sort(values, 0), rtol=1e-6, atol=1e-4)
    # a header-less .tsv with the same rows reads the same numbers
    (tmp_path / "t.tsv").write_text("\n".join("\t".join(map(str, r)) for r in values))
    t = load(str(tmp_path / "t.tsv"))
    assert torch.equal(t.train, s.train) and t.meta["standardize"]["columns"] == ["column 1", "column 2", "column 3"]


def test_table_errors_and_dropping_text_columns(tmp_path):
    w = lambda name, text: ((tmp_path / name).write_text(text), str(tmp_path / name))[1]
    rows = "".join(f"{i},{i * 2.5},name{i}\n" for i in range(20))
    msg = one_line_error("'city'", load, w("a.csv", "a,b,city\n" + rows))
    assert "--drop-non-numeric" in msg and "line 2" in msg
    s = load(str(tmp_path / "a.csv"), drop_non_numeric=True)
    assert s.meta["standardize"]["columns"] == ["a", "b"] and s.meta["source"]["dropped"] == ["city"]
    one_line_error("'column 3'", load, w("b.csv", rows))                  # no header: named by position
    one_line_error("line 4 has 2 fields", load, w("c.csv", "a,b,c\n1,2,3\n4,5,6\n7,8\n9,9,9\n"))
    one_line_error("missing value at line 3, column 'b'", load, w("d.csv", "a,b\n1,2\n3,\n5,6\n7,8\n"))
    one_line_error("missing value at line 2, column 'b'", load, w("e.csv", "a,b\n1,nan\n3,4\n5,6\n"))
    one_line_error("empty table", load, w("f.csv", "\n\n"))
    one_line_error("no rows of data", load, w("g.csv", "a,b,c\n"))
    one_line_error("--image-size does not apply to a .csv table", load, str(tmp_path / "a.csv"), image_size=8)
    one_line_error("--binarize applies to images", load, str(tmp_path / "a.csv"), binarize="static",
                   drop_non_numeric=True)


def test_a_headerless_table_whose_first_row_has_nan_inf_or_an_empty_field_keeps_that_row(tmp_path, capsys):
    """catches: the old header rule (a field that is not a finite number where the second row has one) took a
    first row holding NaN, inf or an empty field for a header, and dropped that row without a word."""
    rows = "".join(f"{i},{i * 2.5 + 1},{(i * 7) % 5}\n" for i in range(1, 20))
    for first in ("nan,1,2", "0,inf,2", "0,,2"):
        path = tmp_path / "h.csv"
        path.write_text(first + "\n" + rows)
        msg = one_line_error("line 1", load, str(path))          # a value, so the row is data (line 1) ...
        assert "column 'column " in msg                         # ... and the columns are named by position
    (tmp_path / "d.csv").write_text("0,,2\n" + rows)
    s = load(str(tmp_path / "d.csv"), missing="drop")             # --missing drop: the row is left out, and said so
    assert s.meta["source"]["examples"] == 19 and "left out 1 of 20 rows" in capsys.readouterr().err
    (tmp_path / "g.csv").write_text("x,y,z\n" + rows)             # a header of names is still a header
    assert load(str(tmp_path / "g.csv")).meta["standardize"]["columns"] == ["x", "y", "z"]


def test_missing_values_are_named_as_such_and_dropped_on_request(tmp_path, capsys):
    """catches: a missing value reported as 'column is not numeric' (with --drop-non-numeric, which threw the
    whole column away) instead of its line and column, and --missing drop that keeps or miscounts rows."""
    lines = ["a,b,c"] + [f"{i},{i % 3},{i * 0.5}" for i in range(30)]
    lines[5] = "4,,2.0"            # line 6: an empty field
    lines[9] = "8,NaN,4.0"         # line 10: NaN
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    msg = one_line_error("missing value at line 6, column 'b'", load, str(tmp_path / "m.csv"))
    assert "--missing drop" in msg and "not numeric" not in msg
    s = load(str(tmp_path / "m.csv"), missing="drop")
    assert "left out 2 of 30 rows" in capsys.readouterr().err
    assert s.meta["standardize"]["columns"] == ["a", "b", "c"]     # no column thrown away
    back = np.concatenate([unstandardize(t.double(), s.meta["standardize"]).numpy() for t in (s.train, s.val, s.test)])
    assert sorted(np.round(back[:, 0]).astype(int)) == [i for i in range(30) if i not in (4, 8)]
    (tmp_path / "all.csv").write_text("a,b\n,\nnan,\n,NaN\n")
    one_line_error("every row has a missing value", load, str(tmp_path / "all.csv"), missing="drop")
    one_line_error("--missing must be refuse or drop", load, str(tmp_path / "m.csv"), missing="guess")


def test_a_column_of_huge_or_infinite_values_is_one_line_naming_it(tmp_path):
    """catches: a column of 1e308 went through standardisation (numpy overflow warnings) into training, which
    stopped with 'loss became NaN' without naming the column."""
    rows = "".join(f"{i},{1e308 if i % 2 else -1e308},{i}\n" for i in range(20))
    (tmp_path / "big.csv").write_text("a,huge,c\n" + rows)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # no numpy overflow warning on the way
        msg = one_line_error("column 'huge'", load, str(tmp_path / "big.csv"))
    assert "overflow" in msg
    (tmp_path / "inf.csv").write_text("a,b\n1,2\n3,inf\n5,6\n7,8\n")
    one_line_error("column 'b' holds an infinite value", load, str(tmp_path / "inf.csv"))


# ----------------------------------------------------------------------------------------------- bad input

def test_bad_folders_and_paths(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    one_line_error("holds no images", load, str(tmp_path / "empty"))
    one_line_error("does not exist", load, str(tmp_path / "nowhere"))
    one_line_error("does not exist", load, "./nowhere.npy")
    one_line_error("unknown dataset 'nowhere'", load, "nowhere")
    (tmp_path / "x.bin").write_bytes(b"")
    one_line_error("cannot tell what data", load, str(tmp_path / "x.bin"))
    one_line_error("applies to data read from a path", load, "digits", image_size=8)
    root = tmp_path / "f"
    write_signed_images(root, 12)
    good = (root / "cat" / "img0.png").read_bytes()
    (root / "cat" / "img3.png").write_bytes(good[: len(good) // 2])         # truncated
    (root / "dog" / "img4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # corrupt
    one_line_error("img3.png is not a readable image", load, str(root))
    s = load(str(root), skip_bad=True)
    assert s.meta["source"]["skipped"] == 2 and len(s.train) + len(s.val) + len(s.test) == 10
    assert "skipped 2 unreadable images" in capsys.readouterr().err
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(root / "owl" / "odd.png")
    msg = one_line_error("--image-size", load, str(root), skip_bad=True)
    assert "odd.png is 7x7" in msg
    one_line_error("--crop applies with --image-size", load, str(root), crop="none")
    (tmp_path / "split" / "train").mkdir(parents=True)
    (tmp_path / "split" / "test").mkdir()
    write_signed_images(tmp_path / "split" / "train", 6)
    one_line_error("holds no images", load, str(tmp_path / "split"))
    write_signed_images(tmp_path / "split" / "test", 3)
    assert len(load(str(tmp_path / "split")).test) == 3
    one_line_error("--test-fraction does not apply", load, str(tmp_path / "split"), test_fraction=0.5)
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "split" / "test" / "cat" / "more.png")
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "split" / "stray.png")
    one_line_error("also images outside them (e.g. stray.png)", load, str(tmp_path / "split"))
    (tmp_path / "split" / "stray.png").unlink()
    (tmp_path / "split" / "test" / "cow").mkdir()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "split" / "test" / "cow" / "a.png")
    one_line_error("has a class 'cow'", load, str(tmp_path / "split"))


def test_unwritable_cache_falls_back_to_a_temporary_folder(tmp_path, capsys):
    write_signed_images(tmp_path / "f", 9)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    s = load(str(tmp_path / "f"), memory_limit=0, cache_dir=str(blocker / "cache"))
    err = capsys.readouterr().err
    assert "is not writable" in err and s.streamed and not blocker.is_dir()
    assert torch.equal(s.train[:], load(str(tmp_path / "f")).train)


def test_parse_size():
    assert parse_size("2G") == 2 * 2**30 and parse_size("512m") == 512 * 2**20 and parse_size(1000) == 1000
    assert parse_size("1.5GiB") == 3 * 2**29 and parse_size("0") == 0
    one_line_error("--memory-limit", parse_size, "lots")


# ------------------------------------------------------------------------------------------ finding data again

def test_the_source_record_finds_the_data_again_or_says_why_not(tmp_path):
    root = tmp_path / "f"
    write_signed_images(root, 20)
    s = load(str(root), image_size=4, crop="none")
    src = s.meta["source"]
    assert src["path"] == str(root) and src["kind"] == "folder" and src["examples"] == 20
    assert src["options"] == {"image_size": 4, "crop": "none", "channels": None, "test_fraction": 0.2,
                              "skip_bad": False}
    again = reload(src)
    assert torch.equal(again.train, s.train) and torch.equal(again.test, s.test) and again.shape == (1, 4, 4)
    moved = tmp_path / "moved"
    root.rename(moved)
    one_line_error("no longer exists: point at their new place with --data-dir", reload, src)
    assert torch.equal(reload(src, path=str(moved)).test, s.test)
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(moved / "cat" / "extra.png")
    one_line_error("not the data this run was trained on", reload, src, path=str(moved))


# ------------------------------------------------------------------------------------------------ real data

def test_real_photographs_as_a_folder_train_a_colour_vae(tmp_path):
    from sklearn.datasets import load_sample_images

    root = tmp_path / "patches"
    root.mkdir()
    for k, photo in enumerate(load_sample_images().images):               # china.jpg, flower.jpg: 427x640 RGB
        for i in range(0, 400, 40):
            for j in range(0, 600, 60):
                Image.fromarray(photo[i:i + 40, j:j + 40]).save(root / f"{k}-{i:03d}-{j:03d}.png")
    s = load(str(root), image_size=16)                                      # 200 patches, 40 -> 16 pixels
    assert s.shape == (3, 16, 16) and s.meta["levels"] == 256 and len(s.test) == 40
    torch.manual_seed(0)
    model = vgm.VAE(input_shape=(3, 16, 16), arch="conv", latent_dim=8, hidden=(64,), likelihood="logistic",
                    levels=256)
    bits = lambda: -vgm.evaluate(model, s.test, iw_samples=0)["elbo"] / (3 * 16 * 16 * math.log(2))
    before = bits()
    history = fit(model, s, TrainConfig(epochs=3, batch_size=32, seed=0, device="cpu"), progress=False)
    after = bits()                       # an upper bound on −log2 P(x) per value: P sums to 1 over the levels
    assert 0 < after < before and history[-1]["val"]["elbo"] > history[0]["val"]["elbo"], (before, after)


def test_real_mnist_as_pngs_evaluates_like_the_idx_folder(tmp_path, mnist10k):
    """train/NNNNN.png and test/NNNNN.png in the IDX order: the same splits, example for example, and the same
    evaluation numbers."""
    from vgm.data import idx_images

    idx = load("mnist", str(mnist10k))
    root = tmp_path / "png"
    for split, prefix in (("train", "train"), ("test", "t10k")):
        (root / split).mkdir(parents=True)
        x = np.round(idx_images(mnist10k / f"{prefix}-images-idx3-ubyte.gz")[:, 0] * 255).astype(np.uint8)
        for i, img in enumerate(x):
            Image.fromarray(img).save(root / split / f"{i:05d}.png", compress_level=1)
    png = load(str(root), workers=2)
    assert png.meta["levels"] == idx.meta["levels"] == 256
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(png, split), getattr(idx, split)), split
    torch.manual_seed(0)
    model = vgm.VAE(input_shape=(1, 28, 28), latent_dim=8, hidden=(64,))
    numbers = []
    for data in (png, idx):
        torch.manual_seed(1)
        numbers.append(vgm.evaluate(model, data.test, iw_samples=8))
    assert numbers[0] == numbers[1] and math.isfinite(numbers[0]["log_px"])
