"""The trainer's options (issue 21 §2): --lr-schedule with --warmup, --clip-grad, --patience; each against a
closed form or a direct count, each resumable exactly."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import vgm
from vgm.checkpoint import read_safetensors
from vgm.errors import VgmError
from vgm.train import TrainConfig, fit, lr_factor

from conftest import run_cli


def small_data(n: int = 200):
    data = vgm.load_data("digits")
    data.train, data.val = data.train[:n], data.val[:50]
    return data


def small_vae():
    torch.manual_seed(0)
    return vgm.VAE(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,), likelihood="gaussian")


class StepLog:
    """Every optimizer step of a block: the first param group's lr and the global norm of the gradients it
    applies (after any clipping), for the optimizers whose parameters are `params`."""

    def __init__(self, model):
        self.ids = {id(p) for p in model.parameters()}
        self.lrs: list[float] = []
        self.norms: list[float] = []

    def __call__(self, opt, args, kwargs):
        params = [p for g in opt.param_groups for p in g["params"]]
        if not params or id(params[0]) not in self.ids:
            return
        self.lrs.append(opt.param_groups[0]["lr"])
        grads = [p.grad.double() for p in params if p.grad is not None]
        self.norms.append(math.sqrt(sum(float((g * g).sum()) for g in grads)))

    def __enter__(self):
        self.handle = register_optimizer_step_pre_hook(self)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def expected_lr(lr: float, t: int, total: int, warmup: int, schedule: str) -> float:
    """Written out independently: linear from 0 over `warmup` steps, then constant or half a cosine to 0 at `total`."""
    if t < warmup:
        return lr * t / warmup
    if schedule == "constant":
        return lr
    return lr * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) / 2


@pytest.mark.parametrize("schedule,warmup", [("cosine", 5), ("constant", 3), ("cosine", 0)])
def test_the_learning_rate_of_every_step_is_the_closed_form(schedule, warmup):
    # 200 examples in batches of 64: 4 steps an epoch (the last of 8), 3 epochs, 12 steps
    # catches: the warm-up or cosine counted per epoch instead of per step, the cosine's length not the run's,
    # the rate set after the step it is meant for, or the schedule not reaching the optimizer at all
    model = small_vae()
    with StepLog(model) as log:
        fit(model, small_data(), TrainConfig(epochs=3, batch_size=64, lr=2e-3, lr_schedule=schedule, warmup=warmup),
            progress=False)
    want = [expected_lr(2e-3, t, 12, warmup, schedule) for t in range(12)]
    assert log.lrs == pytest.approx(want, rel=1e-12, abs=1e-15)
    if warmup:
        assert log.lrs[0] == 0 and log.lrs[warmup] == pytest.approx(2e-3)
    assert [lr_factor(t, 12, warmup, schedule) for t in range(12)] == pytest.approx([w / 2e-3 for w in want])


def test_the_default_schedule_leaves_the_rate_alone():
    model = small_vae()
    with StepLog(model) as log:
        fit(model, small_data(), TrainConfig(epochs=2, batch_size=64, lr=3e-3), progress=False)
    assert log.lrs == [3e-3] * 8


def test_clipping_bounds_the_gradient_and_the_clipped_share_is_a_direct_count(monkeypatch):
    # catches: clipping after the optimizer step (or not at all), the share counted as steps with a norm below
    # the bound, a count that is not reset each epoch, or a share over the examples instead of the steps
    pre: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *a, **kw):
        norm = clip(params, max_norm, *a, **kw)
        pre.append(float(norm))
        return norm
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    model = small_vae()
    bound = 525.0           # this run's norms fall from about 600 to 460: some steps above it, some below
    with StepLog(model) as log:
        hist = fit(model, small_data(), TrainConfig(epochs=3, batch_size=64, clip_grad=bound), progress=False)
    assert len(pre) == len(log.norms) == 12
    for before, after in zip(pre, log.norms):
        assert after <= bound * (1 + 1e-5)
        assert after == pytest.approx(min(before, bound), rel=1e-4)      # only norms above the bound shrink
    counts = [sum(n > bound for n in pre[4 * e:4 * e + 4]) for e in range(3)]
    assert [r["clipped"] for r in hist] == [c / 4 for c in counts]
    assert 0 < sum(counts) < 12, pre                                 # the bound is neither always nor never hit
    unclipped = fit(small_vae(), small_data(), TrainConfig(epochs=1, batch_size=64), progress=False)
    assert "clipped" not in unclipped[0]


def scripted_scores(monkeypatch, scores: dict[int, float], start: int = 0):
    """Make the validation score of epoch e (1-based) scores[e], whatever the model does."""
    epoch = [start]

    def score(terms):
        epoch[0] += 1
        return scores[epoch[0]]
    monkeypatch.setattr(vgm.train, "selection_score", score)
    return epoch


SCORES = {1: 1.0, 2: 3.0, 3: 2.0, 4: 2.9, 5: 2.5, 6: 9.0, 7: 9.5, 8: 10.0, 9: 11.0, 10: 12.0}


def test_patience_stops_at_the_right_epoch_and_keeps_the_best(tmp_path, monkeypatch):
    # best at epoch 2; epochs 3, 4, 5 do not beat it: with patience 3, training stops after epoch 5
    # catches: a patience counted from the last improvement of any size (or from epoch 0), one epoch too many or
    # too few, the last epoch's weights kept instead of the best one's, or patience ignored on resume
    scripted_scores(monkeypatch, SCORES)
    model = small_vae()
    hist = fit(model, small_data(), TrainConfig(epochs=10, batch_size=64, patience=3), run_dir=tmp_path / "p",
               progress=False)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4, 5]
    scripted_scores(monkeypatch, SCORES)
    two = small_vae()
    fit(two, small_data(), TrainConfig(epochs=2, batch_size=64), progress=False)       # epoch 2's weights
    for k, v in two.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    saved, _ = read_safetensors(tmp_path / "p" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in two.state_dict().items())
    # interrupted after epoch 4 and resumed: it stops after epoch 5 as well, with the same weights
    scripted_scores(monkeypatch, SCORES)
    fit(small_vae(), small_data(), TrainConfig(epochs=4, batch_size=64, patience=3), run_dir=tmp_path / "r",
        progress=False)
    scripted_scores(monkeypatch, SCORES, start=4)
    again = small_vae()
    hist = fit(again, small_data(), TrainConfig(epochs=10, batch_size=64, patience=3), run_dir=tmp_path / "r",
               resume=True, progress=False)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4, 5]
    assert all(torch.equal(again.state_dict()[k], v) for k, v in two.state_dict().items())
    # a run that has stopped stays stopped when resumed
    scripted_scores(monkeypatch, SCORES, start=5)
    hist = fit(small_vae(), small_data(), TrainConfig(epochs=10, batch_size=64, patience=3),
               run_dir=tmp_path / "r", resume=True, progress=False)
    assert len(hist) == 5


def test_warmup_cosine_and_clipping_resume_exactly(tmp_path, monkeypatch):
    # catches: a schedule restarted at step 0 on resume (or recomputed from the checkpoint's last rate), or a
    # base rate taken from the checkpoint's annealed one
    cfg = dict(batch_size=64, seed=5, lr=3e-3, lr_schedule="cosine", warmup=6, clip_grad=525.0)
    whole = small_vae()
    h_whole = fit(whole, small_data(), TrainConfig(epochs=4, **cfg), run_dir=tmp_path / "whole", progress=False)
    save = vgm.train.save_checkpoint

    def killed_after_epoch_2(path, model, opts, rng, info):      # a 4-epoch run killed once epoch 2 is written
        save(path, model, opts, rng, info)
        if info["epoch"] == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(vgm.train, "save_checkpoint", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(small_vae(), small_data(), TrainConfig(epochs=4, **cfg), run_dir=tmp_path / "part", progress=False)
    monkeypatch.undo()
    _, meta = read_safetensors(tmp_path / "part" / "checkpoint.safetensors")
    assert json.loads(meta["info"])["step"] == 8          # the schedule's state: 2 epochs of 4 steps
    part = small_vae()
    with StepLog(part) as log:
        h_part = fit(part, small_data(), TrainConfig(epochs=4, **cfg), run_dir=tmp_path / "part", resume=True,
                     progress=False)
    assert log.lrs == pytest.approx([expected_lr(3e-3, t, 16, 6, "cosine") for t in range(8, 16)], rel=1e-12)
    ta, _ = read_safetensors(tmp_path / "whole" / "checkpoint.safetensors")
    tb, _ = read_safetensors(tmp_path / "part" / "checkpoint.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert [r["clipped"] for r in h_whole] == [r["clipped"] for r in h_part]
    assert [r["train"] for r in h_whole] == [r["train"] for r in h_part]


@pytest.mark.parametrize("field,value", [("lr_schedule", "linear"), ("warmup", -1), ("patience", -2),
                                         ("clip_grad", -1.0), ("clip_grad", math.inf), ("clip_grad", math.nan)])
def test_bad_trainer_options_are_refused(field, value):
    with pytest.raises(VgmError, match=field.replace("_", "-") if field != "warmup" else "warmup"):
        TrainConfig(**{field: value})


def test_the_options_are_command_line_flags(tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "vae", "--data", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "2",
                "--batch-size", "256", "--lr-schedule", "cosine", "--warmup", "3", "--clip-grad", "50",
                "--patience", "4", "--quiet", "--out", out)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert (cfg["lr_schedule"], cfg["warmup"], cfg["clip_grad"], cfg["patience"]) == ("cosine", 3, 50.0, 4)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0 <= r["clipped"] <= 1 for r in rows)
    bad = run_cli("train", "vae", "--data", "digits", "--lr-schedule", "step", "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "--lr-schedule" in bad.stderr and "Traceback" not in bad.stderr
