"""The VAE's decoder likelihoods are normalised where they claim to be: the discretised logistic over the data's
own grey levels, the continuous Bernoulli over [0, 1]; and evaluation reports bits/dim only for probabilities."""
from __future__ import annotations

import math

import pytest
import torch

import vgm


def decoded(likelihood: str, levels: int = 17):
    torch.manual_seed(0)
    m = vgm.VAE(input_shape=(1, 4, 4), latent_dim=2, hidden=(8,), likelihood=likelihood, levels=levels).eval()
    return m, m.decode(torch.randn(3, 2))          # p(x|z) for 3 latent draws, event shape (1, 4, 4)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretised_logistic_sums_to_one_over_the_datas_levels(levels):
    # catches: the levels of the data not reaching the likelihood (a 256-level bin width on 17-level digits),
    # and the location / log-scale halves of the decoder output taken from the wrong channels
    m, p = decoded("logistic", levels)
    grid = torch.arange(levels, dtype=torch.float32) / (levels - 1)
    per_value = torch.stack([p.base_dist.log_prob(k.expand(3, 1, 4, 4)) for k in grid]).exp().sum(0)
    assert torch.allclose(per_value, torch.ones_like(per_value), atol=1e-4)
    assert m.decoder.out_shape == (2, 4, 4)


def test_continuous_bernoulli_integrates_to_one_on_the_unit_interval():
    _, p = decoded("continuous-bernoulli")
    xs = torch.linspace(0, 1, 4001, dtype=torch.float64)
    dens = torch.stack([p.base_dist.log_prob(v.float().expand(3, 1, 4, 4)) for v in xs]).double().exp()
    integral = torch.trapezoid(dens, xs, dim=0)
    assert torch.allclose(integral, torch.ones_like(integral), atol=2e-3)   # a Bernoulli 'density' would not


def test_logistic_vae_reports_bits_per_dim_of_its_probability():
    data = vgm.load_data("digits")
    m, _ = decoded("logistic")
    m = vgm.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=(8,), likelihood="logistic", levels=17)
    res = vgm.evaluate(m, data.test[:30], iw_samples=4)
    assert res["bits_per_dim"] == pytest.approx(-res["log_px"] / (64 * math.log(2)))
    assert res["log_px"] < 0 and "note" not in res
    with pytest.raises(ValueError, match="grey levels"):
        vgm.VAE(input_shape=(2,), likelihood="logistic", levels=0)
