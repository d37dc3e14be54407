"""The VAE's math against closed forms: the KL term, the ELBO and its reparameterised gradient on a linear-Gaussian
vgm.VAE, and ELBO and IWAE against the exact log p(x) of probabilistic PCA."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, MultivariateNormal, Normal

import vgm


def test_vae_kl_term_is_closed_form():
    torch.manual_seed(0)
    m = vgm.VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,))
    x = torch.rand(6, 1, 8, 8)
    q = m.encode(x)
    expected = 0.5 * (q.base_dist.scale ** 2 + q.mean ** 2 - 1 - 2 * q.base_dist.scale.log()).sum(-1)
    torch.testing.assert_close(vgm.elbo(m, x)["kl"], expected)


class PPCA:
    """Linear-Gaussian model p(z) = N(0, I), p(x|z) = N(Wz + b, s²I), with a Gaussian encoder q(z|x) = N(Ax + c, diag v).

    Written against the interface only (encode / decode / prior), as any user's model may be.
    exact log p(x) = log N(x; b, WWᵀ + s²I); the exact posterior is N(M⁻¹Wᵀ(x − b), s²M⁻¹), M = WᵀW + s²I.
    """

    def __init__(self, W, b, s, A=None, c=None, v=None):
        self.W, self.b, self.s = W, b, s
        d = W.shape[1]
        M = W.T @ W + s ** 2 * torch.eye(d)
        self.post_A = torch.linalg.solve(M, W.T)
        self.post_cov = s ** 2 * torch.linalg.inv(M)
        self.A = self.post_A if A is None else A
        self.c = -self.post_A @ b if c is None else c
        self.v = torch.diagonal(self.post_cov) if v is None else v
        self.prior = Independent(Normal(torch.zeros(d), torch.ones(d)), 1)

    def encode(self, x):
        return Independent(Normal(x @ self.A.T + self.c, self.v.sqrt().expand(x.shape[0], -1)), 1)

    def decode(self, z):
        return Independent(Normal(z @ self.W.T + self.b, self.s * torch.ones(*z.shape[:-1], self.b.shape[0])), 1)

    def exact_log_px(self, x):
        D = self.b.shape[0]
        return MultivariateNormal(self.b, self.W @ self.W.T + self.s ** 2 * torch.eye(D)).log_prob(x)


def make_ppca(**kw):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 2, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    return PPCA(W, b, torch.tensor(0.5, dtype=torch.float64), **kw), g


def test_iwae_approaches_exact_log_px_and_elbo_stays_below():
    ppca, g = make_ppca()
    x = torch.randn(40, 6, generator=g, dtype=torch.float64) * 2
    # a deliberately imperfect (mean-field, shifted) encoder: the ELBO is strictly below log p(x)
    model = PPCA(ppca.W, ppca.b, ppca.s, A=ppca.post_A * 0.8, c=-ppca.post_A @ ppca.b + 0.3,
                 v=torch.diagonal(ppca.post_cov) * 1.5)
    exact = model.exact_log_px(x)
    torch.manual_seed(0)
    elbo = torch.stack([vgm.elbo(model, x)["elbo"] for _ in range(400)]).mean(0)
    gaps = [(exact - vgm.log_px(model, x, k)).mean().item() for k in (1, 10, 100, 1000, 5000)]
    assert (elbo < exact).all()
    assert gaps[0] > 0.3                                  # K = 1 is the ELBO: a clear gap
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps   # the bound tightens with K
    assert 0 <= gaps[-1] < 0.05, gaps                     # and approaches log p(x)
    assert abs(gaps[0] - (exact - elbo).mean().item()) < 0.1  # L_1 agrees with the ELBO


def exact_ppca():
    ppca, g = make_ppca()
    return PPCA(ppca.W[:, :1].contiguous(), ppca.b, ppca.s), g  # 1-D latent: the diagonal posterior is exact


def test_exact_posterior_makes_elbo_and_iwae_exact():
    # with q(z|x) = p(z|x) every importance weight p(x,z)/q(z|x) equals p(x): L_K = log p(x) for any K,
    # and the ELBO (one-sample recon + closed-form KL) is log p(x) in expectation
    full, g = exact_ppca()
    x = torch.randn(20, 6, generator=g, dtype=torch.float64)
    exact = full.exact_log_px(x)
    torch.testing.assert_close(vgm.log_px(full, x, 1), exact)
    torch.testing.assert_close(vgm.log_px(full, x, 7), exact)
    torch.manual_seed(0)
    draws = torch.stack([vgm.elbo(full, x)["elbo"] for _ in range(4000)])
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - exact).abs() < 4 * se + 1e-9).all()


def test_log_px_chunking_does_not_change_the_estimate():
    exact, g = exact_ppca()
    x = torch.randn(10, 6, generator=g, dtype=torch.float64)
    torch.manual_seed(3)
    one_chunk = vgm.log_px(exact, x, 300)
    torch.manual_seed(3)
    many_chunks = vgm.log_px(exact, x, 300, max_elements=6 * 10 * 7)   # chunks of 7 samples
    # an exact posterior makes every importance weight equal, so any chunking gives log p(x)
    torch.testing.assert_close(one_chunk, many_chunks)
    ppca, _ = make_ppca()
    imperfect = PPCA(ppca.W, ppca.b, ppca.s, v=torch.diagonal(ppca.post_cov) * 2)
    torch.manual_seed(4)
    a = vgm.log_px(imperfect, x, 4000)
    b = vgm.log_px(imperfect, x, 4000, max_elements=6 * 10 * 13)
    assert (a - b).abs().max() < 0.05                        # Monte Carlo noise is about 0.01 here
    part = vgm.log_px(imperfect, x[:3], 4000)               # an example's estimate does not depend on its batch
    assert (a[:3] - part).abs().max() < 0.05


def test_log_px_on_vae_is_above_the_elbo():
    torch.manual_seed(0)
    m = vgm.VAE(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,)).eval()
    x = torch.bernoulli(torch.rand(8, 1, 8, 8))
    lp = vgm.log_px(m, x, 4000)
    assert lp.shape == (8,)
    el = torch.stack([vgm.elbo(m, x)["elbo"] for _ in range(400)]).mean(0)
    assert (lp > el).all()


def linear_vae(d: int, sigma: float = 0.5) -> vgm.VAE:
    """A vgm.VAE with no hidden layers: encoder h = E x + e (mean h[:d], scale softplus(h[d:]) + 1e-6), decoder
    N(W z + b, σ² I) — a linear-Gaussian model whose ELBO and log p(x) have closed forms."""
    return vgm.VAE(input_shape=(6,), latent_dim=d, hidden=(), likelihood="gaussian", sigma=sigma).double()


def linear_vae_parts(m: vgm.VAE, x: torch.Tensor):
    """(encoder mean, encoder variance, W, b, σ) of linear_vae, read off its weights (differentiably)."""
    enc, dec = m.encoder.head[0], m.decoder.body[0]
    h = x @ enc.weight.T + enc.bias
    d = m.config.latent_dim
    return h[:, :d], (F.softplus(h[:, d:]) + 1e-6) ** 2, dec.weight, dec.bias, m.config.sigma


def closed_form_elbo(m: vgm.VAE, x: torch.Tensor) -> torch.Tensor:
    """E_q[log N(x; W z + b, σ²I)] − KL(N(μ, diag v) ‖ N(0, I)), per example, written out:
    −D/2 log 2πσ² − (‖x − Wμ − b‖² + Σ_k v_k ‖W_k‖²)/(2σ²) − ½ Σ (v + μ² − 1 − log v)."""
    mu, v, w, b, s = linear_vae_parts(m, x)
    dims = x.shape[1]
    fit = ((x - mu @ w.T - b) ** 2).sum(1) + (v * (w ** 2).sum(0)).sum(1)
    recon = 0.5 * dims * math.log(2 * math.pi * s ** 2) + fit / (2 * s ** 2)
    return -recon - 0.5 * (v + mu ** 2 - 1 - v.log()).sum(1)


def test_vae_loss_and_its_gradient_match_the_closed_form_elbo():
    """VAE.loss (one reparameterised z per row) averages to the closed-form −ELBO, and so does its gradient with
    respect to every weight: a non-reparameterised sample (no gradient through z), a wrong KL or σ breaks it."""
    torch.manual_seed(0)
    m = linear_vae(2)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2.0)
    x0 = torch.randn(3, 6, dtype=torch.float64)
    exact = -closed_form_elbo(m, x0).mean()
    exact_grad = torch.autograd.grad(exact, list(m.parameters()))
    reps, batches = 20_000, 10
    losses, grads = [], []
    for _ in range(batches):                                   # independent batches give the Monte Carlo error
        loss = m.loss(x0.repeat(reps, 1))["loss"].mean()
        losses.append(loss.detach())
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(m.parameters()))]))
    losses, grads = torch.stack(losses), torch.stack(grads)
    se = lambda t: t.std(0) / math.sqrt(batches)
    assert abs(losses.mean() - exact) < 4 * se(losses) + 1e-9, (losses.mean(), exact, se(losses))
    exact_flat = torch.cat([g.flatten() for g in exact_grad])
    assert ((grads.mean(0) - exact_flat).abs() < 4 * se(grads) + 1e-6).all()
    assert (exact_flat.abs() > 8 * se(grads)).sum() >= 10      # the check is not vacuous: the gradients are resolved


def exact_linear_vae():
    """linear_vae set to probabilistic PCA with a 1-D latent and the exact posterior as its encoder."""
    ppca, g = exact_ppca()
    m = linear_vae(1, sigma=0.5)
    enc, dec = m.encoder.head[0], m.decoder.body[0]
    scale = ppca.post_cov.sqrt().reshape(1) - 1e-6
    with torch.no_grad():
        dec.weight.copy_(ppca.W)
        dec.bias.copy_(ppca.b)
        enc.weight.copy_(torch.cat([ppca.post_A, torch.zeros_like(ppca.post_A)]))
        enc.bias.copy_(torch.cat([-ppca.post_A @ ppca.b, scale + torch.log(-torch.expm1(-scale))]))  # softplus⁻¹
    return m, ppca, g


def test_vae_with_the_exact_posterior_scores_the_exact_log_px():
    """With q(z|x) = p(z|x), every importance weight is p(x): L_K = log p(x) for every K (the −log K matters: without
    it L_7 is log p(x) + 1.95), the evaluation reports it, and each one-sample ELBO is log p(x) shifted by
    log q(z|x) − log p(z) − KL. A decoder σ off by 1e-4 (0.5001) moves log p(x) by ~1e-3 and fails here."""
    m, ppca, g = exact_linear_vae()
    x = torch.randn(20, 6, generator=g, dtype=torch.float64)
    exact = ppca.exact_log_px(x)
    for k in (1, 7):
        torch.testing.assert_close(vgm.log_px(m, x, k), exact, rtol=0, atol=1e-9)
    got = vgm.evaluate(m, x, iw_samples=7)
    assert got["log_px"] == pytest.approx(exact.mean().item(), abs=1e-9)
    torch.manual_seed(3)
    elbo = m.loss(x)["elbo"]
    torch.manual_seed(3)
    q = m.encode(x)
    z = q.rsample()
    mu, v = q.mean, q.variance
    kl = 0.5 * (v + mu ** 2 - 1 - v.log()).sum(1)
    torch.testing.assert_close(elbo, exact + q.log_prob(z) - m.prior.log_prob(z) - kl, rtol=0, atol=1e-9)
