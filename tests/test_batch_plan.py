"""The trainer's batch plan (issue 20 §2): a model whose loss couples the examples of a batch (Model.min_batch = 2:
tcvae, factorvae, dipvae) never sees a batch of one; a last batch that small joins the one before it, so every
example is still seen each epoch: in training, in validation and under torchrun's cut."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import vgm
from vgm.errors import VgmError
from vgm.models import DIPVAE, TCVAE, FactorVAE
from vgm.train import TrainConfig, batch_bounds, evaluate_terms, fit, merge_tail

SMALL = dict(input_shape=(1, 8, 8), arch="mlp", hidden=(16,), latent_dim=3, likelihood="gaussian")


def test_batch_bounds():
    assert batch_bounds(1294, 431) == [0, 431, 862, 1293, 1294]              # a model that takes any batch
    assert batch_bounds(1294, 431, min_batch=2) == [0, 431, 862, 1294]        # the lone example joins the last
    assert batch_bounds(1295, 431, min_batch=2) == [0, 431, 862, 1293, 1295]  # two are a batch
    assert batch_bounds(10, 64, min_batch=2) == [0, 10]
    assert batch_bounds(9, 4, ranks=2) == [0, 4, 9]         # torchrun would cut a last batch of 1 to 0 rows
    assert batch_bounds(11, 4, min_batch=2, ranks=2) == [0, 4, 8, 11]   # 3 rows cut to 2: a batch
    assert batch_bounds(10, 4, min_batch=2, ranks=2) == [0, 4, 8, 10]
    assert list(merge_tail(iter([1, 2, 3]), 3)) == [1, 2, 3]
    merged = list(merge_tail(iter([torch.zeros(4), torch.zeros(4), torch.ones(1)]), 2))
    assert [len(b) for b in merged] == [4, 5] and merged[1][-1] == 1


class Recorder:
    """Wraps model.loss: for every training call, the batch, the weights and the RNG state it was computed with."""

    def __init__(self, model):
        self.model, self.loss = model, model.loss
        self.train_calls: list[tuple[torch.Tensor, dict, torch.Tensor]] = []
        self.eval_sizes: list[int] = []
        model.loss = self

    def __call__(self, x):
        if torch.is_grad_enabled() and self.model.training:
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.train_calls.append((x.clone(), state, torch.get_rng_state()))
        else:
            self.eval_sizes.append(x.shape[0])
        return self.loss(x)


def stratified_tc(loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor, n: int) -> torch.Tensor:
    """Per example, the stratified estimate of log q(z_i) − Σ_k log q(z_ik), written out row by row in float64:
    weight 1/N on the example's own posterior, (N − 1)/(N (M − 1)) on each of the M − 1 others."""
    loc, scale, z = loc.double(), scale.double(), z.double()
    m = loc.shape[0]
    out = []
    for i in range(m):
        w = torch.full((m,), (n - 1) / (n * (m - 1)), dtype=torch.float64)
        w[i] = 1 / n
        dens = Normal(loc, scale).log_prob(z[i]).exp()                 # (M, d): q(z_ik | x_j)
        joint = math.log(float((w * dens.prod(1)).sum()))
        marginals = sum(math.log(float((w * dens[:, k]).sum())) for k in range(dens.shape[1]))
        out.append(joint - marginals)
    return torch.tensor(out, dtype=torch.float64)


def test_tcvae_at_batch_size_431_on_digits_logs_the_tc_of_the_planned_batches():
    # digits' 1,294 training examples in batches of 431: 431, 431, 432 (not 431, 431, 431, 1)
    # catches: the old plan's last batch of one, whose stratified weights sum to 1/N and whose tc is (d − 1) log N
    # (0.0498 of the logged 0.0498 nats in the issue's run), and a logged tc that is not the planned batches' mean
    data = vgm.load_data("digits")
    assert len(data.train) == 1294
    torch.manual_seed(0)
    model = TCVAE(**SMALL, dataset_size=len(data.train))
    rec = Recorder(model)
    hist = fit(model, data, TrainConfig(epochs=1, batch_size=431, eval_batch_size=143), progress=False)
    assert [len(x) for x, _, _ in rec.train_calls] == [431, 431, 432]
    assert rec.eval_sizes == [144]                      # 144 validation examples in 143s: 143 + 1 is one batch
    direct = []
    probe = TCVAE(**SMALL, dataset_size=len(data.train)).train()
    for x, state, rng in rec.train_calls:            # each batch again, with its weights and its training noise
        probe.load_state_dict(state)
        torch.set_rng_state(rng)
        with torch.no_grad():
            q = probe.encode(x)
            z = q.rsample()
        direct.append(stratified_tc(q.base_dist.loc, q.base_dist.scale, z, len(data.train)))
    want = float(torch.cat(direct).sum()) / len(data.train)
    assert hist[0]["train"]["tc"] == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_dipvae_at_batch_size_431_logs_the_penalty_of_the_planned_batches():
    # catches: dip on a batch of one (Cov = 0, so dip = λ_d·d exactly: 300 for d = 3 and λ_d = 100)
    data = vgm.load_data("digits")
    torch.manual_seed(0)
    model = DIPVAE(**SMALL)
    rec = Recorder(model)
    hist = fit(model, data, TrainConfig(epochs=1, batch_size=431), progress=False)
    assert [len(x) for x, _, _ in rec.train_calls] == [431, 431, 432]
    probe = DIPVAE(**SMALL)
    total = 0.0
    for x, state, _ in rec.train_calls:
        probe.load_state_dict(state)
        with torch.no_grad():
            mu = probe.encode(x).base_dist.loc.double()
        centred = mu - mu.mean(0)
        cov = centred.T @ centred / len(x)
        off = cov - torch.diag(cov.diagonal())
        pen = 10.0 * float((off ** 2).sum()) + 100.0 * float(((cov.diagonal() - 1) ** 2).sum())
        total += len(x) * pen
    assert hist[0]["train"]["dip"] == pytest.approx(total / len(data.train), rel=1e-4)


def test_factorvae_trains_at_batch_size_431_on_digits():
    # catches: "factorvae needs batches of at least 2 examples" raised by the last batch of one
    data = vgm.load_data("digits")
    torch.manual_seed(0)
    model = FactorVAE(**SMALL, disc_hidden=8, disc_layers=1)
    rec = Recorder(model)
    hist = fit(model, data, TrainConfig(epochs=1, batch_size=431), progress=False)
    assert [len(x) for x, _, _ in rec.train_calls] == [431, 431, 432]
    assert math.isfinite(hist[0]["train"]["tc"])


def test_a_model_that_takes_any_batch_keeps_its_last_batch_of_one():
    data = vgm.load_data("digits")
    torch.manual_seed(0)
    model = vgm.VAE(**SMALL)
    rec = Recorder(model)
    fit(model, data, TrainConfig(epochs=1, batch_size=431), progress=False)
    assert [len(x) for x, _, _ in rec.train_calls] == [431, 431, 431, 1]


def test_validation_merges_a_last_batch_of_one():
    torch.manual_seed(0)
    model = DIPVAE(**SMALL)
    x = torch.rand(11, 1, 8, 8)
    rec = Recorder(model)
    torch.manual_seed(1)
    five = evaluate_terms(model, x, 5)
    assert rec.eval_sizes == [5, 6]
    rec.eval_sizes.clear()
    with torch.no_grad():                                # dip depends on the batch's posterior means alone
        want = (model.loss(x[:5])["dip"].sum() + model.loss(x[5:])["dip"].sum()).item() / 11
    assert five["dip"] == pytest.approx(want, rel=1e-6)


def test_batches_smaller_than_the_model_takes_are_refused():
    data = vgm.load_data("digits")
    with pytest.raises(VgmError, match="tcvae needs batches of at least 2 examples"):
        fit(TCVAE(**SMALL), data, TrainConfig(epochs=1, batch_size=1), progress=False)
    data.train = data.train[:1]
    with pytest.raises(VgmError, match="needs at least 2 training examples"):
        fit(DIPVAE(**SMALL), data, TrainConfig(epochs=1, batch_size=64), progress=False)
