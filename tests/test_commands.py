"""Every command with every kind of model and data: what does not fit is refused in one line, what fits works,
and each printed number carries its own unit. Commands run in process (vgm.cli.main) to stay fast."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

import vgm
from vgm.cli import main
from vgm.plots import save_examples
from vgm.registry import DATASET_KINDS, MODELS, datasets_for


def cli(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:          # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vgm: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--latent-dim", "4", "--hidden", "32", "--epochs", "2", "--binarize", "dynamic",
                 "--quiet", "--out", str(out)]) == 0
    return out


def test_a_likelihood_outside_its_support_is_refused_before_training(capsys, tmp_path):
    # catches: training a Bernoulli decoder on unbounded data (ELBO +21,820 on moons)
    line = one_line_error(*cli(capsys, "train", "vae", "--data", "moons", "--out", tmp_path / "r")[:3:2])
    assert "outside [0, 1]" in line and "--likelihood gaussian" in line
    line = one_line_error(*cli(capsys, "train", "ae", "--data", "moons", "--out", tmp_path / "r")[:3:2])
    assert "--recon-loss mse" in line
    assert not (tmp_path / "r").exists()


def test_data_of_the_wrong_kind_names_the_models_that_fit(capsys, tmp_path):
    line = one_line_error(*cli(capsys, "train", "vae", "--data", "names", "--out", tmp_path / "r")[:3:2])
    assert "names is text" in line and "seqvae or vrnn" in line
    line = one_line_error(*cli(capsys, "train", "seqvae", "--data", "moons", "--out", tmp_path / "r")[:3:2])
    assert "moons is vectors" in line and "vae" in line


@pytest.mark.parametrize("model", sorted(MODELS))
def test_help_lists_only_the_data_that_fit(capsys, model):
    with pytest.raises(SystemExit):
        main(["train", model, "--help"])
    text = capsys.readouterr().out
    data_help = " ".join(text.split("\n  --data NAME", 1)[1].split("--data-dir")[0].split())
    for name, kind in DATASET_KINDS.items():
        assert (name in data_help.replace(",", " ").split()) == (kind in MODELS[model].data_kinds), (name, data_help)
    assert f"(default: {MODELS[model].default_data})" in data_help
    assert MODELS[model].default_data in datasets_for(model)


def test_each_model_trains_on_its_default_data_and_says_which(capsys, tmp_path):
    code, out, err = cli(capsys, "train", "seqvae", "--epochs", "1", "--hidden", "16", "--out", tmp_path / "s")
    assert code == 0, err
    assert code == 0 and "seqvae" in err and "on names (its default data set" in err
    assert json.loads((tmp_path / "s" / "config.json").read_text())["data"]["data"] == "names"


def test_tcvae_gets_the_training_set_size_from_any_data(capsys, tmp_path):
    # catches: dataset_size left at 0 outside dSprites (the estimator then used N = batch size)
    code, _, _ = cli(capsys, "train", "tcvae", "--data", "digits", "--arch", "mlp", "--hidden", "16", "--epochs", "1",
                     "--quiet", "--out", tmp_path / "t")
    assert code == 0
    cfg = json.loads((tmp_path / "t" / "model.json").read_text())["config"]
    assert cfg["dataset_size"] == len(vgm.load_data("digits").train) == 1294


def test_abbreviated_options_are_not_taken_for_others(capsys, vae_run):
    # catches: argparse prefix matching (`--data mnist` silently became `--data-dir mnist`)
    line = one_line_error(*cli(capsys, "evaluate", vae_run, "--data", "mnist")[:3:2])
    assert "unrecognized arguments: --data mnist" in line


@pytest.mark.parametrize("command", [["evaluate", "RUN"], ["sample", "RUN"], ["experiment", "reparam", "--quick"],
                                     ["train", "vae"]])
def test_a_seed_out_of_range_is_one_line(capsys, vae_run, tmp_path, command):
    args = [str(vae_run) if a == "RUN" else a for a in command] + ["--seed", "99999999999999999999999"]
    if command[0] in ("experiment", "train"):
        args += ["--out", str(tmp_path / "x")]
    line = one_line_error(*cli(capsys, *args)[:3:2])
    assert "seed" in line


def test_sampling_temperature_scales_the_latent_draw():
    torch.manual_seed(0)
    m = vgm.VAE(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,)).eval()
    torch.manual_seed(5)
    got = m.sample(4, temperature=0.3)
    torch.manual_seed(5)
    z = m.prior.sample((4,))
    assert torch.allclose(got, m.decode(0.3 * z).mean)                # catches: T ignored or applied to x
    assert not torch.allclose(got, m.decode(z).mean)
    flow = MODELS["realnvp"](input_shape=(2,), depth=2, hidden=8).eval()
    torch.manual_seed(5)
    x = flow.sample(6, temperature=0.5)
    z, _ = flow.flow(x)
    torch.manual_seed(5)
    assert torch.allclose(z, 0.5 * torch.randn(6, 2), atol=1e-5)    # f(x) is the base draw scaled by T


def test_sample_and_reconstruct_write_every_data_shape(capsys, vae_run, tmp_path):
    from PIL import Image
    code, out, _ = cli(capsys, "reconstruct", vae_run, "-n", "5", "--out", tmp_path / "r.png")
    assert code == 0
    w, h = Image.open(tmp_path / "r.png").size
    assert (w, h) == (4 * (5 * 9 + 1), 4 * (2 * 9 + 1))         # one pair of rows of 5 images (8 px + 1 px pad)
    code, _, _ = cli(capsys, "sample", vae_run, "-n", "7", "--temperature", "0.5", "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0
    assert cli(capsys, "train", "vae", "--data", "moons", "--likelihood", "gaussian", "--latent-dim", "2",
               "--hidden", "16", "--epochs", "1", "--quiet", "--out", tmp_path / "m")[0] == 0
    for command in ("sample", "reconstruct"):
        code, out, err = cli(capsys, command, tmp_path / "m")
        assert code == 0, err
    assert Image.open(tmp_path / "m" / "samples.png").size[0] > 100


def test_vectors_of_more_than_two_values_are_written_as_csv(tmp_path):
    x, r = torch.randn(6, 5), torch.randn(6, 5)
    save_examples(tmp_path / "v.csv", x, r)
    table = np.loadtxt(tmp_path / "v.csv", delimiter=",", skiprows=1)
    header = (tmp_path / "v.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["x_0", "x_1"] and header[5] == "reconstruction_0"
    np.testing.assert_allclose(table, torch.cat([x, r], 1).double().numpy(), rtol=1e-6)


def test_evaluate_prints_each_number_with_its_unit(capsys, vae_run, tmp_path):
    code, out, _ = cli(capsys, "evaluate", vae_run, "--iw-samples", "5")
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if not line.strip().startswith("note")}
    assert rows["elbo"][1] == "nats" and rows["bits_per_dim"][1] == "bits/dim"
    assert rows["active_units"][1] == "units" and "." not in rows["active_units"][0]
    assert rows["mse"][1:] == ["per", "value"]
    vae = json.loads(cli(capsys, "evaluate", vae_run, "--iw-samples", "5", "--json")[1])
    assert 0 <= vae["active_units"] <= vae["latent_dim"] == 4


def test_bits_per_dim_only_for_probabilities_of_discrete_data(tmp_path):
    torch.manual_seed(0)
    x = vgm.load_data("digits").test[:40]
    gauss = vgm.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=(16,), likelihood="gaussian")
    res = vgm.evaluate(gauss, x, iw_samples=3)
    assert res["bits_per_dim"] is None and "log density" in res["note"]   # catches: bits/dim of a density
    binary = (x > 0.5).float()
    bern = vgm.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=(16,))
    res = vgm.evaluate(bern, binary, iw_samples=3)
    assert res["bits_per_dim"] == pytest.approx(-res["log_px"] / (64 * np.log(2)))
    assert vgm.evaluate(bern, x, iw_samples=3)["bits_per_dim"] is None       # cross-entropy on grey levels


def test_evaluating_the_training_split_of_a_dynamic_run_scores_binary_data(vae_run):
    # catches: the training split came back as grey levels (and the note advised --binarize dynamic)
    from vgm.run import checked_split, run_data
    model = vgm.load(vae_run)
    _, splits = run_data(vae_run, None)
    x = checked_split(model, splits, "train")
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x, checked_split(model, splits, "train"))       # the same draw every time
    assert "note" not in vgm.evaluate(model, x[:100], iw_samples=2)


def test_evaluate_restores_training_mode_and_refuses_an_empty_split():
    m = vgm.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=(8,)).train()
    with pytest.raises(vgm.VgmError, match="empty"):
        vgm.evaluate(m, torch.zeros(0, 1, 8, 8))
    with pytest.raises(Exception):
        vgm.evaluate(m, torch.zeros(3, 1, 7, 7))
    assert m.training


def test_a_missing_output_folder_names_the_users_path(capsys, vae_run, tmp_path):
    line = one_line_error(*cli(capsys, "sample", vae_run, "--out", tmp_path / "nodir" / "x.png")[:3:2])
    assert "nodir/x.png" in line and "does not exist" in line and ".tmp" not in line and "vgm-tmp" not in line


def test_importing_vgm_leaves_the_umask_and_new_files_follow_it(tmp_path):
    code = ("import os; os.umask(0o077); import vgm; from vgm.checkpoint import atomic_write; "
            f"atomic_write({str(tmp_path / 'f')!r}, b'x'); print(os.umask(0))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(r.stdout) == 0o077                                  # catches: import-time umask juggling
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o600


def test_leftovers_of_killed_runs(capsys, tmp_path):
    out = tmp_path / "r"
    args = ["train", "vae", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--quiet", "--out", out]
    assert cli(capsys, *args)[0] == 0
    stale = out / ".checkpoint.safetensors.1234abcd.vgm-tmp"      # what a SIGKILL mid-write leaves
    stale.write_bytes(b"partial")
    (out / ".vgm-replaced").mkdir()                                # what a SIGKILL during --force leaves
    (out / ".vgm-replaced" / "model.json").write_text("{}")
    line = one_line_error(*cli(capsys, *args, "--force")[:3:2])
    assert ".vgm-replaced" in line and "restore it" in line
    assert (out / ".vgm-replaced" / "model.json").exists()         # the user's previous run is never deleted
    (out / ".vgm-replaced" / "model.json").unlink()
    (out / ".vgm-replaced").rmdir()
    assert cli(capsys, *args, "--force")[0] == 0
    assert not stale.exists()


def test_resume_may_change_the_learning_rate(capsys, tmp_path):
    out = tmp_path / "r"
    base = ["train", "vae", "--latent-dim", "2", "--hidden", "8", "--quiet", "--out", out]
    assert cli(capsys, *base, "--epochs", "1")[0] == 0
    assert cli(capsys, *base, "--epochs", "2", "--resume", "--lr", "0.0003")[0] == 0
    assert json.loads((out / "config.json").read_text())["train"]["lr"] == 0.0003
    code, _, err = cli(capsys, *base, "--epochs", "3", "--resume", "--batch-size", "7")
    assert "only --epochs, --lr and --data-dir" in one_line_error(code, err)


def test_tcvae_evaluation_decomposes_the_kl_against_the_training_set(capsys, tmp_path):
    # catches: evaluate printing the minibatch estimates of the training rows (tc larger than the KL)
    env = os.environ.get("VGM_DSPRITES_SIZE")
    os.environ["VGM_DSPRITES_SIZE"] = "1000"
    try:
        assert cli(capsys, "train", "tcvae", "--epochs", "2", "--hidden", "32", "--quiet", "--out", tmp_path / "t")[0] == 0
        code, out, err = cli(capsys, "evaluate", tmp_path / "t", "--iw-samples", "2", "--json")
    finally:
        if env is None:
            del os.environ["VGM_DSPRITES_SIZE"]
        else:
            os.environ["VGM_DSPRITES_SIZE"] = env
    res = json.loads(out)
    assert res["tc_pool"] == 810 and res["tc"] >= -0.05 and res["mi"] >= -0.05
    # mi + tc + dwkl = log q(z|x) − log p(z) per example, whose mean over 100 examples estimates the KL
    assert res["mi"] + res["tc"] + res["dwkl"] == pytest.approx(res["kl"], abs=0.25 + 0.1 * res["kl"])


def test_a_text_run_refuses_data_with_another_alphabet():
    from vgm.run import checked_split
    names = vgm.load_data("names")
    model = MODELS["seqvae"](alphabet="abc", max_len=12, hidden=8)
    with pytest.raises(vgm.VgmError, match="alphabet"):
        checked_split(model, names, "test")
