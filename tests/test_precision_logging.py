"""Training precision (bf16 autocast on CPU; fp16 needs a GPU), the compiled step, and TensorBoard event files."""
from __future__ import annotations

import json

import pytest
import torch

import vgm
from vgm.cli import main


def train(capsys, tmp_path, name, *extra) -> tuple[int, str]:
    code = main(["train", "vae", "--latent-dim", "4", "--hidden", "64", "--epochs", "3", "--seed", "2", "--quiet",
                 "--out", str(tmp_path / name), *extra])
    return code, capsys.readouterr().err


def test_bf16_training_is_evaluated_in_fp32_and_lands_near_fp32_training(capsys, tmp_path):
    assert train(capsys, tmp_path, "fp32")[0] == 0
    code, err = train(capsys, tmp_path, "bf16", "--precision", "bf16")
    assert code == 0, err
    data = vgm.load_data("digits").test
    a, b = vgm.load(tmp_path / "fp32"), vgm.load(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in b.parameters())           # weights stay fp32 (autocast)
    torch.manual_seed(0)
    ea = vgm.evaluate(a, data, iw_samples=10)
    torch.manual_seed(0)
    eb = vgm.evaluate(b, data, iw_samples=10)
    # the same seed and data: bf16 arithmetic in training moves the result by well under 2% of the ELBO
    assert abs(eb["elbo"] - ea["elbo"]) < 0.02 * abs(ea["elbo"])
    # and evaluation itself is fp32 whatever surrounds it: an enclosing bf16 autocast changes nothing
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ec = vgm.evaluate(b, data, iw_samples=10)
    assert ec["elbo"] == pytest.approx(eb["elbo"], rel=1e-6)


def test_fp16_on_a_cpu_is_one_line(capsys, tmp_path):
    code, err = train(capsys, tmp_path, "fp16", "--precision", "fp16", "--device", "cpu")
    assert code == 2 and "fp16 training needs a GPU" in err and len(err.strip().splitlines()) == 1


def test_a_compiled_step_trains_like_the_eager_one(capsys, tmp_path):
    assert train(capsys, tmp_path, "eager")[0] == 0
    code, err = train(capsys, tmp_path, "compiled", "--compile")
    assert code == 0, err
    rows = lambda r: [json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows("eager"), rows("compiled")):
        assert b["val"]["elbo"] == pytest.approx(a["val"]["elbo"], rel=1e-3)


def test_tensorboard_events_hold_the_metrics(capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    code, err = train(capsys, tmp_path, "tb", "--tensorboard")
    assert code == 0, err
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    rows = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    got = [e.value for e in acc.Scalars("val/elbo")]
    assert got == pytest.approx([r["val"]["elbo"] for r in rows], rel=1e-6)
    assert [e.step for e in acc.Scalars("train/recon")] == [1, 2, 3]
    assert "samples" in acc.Tags()["images"] and "lr" in acc.Tags()["scalars"]
