"""The command line end to end, in subprocesses: a run's life cycle, and one clear line for every bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_mnist_folder, run_cli, write_idx


def assert_one_line_error(r, *fragments):
    assert r.returncode != 0, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("vgm: error:"), lines[0]
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae"
    r = run_cli("train", "vae", "--epochs", 3, "--latent-dim", 4, "--hidden", "64,32", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def test_run_folder_contents_and_commands(digits_run, tmp_path):
    for f in ("config.json", "model.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl"):
        assert (digits_run / f).is_file(), f
    cfg = json.loads((digits_run / "config.json").read_text())
    assert cfg["kind"] == "vae" and cfg["model"]["latent_dim"] == 4 and cfg["model"]["hidden"] == [64, 32]
    rows = [json.loads(l) for l in (digits_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"recon", "kl", "elbo"} <= set(rows[0]["train"]) and {"recon", "kl", "elbo"} <= set(rows[0]["val"])
    r = run_cli("evaluate", digits_run, "--iw-samples", 50, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for k in ("elbo", "recon", "kl", "log_px", "bits_per_dim", "iw_samples", "n_examples"):
        assert k in res, k
    assert res["n_examples"] == 359 and res["iw_samples"] == 50
    assert res["log_px"] >= res["elbo"] - 0.5
    assert abs(res["elbo"] + res["recon"] + res["kl"]) < 1e-4
    again = json.loads(run_cli("evaluate", digits_run, "--iw-samples", 50, "--json").stdout)
    assert again == res                                            # same seed, same numbers
    for cmd in ("sample", "reconstruct"):
        png = tmp_path / f"{cmd}.png"
        r = run_cli(cmd, digits_run, "--out", png)
        assert r.returncode == 0, r.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_run_is_never_overwritten(digits_run):
    before = snapshot(digits_run)
    r = run_cli("train", "vae", "--epochs", 1, "--out", digits_run)
    assert_one_line_error(r, "already holds a run", "--resume", "--force")
    assert snapshot(digits_run) == before


def test_force_replaces_only_on_success(digits_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = snapshot(run)
    # a replacement that fails (the loss overflows at once) leaves the old run exactly as it was
    r = run_cli("train", "vae", "--force", "--lr", "1e30", "--epochs", 2, "--out", run, "--quiet")
    assert_one_line_error(r, "NaN or infinite", "previous run", "restored")
    assert snapshot(run) == before and not (run / ".vgm-replaced").exists()
    r = run_cli("train", "vae", "--force", "--epochs", 1, "--latent-dim", 3, "--hidden", "16", "--out", run, "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "config.json").read_text())["model"]["latent_dim"] == 3
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1 and not (run / ".vgm-replaced").exists()


def test_a_run_that_fails_in_its_first_epoch_leaves_nothing_behind(tmp_path):
    out = tmp_path / "new"
    r = run_cli("train", "vae", "--lr", "1e30", "--epochs", 2, "--out", out, "--quiet")
    assert_one_line_error(r, "NaN or infinite")
    assert not out.exists()


def test_resume_refuses_a_changed_configuration(digits_run):
    before = snapshot(digits_run)
    r = run_cli("train", "vae", "--resume", "--latent-dim", 9, "--out", digits_run)
    assert_one_line_error(r, "--latent-dim 9 differs")
    assert snapshot(digits_run) == before


def test_killed_then_resumed_run_equals_uninterrupted(tmp_path):
    """SIGKILL a training process mid-run, resume it, and get exactly the uninterrupted run's numbers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["train", "vae", "--epochs", 6, "--hidden", "128,64", "--latent-dim", 4, "--batch-size", 8,
            "--binarize", "dynamic", "--seed", 5, "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "vgm.cli", *map(str, args), "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / "checkpoint.safetensors").exists():
            break
        time.sleep(0.05)
    was_running = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert was_running, "training finished before it could be interrupted"
    done = len(metrics.read_text().splitlines())
    assert done < 6
    r = run_cli("train", "vae", "--resume", "--out", killed, "--quiet")
    assert r.returncode == 0, r.stderr
    full = tmp_path / "full"
    assert run_cli(*args, "--out", full).returncode == 0
    strip = lambda p: [{k: v for k, v in json.loads(l).items() if k not in ("seconds", "train_seconds")} for l in p.read_text().splitlines()]
    assert strip(metrics) == strip(full / "metrics.jsonl")
    assert (killed / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()


@pytest.mark.parametrize("args, fragment", [
    (["train", "vae", "--arch", "resnet"], "invalid choice: 'resnet'"),
    (["train", "vae", "--latent-dim", "0"], "latent_dim must be >= 1"),
    (["train", "vae", "--lr", "nan"], "expected a finite number"),
    (["train", "vae", "--epochs", "-3"], "epochs must be >= 1"),
    (["train", "vae", "--hidden", "512,x"], "comma-separated integers"),
    (["train", "vae", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "vae", "--sigma", "1e400"], "expected a finite number"),
    (["train", "vae", "--seed", "-1"], "seed must be between"),
    (["train", "gan"], "unknown model 'gan'"),
    (["train", "vae", "--data", "mnist", "--data-dir", "/nonexistent/folder"], "does not exist"),
    (["evaluate", "/nonexistent/run"], "does not exist"),
    (["frobnicate"], "unknown command"),
])
def test_bad_options_give_one_line(tmp_path, args, fragment):
    r = run_cli(*args, "--out", tmp_path / "x") if args[0] == "train" else run_cli(*args)
    assert_one_line_error(r, fragment)
    assert not (tmp_path / "x" / "config.json").exists()


def test_mnist_without_a_folder(tmp_path):
    r = run_cli("train", "vae", "--data", "mnist", "--out", tmp_path / "x", env={"VGM_DATA_DIR": ""})
    assert_one_line_error(r, "--data-dir", "VGM_DATA_DIR")


def test_malformed_data_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("train", "vae", "--data", "mnist", "--data-dir", empty, "--out", tmp_path / "a"),
                          "not an MNIST-format folder")
    bad = make_mnist_folder(tmp_path / "bad", 50, 20)
    (bad / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    assert_one_line_error(run_cli("train", "vae", "--data", "mnist", "--data-dir", bad, "--out", tmp_path / "b"),
                          "train-images-idx3-ubyte.gz")
    trunc = make_mnist_folder(tmp_path / "trunc", 50, 20, gz=False)
    raw = (trunc / "t10k-images-idx3-ubyte").read_bytes()
    (trunc / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
    assert_one_line_error(run_cli("train", "vae", "--data", "mnist", "--data-dir", trunc, "--out", tmp_path / "c"),
                          "truncated or corrupt")
    magic = make_mnist_folder(tmp_path / "magic", 50, 20, gz=False)
    (magic / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert_one_line_error(run_cli("train", "vae", "--data", "mnist", "--data-dir", magic, "--out", tmp_path / "d"),
                          "bad magic number")


def test_nan_in_data(tmp_path):
    folder = make_mnist_folder(tmp_path / "nan", 60, 20)
    imgs = np.random.default_rng(0).random((60, 28, 28)).astype(np.float32)
    imgs[3, 4, 5] = np.nan
    write_idx(folder / "train-images-idx3-ubyte.gz", imgs)       # IDX float32 type code 0x0D
    r = run_cli("train", "vae", "--data", "mnist", "--data-dir", folder, "--out", tmp_path / "r")
    assert_one_line_error(r, "NaN")
    assert not (tmp_path / "r").exists()


def test_images_of_the_wrong_size_for_the_model(tmp_path):
    small = make_mnist_folder(tmp_path / "s28", 200, 50, side=28)
    out = tmp_path / "run"
    assert run_cli("train", "vae", "--data", "mnist", "--data-dir", small, "--epochs", 1, "--hidden", "32",
                   "--out", out, "--quiet").returncode == 0
    other = make_mnist_folder(tmp_path / "s16", 200, 50, side=16)
    assert_one_line_error(run_cli("evaluate", out, "--data-dir", other), "shape (1, 16, 16)", "(1, 28, 28)")
    assert_one_line_error(run_cli("reconstruct", out, "--data-dir", other), "shape (1, 16, 16)")


def test_corrupt_and_foreign_checkpoints(digits_run, tmp_path):
    import shutil
    bad = tmp_path / "corrupt"
    shutil.copytree(digits_run, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("evaluate", bad), "model.safetensors", "corrupt")
    assert_one_line_error(run_cli("sample", bad), "corrupt")

    foreign = tmp_path / "foreign"
    shutil.copytree(digits_run, foreign)
    from safetensors.numpy import save_file
    save_file({"conv1.weight": np.zeros((3, 3), np.float32)}, str(foreign / "model.safetensors"))
    assert_one_line_error(run_cli("evaluate", foreign), "does not fit the model")

    pickled = tmp_path / "pickled"
    shutil.copytree(digits_run, pickled)
    (pickled / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n" + b"\0" * 64)   # a pickle
    assert_one_line_error(run_cli("evaluate", pickled), "corrupt")

    unknown = tmp_path / "unknown"
    shutil.copytree(digits_run, unknown)
    (unknown / "model.json").write_text(json.dumps({"format": "vgm/1", "kind": "gan", "config": {}}))
    assert_one_line_error(run_cli("evaluate", unknown), "unknown model kind 'gan'")

    wrong_kind = tmp_path / "wrongkind"                 # a valid safetensors file, but not a training checkpoint
    shutil.copytree(digits_run, wrong_kind)
    shutil.copy(wrong_kind / "model.safetensors", wrong_kind / "checkpoint.safetensors")
    before = snapshot(wrong_kind)
    assert_one_line_error(run_cli("train", "vae", "--resume", "--epochs", 7, "--out", wrong_kind),
                          "not a vgm training checkpoint")
    assert snapshot(wrong_kind) == before

    bad_cfg = tmp_path / "badcfg"
    shutil.copytree(digits_run, bad_cfg)
    (bad_cfg / "config.json").write_text('{"kind": "vae"}')
    assert_one_line_error(run_cli("evaluate", bad_cfg), "not a vgm run configuration")
    assert_one_line_error(run_cli("train", "vae", "--resume", "--out", bad_cfg), "not a vgm run configuration")

    broken_ckpt = tmp_path / "ckpt"
    shutil.copytree(digits_run, broken_ckpt)
    (broken_ckpt / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    before = snapshot(broken_ckpt)
    assert_one_line_error(run_cli("train", "vae", "--resume", "--epochs", 5, "--out", broken_ckpt), "checkpoint.safetensors")
    assert snapshot(broken_ckpt) == before


def test_help_and_version():
    r = run_cli("--help")
    assert r.returncode == 0 and "train" in r.stdout and "vae" in r.stdout
    r = run_cli("train", "vae", "--help")
    assert r.returncode == 0 and "--latent-dim" in r.stdout and "--beta" in r.stdout
