"""`vgm metrics` on runs with class labels (not dSprites), and `vgm experiment NAME --data PATH`."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from torch.distributions import Independent, Normal, kl_divergence

import vgm
from vgm.cli import main
from vgm.data import load_path
from vgm.data.splits import Splits
from vgm.tools.metrics import score_labels

from conftest import run_cli


def one_line(capsys, code: int, *words: str) -> None:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vgm: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err


class LookupEncoder(torch.nn.Module):
    """A stand-in model whose posterior mean is a fixed function of the input's first value (its label)."""

    kind = "lookup"

    def __init__(self, code, scale: float = 1.0, d_in: int = 3):
        super().__init__()
        self.code, self.scale = code, scale
        self.config = SimpleNamespace(input_shape=(d_in,))
        self.prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
        self.device = torch.device("cpu")

    def encode(self, x):
        loc = self.code(x)
        return Independent(Normal(loc, torch.full_like(loc, self.scale)), 1)


def labelled(n: int, classes: int, seed: int) -> tuple[Splits, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (3 * n,), generator=g)
    x = torch.cat([y[:, None].float(), torch.randn(3 * n, 2, generator=g)], 1)
    return Splits(x[:n], x[n:2 * n], x[2 * n:], y[:n], y[n:2 * n], y[2 * n:], name="lookup"), y


def test_a_code_that_is_the_label_scores_one_and_noise_scores_chance():
    # MIG of the oracle is 1 less the plug-in bias of I(noise; y) (about 0.05 here)
    # catches: codes and labels drawn out of step (shuffled against each other), the probe scored on the
    # training split, MIG normalised by the wrong entropy, chance not the majority share
    splits, _ = labelled(600, 4, 0)
    oracle = LookupEncoder(lambda x: torch.stack([x[:, 0], x[:, 1]], 1), scale=0.5)
    res = score_labels(oracle, splits, n_codes=450, n_train=500, dci_model="forest", seed=0)   # subsets drawn
    assert res["probe"]["accuracy"] == 1.0 and res["mig"] > 0.9 and res["dci"]["informativeness"] == 1.0
    assert res["dci"]["completeness"] > 0.9 and "disentanglement" not in res["dci"]
    noise = LookupEncoder(lambda x: x[:, 1:3])
    res = score_labels(noise, splits, n_codes=600, n_train=600, dci_model="forest", seed=0)    # all of them
    assert abs(res["probe"]["accuracy"] - 0.25) < 0.08 and res["mig"] < 0.05
    counts = np.bincount(splits.test_labels.numpy())
    assert res["probe"]["chance"] == pytest.approx(counts.max() / counts.sum())
    # per-dimension KL against torch.distributions' closed form, averaged over the test examples
    q = Independent(Normal(splits.test[:, 1:3].double(), torch.ones(600, 2, dtype=torch.float64)), 1).base_dist
    want = kl_divergence(q, Normal(torch.zeros(2, dtype=torch.float64), 1.0)).mean(0).numpy()
    assert np.allclose(res["kl_per_dim"], want, rtol=1e-9)


def test_metrics_of_a_digits_run_use_its_test_codes_and_labels(tmp_path, capsys):
    # catches: another split or unaligned labels behind the printed probe accuracy; a run without labels accepted
    run = tmp_path / "vae"
    assert main(["train", "vae", "--epochs", "2", "--latent-dim", "4", "--quiet", "--seed", "1", "--out",
                 str(run)]) == 0
    capsys.readouterr()
    assert main(["metrics", str(run), "--json", "--quiet", "--dci-model", "forest"]) == 0
    res = json.loads(capsys.readouterr().out)
    model, splits = vgm.load(run), vgm.data.load("digits")
    with torch.no_grad():
        te, tr = model.encode(splits.test).mean.double(), model.encode(splits.train).mean.double()
    mu, sd = tr.mean(0), tr.std(0)
    probe = LogisticRegression(max_iter=2000).fit((tr - mu) / sd, splits.train_labels)
    want = (probe.predict((te - mu) / sd) == splits.test_labels.numpy()).mean()
    assert res["n_test"] == len(splits.test) and res["classes"] == 10
    assert res["probe"]["accuracy"] == pytest.approx(want, abs=1.5 / len(te))   # solver tolerance: a digit or so
    assert res["probe"]["accuracy"] > 3 * res["probe"]["chance"]
    # a run on data without labels: one line
    x = (load_digits().images[:300] * 255 / 16).round().astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    assert main(["train", "ae", "--data", str(tmp_path / "x.npy"), "--epochs", "1", "--quiet", "--out",
                 str(tmp_path / "ae")]) == 0
    capsys.readouterr()
    one_line(capsys, main(["metrics", str(tmp_path / "ae"), "--quiet"]), "have no labels", "class sub-folders")


def test_metrics_of_a_cvae_encode_with_the_labels(tmp_path, capsys):
    # catches: a conditional model's codes computed without (or with the wrong) labels
    run = tmp_path / "cvae"
    assert main(["train", "cvae", "--epochs", "1", "--latent-dim", "3", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["metrics", str(run), "--json", "--quiet", "--dci-model", "forest"]) == 0
    res = json.loads(capsys.readouterr().out)
    model, splits = vgm.load(run), vgm.data.load("digits")
    with torch.no_grad():
        q = model.given(splits.test_labels).encode(splits.test).base_dist
    want = kl_divergence(q, Normal(0.0, 1.0)).double().mean(0).numpy()
    assert np.allclose(res["kl_per_dim"], want, rtol=1e-5)


def write_folder(root, images, labels):
    for i, (img, y) in enumerate(zip(images, labels)):
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / str(y) / f"{i:04d}.png")


def test_an_experiment_runs_on_the_users_data(tmp_path, capsys):
    # catches: --data ignored (the digits run instead), the reproduce command without the data, a table or
    # unlabelled data let into an experiment that cannot use them, output written before a refusal
    d = load_digits()
    inverted = (255 - (d.images[:400] * 255 / 16).round()).astype(np.uint8)     # not the digits vgm ships
    np.savez(tmp_path / "inv.npz", x=inverted)
    out = tmp_path / "exp"
    r = run_cli("experiment", "reparam", "--quick", "--quiet", "--data", tmp_path / "inv.npz", "--out", out)
    assert r.returncode == 0, r.stderr
    got = json.loads((out / "reparam" / "results.json").read_text())
    from vgm.experiments import load_all
    load_all()
    (tmp_path / "again").mkdir()
    torch.manual_seed(0)
    want = vgm.registry.EXPERIMENTS["reparam"](out=tmp_path / "again", quick=True, seed=0, data_dir=None,
                                               user_data=load_path(tmp_path / "inv.npz"))
    assert got["table"] == json.loads(json.dumps(want["table"], default=float))
    assert {row["data"] for row in got["table"] if "data" in row} == {"inv.npz"}
    assert "--data" in got["command"] and str(tmp_path / "inv.npz") in got["command"]
    capsys.readouterr()
    # refusals: one line, nothing written
    bad = tmp_path / "bad"
    one_line(capsys, main(["experiment", "generate", "--quick", "--data", str(tmp_path / "inv.npz"), "--out",
                           str(bad)]), "needs class labels")
    one_line(capsys, main(["experiment", "beta-sweep", "--data", str(tmp_path / "inv.npz"), "--out", str(bad)]),
             "runs on its own data only")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,4\n5,6\n7,8\n9,10\n")
    one_line(capsys, main(["experiment", "elbo-gap", "--data", str(tmp_path / "t.csv"), "--out", str(bad)]),
             "vectors")
    one_line(capsys, main(["experiment", "elbo-gap", "--image-size", "8", "--out", str(bad)]),
             "--image-size applies to --data PATH")
    assert not bad.exists()
