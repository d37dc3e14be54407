"""vgm.elbo.log_px: the Bernoulli shortcut equals the distribution's log_prob, chunks combine exactly, and
L_1 is the ELBO in expectation (the linear-Gaussian exactness tests are in test_core_math.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

import vgm
from vgm.elbo import log_likelihood, log_px


@pytest.mark.parametrize("build", ["logits", "probs"])
def test_bernoulli_log_likelihood_equals_log_prob(build):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 1, 4, 4, generator=g, dtype=torch.float64) * 12     # saturated values too
    base = Bernoulli(logits=logits) if build == "logits" else Bernoulli(probs=torch.sigmoid(logits))
    binary = torch.bernoulli(torch.full((5, 1, 4, 4), 0.3, dtype=torch.float64), generator=g)
    grey = torch.rand(5, 1, 4, 4, generator=g, dtype=torch.float64)   # cross-entropy, as Bernoulli allows it
    for x in (binary, grey):
        px = Independent(Bernoulli(logits=base.logits, validate_args=False), 3)
        # softplus(l) is taken as l above l = 20: off by log1p(e^-l) < 2.1e-9 per value, 16 values here
        torch.testing.assert_close(log_likelihood(px, x), px.log_prob(x), rtol=0, atol=1e-7)
        assert log_likelihood(px, x).shape == (3, 5)
        plain = Bernoulli(logits=base.logits, validate_args=False)                     # no event dims
        torch.testing.assert_close(log_likelihood(plain, x), plain.log_prob(x), rtol=0, atol=1e-8)


@pytest.mark.parametrize("shape", [(1, 28, 28), (131,), (2, 127)])     # groups of 112, 1 (prime), 2
def test_bernoulli_log_likelihood_does_not_underflow_in_float32(shape):
    # logits 0 give σ(|l|) = ½, the smallest factor: a group's product must stay a normal float32
    for logits in (torch.zeros(3, *shape), torch.randn(3, *shape) * 30):
        px = Independent(Bernoulli(logits=logits, validate_args=False), len(shape))
        x = torch.bernoulli(torch.full(shape, 0.5))
        torch.testing.assert_close(log_likelihood(px, x), px.log_prob(x), rtol=1e-5, atol=1e-3)


def test_log_likelihood_leaves_other_cases_to_log_prob():
    px = Independent(Normal(torch.randn(4, 6), torch.rand(4, 6) + 0.1), 1)
    x = torch.randn(4, 6)
    assert torch.equal(log_likelihood(px, x), px.log_prob(x))
    bern = Independent(Bernoulli(logits=torch.randn(4, 6)), 1)
    wider = torch.bernoulli(torch.full((2, 4, 6), 0.5))                    # x broadcasts the logits: no shortcut
    assert torch.equal(log_likelihood(bern, wider), bern.log_prob(wider))


class Replay(Independent):
    """q(z|x) whose draws are handed out, in order, from a fixed (K, n, d) tensor: chunked and whole
    evaluations then see the same samples."""

    def __init__(self, q, draws):
        super().__init__(q.base_dist, q.reinterpreted_batch_ndims, validate_args=False)
        self.draws, self.used = draws, 0

    def rsample(self, sample_shape=torch.Size()):
        s = sample_shape[0]
        self.used += s
        return self.draws[self.used - s:self.used]


class ReplayVAE(vgm.VAE):
    draws = None

    def encode(self, x):
        return Replay(super().encode(x), self.draws)


def small_vae(cls=vgm.VAE):
    torch.manual_seed(0)
    return cls(input_shape=(1, 6, 6), latent_dim=3, hidden=(24,)).eval()


def test_chunks_combine_exactly_into_the_whole_estimate():
    model = small_vae(ReplayVAE)
    x = torch.bernoulli(torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(1)))
    k = 50
    with torch.no_grad():
        q = vgm.VAE.encode(model, x)
        ReplayVAE.draws = q.sample((k,))
        z = ReplayVAE.draws
        log_w = model.decode(z).log_prob(x) + model.prior.log_prob(z) - q.log_prob(z)   # the definition
    reference = torch.logsumexp(log_w, 0) - math.log(k)
    for max_elements in (10 ** 9, 36 * 10 * 7, 36 * 10 * 50 - 1, 1):       # 1, 8 (7 × 7 + 1), 2 (49 + 1), 50 chunks
        torch.testing.assert_close(log_px(model, x, k, max_elements=max_elements), reference,
                                   rtol=0, atol=1e-4)


def test_l1_is_the_elbo_in_expectation():
    model = small_vae()
    x = torch.bernoulli(torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(2)))
    reps = x.repeat(400, 1, 1, 1)                  # 400 independent draws per example, in one call
    torch.manual_seed(3)
    with torch.no_grad():
        l1 = log_px(model, reps, 1).view(400, 16)
        elbo = vgm.elbo(model, reps)["elbo"].view(400, 16)        # closed-form KL: an independent computation
    se = ((l1.var(0) + elbo.var(0)) / 400).sqrt()
    z = (l1.mean(0) - elbo.mean(0)) / se
    assert (z.abs() < 4).all(), z
    assert (log_px(model, x, 2000) > elbo.mean(0) + 4 * se).all()             # the bound tightens with K
