"""Own data through the command line: `--data PATH` for every command, the run folder's record of where the data
came from, tables mapped back to their own units, and streaming from the disk cache giving the same training as
the same data in memory."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import vgm
from vgm.cli import main


def cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from sklearn.datasets import load_diabetes
    path = tmp_path_factory.mktemp("table") / "diabetes.csv"
    x = load_diabetes().data * 100 + np.arange(10) * 5        # columns on different scales
    np.savetxt(path, x, delimiter=",", header=",".join(f"col{i}" for i in range(10)), comments="")
    return path


def test_an_image_folder_trains_and_is_found_again_after_it_moved(capsys, png_folder, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "vae", "--data", png_folder, "--latent-dim", "2", "--hidden", "16",
                       "--epochs", "2", "--out", run)
    assert code == 0, err
    cfg = json.loads((run / "config.json").read_text())["data"]
    assert cfg["source"]["path"] == str(png_folder) and cfg["source"]["kind"] == "folder"
    assert cfg["classes"] == [str(c) for c in range(10)]
    before = json.loads(cli(capsys, "evaluate", run, "--iw-samples", "3", "--json")[1])
    moved = tmp_path / "moved"
    shutil.move(str(png_folder), moved)
    try:
        code, _, err = cli(capsys, "evaluate", run, "--iw-samples", "3")
        assert code == 2 and "no longer exists" in err and "--data-dir" in err
        after = json.loads(cli(capsys, "evaluate", run, "--iw-samples", "3", "--json", "--data-dir", moved)[1])
        assert after["elbo"] == before["elbo"] and after["n_examples"] == before["n_examples"]
    finally:
        shutil.move(str(moved), png_folder)
    for command in ("sample", "reconstruct"):
        assert cli(capsys, command, run)[0] == 0


def test_streamed_data_train_exactly_as_in_memory(capsys, png_folder, tmp_path):
    # catches: a streamed epoch that shuffles, scales or batches differently from the in-memory one
    base = ["train", "vae", "--data", png_folder, "--latent-dim", "2", "--hidden", "16", "--epochs", "2", "--quiet"]
    assert cli(capsys, *base, "--out", tmp_path / "mem")[0] == 0
    code, _, err = cli(capsys, *base, "--memory-limit", "1K", "--cache-dir", tmp_path / "cache",
                       "--out", tmp_path / "disk")
    assert code == 0, err
    rows = lambda r: [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows(tmp_path / "mem"), rows(tmp_path / "disk")):
        assert a["train"] == pytest.approx(b["train"], rel=1e-5) and a["val"] == pytest.approx(b["val"], rel=1e-5)
    assert any((tmp_path / "cache").rglob("*.npy"))


def test_a_table_is_modelled_and_written_in_its_own_units(capsys, table, tmp_path):
    run = tmp_path / "tab"
    code, _, err = cli(capsys, "train", "vae", "--data", table, "--latent-dim", "2", "--hidden", "16",
                       "--epochs", "5", "--quiet", "--out", run)
    assert code == 0, err
    model = vgm.load(run)
    assert model.config.likelihood == "gaussian" and model.config.learn_sigma      # the table's defaults
    data = vgm.load_data(str(table))
    std = np.asarray(data.meta["standardize"]["std"])      # the training split's (checked in test_own_data)
    assert std.min() > 1                                    # so a missing un-standardisation would show
    code, out, _ = cli(capsys, "sample", run, "-n", "4", "--seed", "7")
    samples = np.loadtxt(run / "samples.csv", delimiter=",", skiprows=1)
    assert (run / "samples.csv").read_text().splitlines()[0] == ",".join(f"col{i}" for i in range(10))
    torch.manual_seed(7)
    want = model.sample(4).double().numpy() * std + np.asarray(data.meta["standardize"]["mean"])
    np.testing.assert_allclose(samples, want, rtol=1e-5, atol=1e-6)
    res = json.loads(cli(capsys, "evaluate", run, "--iw-samples", "4", "--json")[1])
    # a density of the table's units: the standardised density times Π 1/std_j
    assert res["log_px_original_units"] == pytest.approx(res["log_px"] - np.log(std).sum(), rel=1e-9)


def test_path_options_that_do_not_apply_are_one_line(capsys, table, tmp_path):
    code, _, err = cli(capsys, "train", "vae", "--data", table, "--image-size", "8", "--out", tmp_path / "r")
    assert code == 2 and "--image-size does not apply" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "train", "vae", "--data", "digits", "--skip-bad", "--out", tmp_path / "r")
    assert code == 2 and "applies to data read from a path" in err
    code, _, err = cli(capsys, "train", "seqvae", "--data", table, "--out", tmp_path / "r")
    assert code == 2 and "is vectors" in err
