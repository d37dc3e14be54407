"""The VAE's math against closed forms: KL, reparameterised gradients, ELBO and IWAE on probabilistic PCA."""
from __future__ import annotations

import math

import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

import vgm


def test_closed_form_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(5, 3, generator=g), torch.rand(5, 3, generator=g) + 0.3
    q = Independent(Normal(mu, sigma), 1)
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    exact = kl_divergence(q, p)
    # the textbook formula, written out
    formula = 0.5 * (sigma ** 2 + mu ** 2 - 1 - 2 * sigma.log()).sum(-1)
    torch.testing.assert_close(exact, formula)
    torch.manual_seed(1)
    z = q.sample((200_000,))
    terms = q.log_prob(z) - p.log_prob(z)
    mc, se = terms.mean(0), terms.std(0) / math.sqrt(terms.shape[0])
    assert ((mc - exact).abs() < 4 * se).all(), (mc, exact, se)


def test_vae_kl_term_is_closed_form():
    torch.manual_seed(0)
    m = vgm.VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,))
    x = torch.rand(6, 1, 8, 8)
    q = m.encode(x)
    expected = 0.5 * (q.base_dist.scale ** 2 + q.mean ** 2 - 1 - 2 * q.base_dist.scale.log()).sum(-1)
    torch.testing.assert_close(vgm.elbo(m, x)["kl"], expected)


def test_reparameterised_gradient_of_quadratic_matches_analytic():
    # f(z) = Σ a_i (z_i − c_i)²,  z ~ N(μ, σ²):  E f = Σ a_i ((μ_i − c_i)² + σ_i²)
    # ∂/∂μ = 2a(μ − c),  ∂/∂σ = 2aσ
    a, c = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.3, -1.0, 2.0])
    mu = torch.tensor([0.5, 0.2, -0.4], requires_grad=True)
    sigma = torch.tensor([0.7, 1.3, 0.4], requires_grad=True)
    torch.manual_seed(0)
    z = Normal(mu, sigma).rsample((400_000,))
    (a * (z - c) ** 2).sum(-1).mean().backward()
    torch.testing.assert_close(mu.grad, 2 * a * (mu - c).detach(), atol=0.02, rtol=0.01)
    torch.testing.assert_close(sigma.grad, 2 * a * sigma.detach(), atol=0.02, rtol=0.01)


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


def test_vae_encoder_gives_reparameterised_gradients():
    # through vgm.VAE.encode: ∂/∂μ E f(z) = 2a(μ − c) and ∂/∂σ E f(z) = 2aσ for f(z) = Σ a (z − c)²
    torch.manual_seed(0)
    m = vgm.VAE(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,))
    q = m.encode(torch.rand(2, 1, 8, 8))
    mu, sigma = q.mean, q.base_dist.scale
    mu.retain_grad(); sigma.retain_grad()
    a, c = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.3, -1.0, 2.0])
    z = q.rsample((200_000,))
    (a * (z - c) ** 2).sum(-1).mean(0).sum().backward()
    torch.testing.assert_close(mu.grad, 2 * a * (mu - c).detach(), atol=0.03, rtol=0.02)
    torch.testing.assert_close(sigma.grad, 2 * a * sigma.detach(), atol=0.03, rtol=0.02)
