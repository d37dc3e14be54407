"""Decoder likelihoods p(x|z) against the closed-form densities, with exactly the configured σ."""
from __future__ import annotations

import math

import pytest
import torch

import vgm
from vgm.models.likelihood import SIGMA_FLOOR, Likelihood


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """Σ_i log N(x_i; mean_i, σ²) over all but the batch axis, written out."""
    per_value = -0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    return per_value.flatten(1).sum(1)


@pytest.mark.parametrize("sigma", [0.1, 1e-3, 1e-6])
def test_fixed_sigma_is_exactly_the_configured_one(sigma):
    """The old σ = softplus(inv_softplus(σ)) + 1e-4 gave 0.1001, 1.1e-3 and 1.01e-4: log p off by ≥ 1e-3 nats
    per value at σ = 0.1 and by millions of nats at σ = 1e-6."""
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64)
    x = mean + sigma * torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    lik = Likelihood("gaussian", 3, sigma=sigma).double()
    got = lik(mean).log_prob(x)
    torch.testing.assert_close(got, gaussian_log_density(x, mean, sigma), rtol=1e-12, atol=1e-9)
    assert lik(mean).base_dist.scale.unique().tolist() == [sigma]
    # float32, through a VAE: the σ is the configured one in the decoder's own dtype
    vae = vgm.VAE(input_shape=(1, 3, 3), latent_dim=2, hidden=(8,), likelihood="gaussian", sigma=sigma)
    px = vae.decode(torch.zeros(2, 2))
    assert px.base_dist.scale.dtype == torch.float32
    assert torch.equal(px.base_dist.scale, torch.full((2, 1, 3, 3), sigma, dtype=torch.float32))
    assert "likelihood.raw_sigma" not in vae.state_dict()             # the config holds a fixed σ


def test_weights_saved_with_the_old_fixed_sigma_buffer_still_load():
    vae = vgm.VAE(input_shape=(1, 3, 3), latent_dim=2, hidden=(8,), likelihood="gaussian", sigma=0.2)
    state = {**vae.state_dict(), "likelihood.raw_sigma": torch.tensor(-1.0)}
    vae.load_state_dict(state, strict=True)
    assert vae.likelihood.sigma == 0.2


def test_learned_sigma_starts_at_its_value_and_stops_at_the_floor():
    lik = Likelihood("gaussian", 1, sigma=0.1, learn_sigma=True).double()
    assert lik.sigma.item() == pytest.approx(0.1, rel=1e-6)
    g = torch.Generator().manual_seed(1)
    mean, x = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)
    lp = lik(mean).log_prob(x)
    torch.testing.assert_close(lp, gaussian_log_density(x, mean, lik.sigma.item()), rtol=1e-12, atol=1e-9)
    (grad,) = torch.autograd.grad(lp.sum(), lik.raw_sigma)
    # ∂/∂raw Σ log N = Σ (r²/σ³ − 1/σ) · sigmoid(raw), r = x − mean
    s, r = lik.sigma.item(), x - mean
    expected = ((r ** 2).sum() / s ** 3 - r.numel() / s) * torch.sigmoid(lik.raw_sigma.detach())
    torch.testing.assert_close(grad, expected)
    with torch.no_grad():
        lik.raw_sigma.fill_(-1e4)                     # softplus(raw) = 0: σ is the documented floor, not 0
    assert lik.sigma.item() == SIGMA_FLOOR and torch.isfinite(lik(mean).log_prob(x)).all()
    with pytest.raises(ValueError, match="floor"):
        Likelihood("gaussian", 1, sigma=SIGMA_FLOOR, learn_sigma=True)
    with pytest.raises(ValueError, match="sigma"):
        Likelihood("gaussian", 1, sigma=0.0)
