"""The trainer's guards: NaN stops that leave only finite files behind, resume with a new learning rate,
seeds derived per purpose, one-line errors, and progress output for terminals and logs."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch

import vgm
from vgm.checkpoint import read_safetensors
from vgm.data import load as load_data
from vgm.train import TrainConfig, derived_seed, evaluate_terms, fit

# 1294 training digits / 256 per batch = 6 steps per epoch
CFG = dict(batch_size=256, log_every=50)


class Faulty(vgm.VAE):
    """A VAE that goes wrong on cue: a NaN gradient at training step `grad_step` (its loss stays finite), or an
    infinite validation ELBO after `val_after` training steps (its weights stay finite)."""
    grad_step, val_after, steps = 0, 0, 0

    def loss(self, x):
        t = super().loss(x)
        if self.training:
            Faulty.steps += 1
            if Faulty.steps == Faulty.grad_step:
                t["loss"].register_hook(lambda g: torch.full_like(g, math.nan))
        elif Faulty.val_after and Faulty.steps >= Faulty.val_after:
            t["elbo"] = t["elbo"] + math.inf
        return t


def faulty(grad_step=0, val_after=0) -> Faulty:
    Faulty.grad_step, Faulty.val_after, Faulty.steps = grad_step, val_after, 0
    torch.manual_seed(0)
    return Faulty(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,))


def ckpt_info(run):
    tensors, meta = read_safetensors(run / "checkpoint.safetensors")
    return tensors, json.loads(meta["info"]), json.loads(meta["param_groups"])


@pytest.mark.parametrize("fault, message", [
    (dict(grad_step=12), r"weights became NaN or infinite in epoch 2\b"),     # the last step of epoch 2
    (dict(val_after=12), r"validation terms became NaN or infinite at epoch 2\b"),
])
def test_nonfinite_epoch_is_never_written_and_resume_with_smaller_lr_works(tmp_path, fault, message):
    data = load_data("digits")
    model = faulty(**fault)
    with pytest.raises(vgm.VgmError, match=message) as err:
        fit(model, data, TrainConfig(epochs=3, **CFG), run_dir=tmp_path, progress=False)
    # the message is true: it names the checkpoint that is on disk
    assert "keeps the checkpoint of epoch 1" in str(err.value)
    tensors, info, _ = ckpt_info(tmp_path)
    assert info["epoch"] == 1 and len(info["history"]) == 1
    assert all(torch.isfinite(v).all() for v in tensors.values())
    best, _ = read_safetensors(tmp_path / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in best.values())
    text = (tmp_path / "metrics.jsonl").read_text()
    rows = [json.loads(l, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl")) for l in text.splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    # the model is handed back with its best (epoch 1) weights, not the broken ones
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k])
    # resume with a smaller learning rate: the new rate is used and saved, the run finishes
    torch.manual_seed(0)
    again = vgm.VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,))
    hist = fit(again, data, TrainConfig(epochs=3, lr=1e-4, **CFG), run_dir=tmp_path, resume=True, progress=False)
    assert [r["epoch"] for r in hist] == [1, 2, 3] and hist[0] == rows[0]
    _, info, groups = ckpt_info(tmp_path)
    assert info["epoch"] == 3 and [g["lr"] for g in groups] == [1e-4]


def test_new_lr_on_resume_drives_the_updates(tmp_path):
    """Resuming with lr 0 leaves the weights where the checkpoint had them; the old lr would move them."""
    data = load_data("digits")
    model = faulty()
    fit(model, data, TrainConfig(epochs=1, **CFG), run_dir=tmp_path, progress=False)
    saved, _, _ = ckpt_info(tmp_path)
    fit(model, data, TrainConfig(epochs=2, lr=1e-300, **CFG), run_dir=tmp_path, resume=True, progress=False)
    now, _, _ = ckpt_info(tmp_path)
    weights = [k for k in saved if k.startswith("model.")]
    assert all(torch.equal(saved[k], now[k]) for k in weights)


def test_nan_in_the_first_epoch_says_no_checkpoint_exists(tmp_path):
    with pytest.raises(vgm.VgmError, match="no epoch had finished") as err:
        fit(faulty(grad_step=6), load_data("digits"), TrainConfig(epochs=2, **CFG), run_dir=tmp_path,
            progress=False)
    assert "keeps" not in str(err.value)
    assert not (tmp_path / "checkpoint.safetensors").exists()
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_derived_seeds_are_distinct_fixed_and_in_range():
    seeds = {(s, p): derived_seed(s, p) for s in (0, 1, 2 ** 63 - 1) for p in ("init", "train", "shuffle")}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2 ** 63 for v in seeds.values())
    assert derived_seed(0, "init") == derived_seed(0, "init")
    assert all(v not in (0, 1) for v in seeds.values())


class Recorder(vgm.VAE):
    """Records the global RNG state at its first training step."""
    first = None

    def loss(self, x):
        if self.training and Recorder.first is None:
            Recorder.first = torch.get_rng_state()
        return super().loss(x)


def test_training_noise_does_not_repeat_the_initialisation_stream():
    seed = 5
    torch.manual_seed(seed)                   # how a caller seeds the initialisation (vgm.experiments; the CLI)
    init_stream = torch.randn(64)
    torch.manual_seed(derived_seed(seed, "init"))
    init_stream_derived = torch.randn(64)
    Recorder.first = None
    model = Recorder(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,))
    fit(model, load_data("digits"), TrainConfig(epochs=1, seed=seed, **CFG), progress=False)
    train_stream = _draws(Recorder.first)
    for other in (init_stream, init_stream_derived):
        assert not torch.isclose(train_stream, other).any()


def _draws(state: torch.Tensor) -> torch.Tensor:
    saved = torch.get_rng_state()
    torch.set_rng_state(state)
    out = torch.randn(64)
    torch.set_rng_state(saved)
    return out


def test_resume_without_a_run_folder_is_a_one_line_error():
    with pytest.raises(vgm.VgmError, match="resume needs the run folder"):
        fit(faulty(), load_data("digits"), TrainConfig(epochs=1), resume=True, progress=False)


def test_evaluate_terms_restores_training_mode_when_it_raises():
    class Broken(vgm.VAE):
        def loss(self, x):
            raise RuntimeError("broken")
    model = Broken(input_shape=(1, 8, 8), latent_dim=2, hidden=(8,)).train()
    with pytest.raises(RuntimeError):
        evaluate_terms(model, torch.rand(3, 1, 8, 8))
    assert model.training


class FakeTerminal:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_is_plain_lines_in_logs_and_a_bar_on_terminals(capsys, monkeypatch):
    data = load_data("digits")
    fit(faulty(), data, TrainConfig(epochs=2, **CFG), progress=True)
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert out.out == "" and "\r" not in out.err and len(lines) == 2
    assert lines[0].startswith("epoch   1/2  train elbo") and lines[1].startswith("epoch   2/2")
    fit(faulty(), data, TrainConfig(epochs=2, **CFG), progress=False)
    assert capsys.readouterr() == ("", "")
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    fit(faulty(), data, TrainConfig(epochs=2, **CFG), progress=True)
    assert "\r" in term.text and "epoch   2/2  train elbo" in term.text


def test_all_finite_sees_one_bad_value_anywhere_and_no_overflow_in_large_finite_ones():
    """Catches a finite check that skips the optimizer state or buffers, that misses a NaN (a max that drops NaNs),
    or that squares values (an L2 norm overflows at 1e20 in float32 and would call finite weights broken)."""
    from vgm.train import all_finite
    torch.manual_seed(0)
    model = vgm.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=(8,))
    model.register_buffer("extra", torch.zeros(3, dtype=torch.float64))
    model.register_buffer("empty", torch.zeros(0))                  # (no inf-norm of an empty tensor exists)
    opt = torch.optim.Adam(model.parameters())
    model.loss(torch.rand(4, 1, 8, 8).round())["loss"].mean().backward()
    opt.step()
    assert all_finite(model, opt)
    p = next(model.parameters())
    with torch.no_grad():
        p.view(-1)[3] = 1e30                                    # large, finite
    assert all_finite(model, opt)
    for where in ("weight", "state", "buffer"):
        for bad in (math.nan, math.inf, -math.inf):
            t = {"weight": p, "state": opt.state[p]["exp_avg_sq"], "buffer": model.extra}[where]
            old = t.view(-1)[-1].item()
            with torch.no_grad():
                t.view(-1)[-1] = bad
            assert not all_finite(model, opt), (where, bad)
            with torch.no_grad():
                t.view(-1)[-1] = old
    assert all_finite(model, opt)


def test_a_checkpoint_of_the_default_adam_resumes_on_the_fused_one(tmp_path):
    """Catches a resume that restores the saved kernel choice (a checkpoint written before the trainer used the
    fused Adam says fused: None, and the run would stay on the 3.6x slower default for good) or that loses the
    optimizer state on the way."""
    from safetensors.torch import save_file
    from vgm.checkpoint import load_checkpoint
    from vgm.train import adam
    data = load_data("digits")
    fit(faulty(), data, TrainConfig(epochs=1, **CFG), run_dir=tmp_path, progress=False)
    tensors, meta = read_safetensors(tmp_path / "checkpoint.safetensors")
    groups = json.loads(meta["param_groups"])
    assert groups[0]["fused"] is True
    groups[0]["fused"] = None                                      # as the default Adam writes it
    save_file(tensors, str(tmp_path / "checkpoint.safetensors"), metadata={**meta, "param_groups": json.dumps(groups)})
    model = faulty()
    opt = adam(model.parameters(), 1e-3)
    load_checkpoint(tmp_path / "checkpoint.safetensors", model, opt)
    assert opt.param_groups[0]["fused"] is True
    first = next(model.parameters())
    assert torch.equal(opt.state[first]["exp_avg"], tensors["optim.0.exp_avg"])
    model.loss(data.train[:8])["loss"].mean().backward()
    opt.step()                                                     # the fused kernel accepts the restored state
