"""The run folder and the command line under attack (issue 20): one process per run folder, a --force that can be
killed at any point, run files that are not what they claim (NaN weights, /dev/zero, huge sizes), read-only
folders, a peer that dies under torchrun, and the small things a newcomer trips over."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vgm
from vgm.cli import main
from vgm.registry import MODELS

from conftest import run_cli

SMALL = ["--latent-dim", "2", "--hidden", "8", "--quiet"]


def cli(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:          # argparse's usage errors and --help
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vgm: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    return out


# ----- 4: the β-TCVAE note is TCVAE's own --------------------------------------------------------------------

def test_the_minibatch_estimate_note_is_printed_for_tcvae_only(capsys, tmp_path):
    # catches: cli.py printing the β-TCVAE note whenever a `tc` term was logged (FactorVAE logs one too)
    note = "minibatch estimates"
    args = ["--data", "digits", "--arch", "mlp", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    code, out, err = cli(capsys, "train", "factorvae", *args, "--disc-hidden", "8", "--disc-layers", "1",
                         "--out", tmp_path / "f")
    assert code == 0, err
    assert "tc" in json.loads((tmp_path / "f" / "metrics.jsonl").read_text().splitlines()[0])["val"]
    assert "done:" in out and note not in out
    code, out, err = cli(capsys, "train", "tcvae", *args, "--out", tmp_path / "t")
    assert code == 0, err
    assert note in out and f"vgm evaluate {tmp_path / 't'}" in out
    assert vgm.Model.training_note is None and MODELS["tcvae"].training_note


# ----- 23: a model class without a docstring ---------------------------------------------------------------

def test_a_registered_model_without_a_docstring_trains(capsys, tmp_path):
    # catches: train_parser's (cls.__doc__ or "").strip().splitlines()[0] (IndexError on an empty docstring)
    class NoDoc(vgm.VAE):
        pass
    assert NoDoc.__doc__ is None
    vgm.register_model("nodoc-vae", data=("images",), default_data="digits")(NoDoc)
    try:
        code, out, _ = cli(capsys, "train", "nodoc-vae", "--help")
        assert code == 0 and "usage: vgm train nodoc-vae" in out
        code, _, err = cli(capsys, "train", "nodoc-vae", *SMALL, "--epochs", "1", "--out", tmp_path / "r")
        assert code == 0, err
    finally:
        MODELS.pop("nodoc-vae")
