"""The trainer's two hooks for models beyond loss(x): labels for conditional models (loss(x, y), shuffled with
their examples) and a second optimizer for auxiliary parameters (each loss reaches only its own parameters, both
optimizer states are checkpointed, and a resumed run equals an uninterrupted one)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import vgm
from vgm.base import Model


@dataclass
class ClassMeansConfig:
    input_shape: tuple[int, ...] = (1, 8, 8)


class ClassMeans(Model):
    """loss(x, y) = ‖x − μ_y‖²: trained, μ_c is the mean of the training images of class c."""

    Config = ClassMeansConfig
    conditional = True

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        self.mu = nn.Parameter(torch.zeros(10, 64))

    def loss(self, x, y):
        err = ((x.flatten(1) - self.mu[y]) ** 2).sum(1)
        return {"loss": err}


@dataclass
class TwoPartsConfig:
    input_shape: tuple[int, ...] = (1, 8, 8)


class TwoParts(Model):
    """Main parameter a, auxiliary parameter b: loss = (a − b)², aux_loss = (b − 1.5)² (from a detached a)."""

    Config = TwoPartsConfig

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.ones(()))

    def auxiliary_parameters(self):
        return [self.b]

    def loss(self, x):
        n = x.shape[0]
        return {"loss": ((self.a - self.b) ** 2).expand(n), "aux_loss": ((self.b - 1.5) ** 2).expand(n)}


def test_conditional_models_get_the_labels_of_their_examples():
    # catches: labels not shuffled with the images (μ_c would all tend to the overall mean), or not passed
    data = vgm.load_data("digits")
    model = ClassMeans()
    vgm.fit(model, data, vgm.TrainConfig(epochs=40, batch_size=64, lr=0.02, seed=0), progress=False)
    overall = data.train.flatten(1).mean(0)
    for c in range(10):
        want = data.train[data.train_labels == c].flatten(1).mean(0)
        err = (model.mu[c] - want).abs().mean()
        assert err < 0.015, c                                                # Adam's noise about the optimum
        assert (overall - want).abs().mean() > 3 * err                       # what mixed-up labels would give


def test_a_conditional_model_on_unlabelled_data_is_refused():
    data = vgm.load_data("moons")
    with pytest.raises(vgm.VgmError, match="conditioned on labels"):
        vgm.fit(ClassMeans(input_shape=(2,)), data, vgm.TrainConfig(epochs=1), progress=False)


def test_each_loss_reaches_only_its_own_parameters():
    # Adam's first step moves a parameter by lr against the sign of its gradient. b's own loss pulls it up
    # (d/db = −1); the main loss would push it down (d/db = +2): b rises by lr only if the main loss's gradient
    # stays away from it, and a rises by lr (d/da = −2).
    data = vgm.load_data("digits")
    data.train = data.train[:16]
    model = TwoParts()
    vgm.fit(model, data, vgm.TrainConfig(epochs=1, batch_size=16, lr=0.01), progress=False)
    assert model.a.item() == pytest.approx(0.01, abs=1e-6)
    assert model.b.item() == pytest.approx(1.01, abs=1e-6)


def test_two_optimizers_resume_exactly(tmp_path):
    data = vgm.load_data("digits")
    cfg = dict(batch_size=64, lr=0.01, seed=1)
    whole = TwoParts()
    vgm.fit(whole, data, vgm.TrainConfig(epochs=3, **cfg), run_dir=tmp_path / "whole", progress=False)
    part = TwoParts()
    vgm.fit(part, data, vgm.TrainConfig(epochs=1, **cfg), run_dir=tmp_path / "part", progress=False)
    again = TwoParts()
    vgm.fit(again, data, vgm.TrainConfig(epochs=3, **cfg), run_dir=tmp_path / "part", resume=True, progress=False)
    # catches: the auxiliary optimizer's state (Adam moments) left out of the checkpoint
    from vgm.checkpoint import read_safetensors
    ckpt, _ = read_safetensors(tmp_path / "whole" / "checkpoint.safetensors")
    resumed, _ = read_safetensors(tmp_path / "part" / "checkpoint.safetensors")
    assert any(k.startswith("optim1.") for k in ckpt)
    for k in ckpt:
        if k.startswith(("model.", "optim")):
            assert torch.equal(ckpt[k], resumed[k]), k
