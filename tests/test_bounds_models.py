"""iwae (with MIWAE and DReG), vamp, iaf, the flow prior and hvae2 against closed forms and exact identities:
the K-sample bound and its gradients, the VampPrior mixture, the IAF density against autograd's Jacobian, and
each model's importance-weighted log p(x) against the exact marginal of a linear-Gaussian instance of it."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal, Normal

import vgm
from vgm.cli import main
from vgm.models import HVAE2, IAF, IWAE, VAE, Vamp
from vgm.models.iwae import iw_terms
from vgm.models.sampled_mean import MEAN_DRAWS

D, Z = 6, 2                       # data and latent sizes of the small models


def small_iwae(**kw) -> IWAE:
    torch.manual_seed(0)
    return IWAE(input_shape=(D,), latent_dim=Z, hidden=(8,), likelihood="gaussian", sigma=0.5, **kw).double()


def data(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def encoder_params(model) -> list[torch.nn.Parameter]:
    return list(model.encoder.parameters())


def decoder_params(model) -> list[torch.nn.Parameter]:
    return list(model.decoder.parameters())


def flat_grad(loss: torch.Tensor, params) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


# ----- the K-sample bound ------------------------------------------------------------------------------------

def log_weights_by_hand(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x|z) + log p(z) − log q(z|x), each density written out (Gaussian decoder of σ = 0.5)."""
    mu, s = model.encoder(x).chunk(2, dim=-1)
    sd = F.softplus(s) + 1e-6
    log_q = (-0.5 * ((z - mu) / sd) ** 2 - sd.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_p = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    mean = model.decoder(z)
    log_lik = (-0.5 * ((x - mean) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)).sum(-1)
    return log_lik + log_p - log_q


def test_iwae_with_one_sample_is_the_elbo_objective_on_the_same_sample():
    # catches: a missing or doubled term of log w, the −log K normalisation applied wrongly, a loss sign error
    model, x = small_iwae(k=1), data()
    torch.manual_seed(5)
    terms = model.loss(x)
    torch.manual_seed(5)
    z = model.encode(x).rsample()                 # the same ε: rsample((1,)) and rsample() draw the same numbers
    elbo = log_weights_by_hand(model, x, z)
    torch.testing.assert_close(terms["loss"], -elbo, rtol=0, atol=1e-12)
    torch.testing.assert_close(terms["iw_bound"], elbo.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(terms["elbo"], elbo.detach(), rtol=0, atol=1e-12)
    # and its gradient is the single-sample ELBO's, encoder and decoder alike
    params = list(model.parameters())
    torch.testing.assert_close(flat_grad(terms["loss"].sum(), params), flat_grad(-elbo.sum(), params))


def test_miwae_averages_bounds_over_groups_of_k_consecutive_samples():
    # catches: logsumexp over the wrong axis of (M, K), a sum instead of a mean over M, log M instead of log K
    m, k = 3, 4
    model, x = small_iwae(k=k, m=m), data()
    torch.manual_seed(7)
    terms = model.loss(x)
    torch.manual_seed(7)
    z = model.encode(x).rsample((m * k,))
    log_w = log_weights_by_hand(model, x, z).detach()
    groups = [torch.logsumexp(log_w[j * k:(j + 1) * k], 0) - math.log(k) for j in range(m)]
    torch.testing.assert_close(terms["iw_bound"], sum(groups) / m, rtol=0, atol=1e-10)
    torch.testing.assert_close(terms["elbo"], log_w.mean(0), rtol=0, atol=1e-10)


def test_the_bound_rises_with_k_and_stays_below_the_exact_log_px():
    # catches: the mean of log w taken for L_K (flat in K); a missing −log K (L_K above log p(x))
    model = linear_gaussian(IWAE, k=1)
    x = data(10, seed=3)
    exact = exact_log_px_pca(model, x).mean().item()
    torch.manual_seed(0)
    means = []
    for k in (1, 5, 50):
        draws = torch.stack([iw_terms(model, x, k)["iw_bound"].mean() for _ in range(300)])
        means.append((draws.mean().item(), draws.std().item() / math.sqrt(len(draws))))
    for (a, sa), (b, sb) in zip(means, means[1:]):
        assert b - a > 4 * math.hypot(sa, sb), means
    assert means[-1][0] < exact + 4 * means[-1][1], (means, exact)


# ----- DReG ------------------------------------------------------------------------------------------------

def gradient_draws(model, x: torch.Tensor, k: int, estimator: str, groups: int, copies: int, params) -> torch.Tensor:
    """(groups, P): each row the mean over `copies` independent draws of the gradient of the per-example loss
    (x repeated `copies` times in one batch: the gradient of the sum is the sum of independent draws)."""
    xs = x.expand(copies, *x.shape[1:])
    rows = [flat_grad(iw_terms(model, xs, k, 1, estimator)["loss"].sum(), params) / copies for _ in range(groups)]
    return torch.stack(rows)


def test_dreg_leaves_the_decoder_gradient_of_iwae_unchanged():
    # catches: the squared weights (or the hook) reaching the decoder, whose gradient must stay Σ w̃ ∇θ log w
    model, x = small_iwae(), data()
    params = decoder_params(model)
    torch.manual_seed(3)
    standard = flat_grad(iw_terms(model, x, 7, 2, "standard")["loss"].sum(), params)
    torch.manual_seed(3)
    dreg = flat_grad(iw_terms(model, x, 7, 2, "dreg")["loss"].sum(), params)
    torch.testing.assert_close(standard, dreg)


def test_dreg_has_the_expectation_of_the_standard_encoder_gradient():
    # catches: the weights w̃ instead of w̃² (the biased 'sticking the landing' estimator for K > 1), log q not
    # stopped (an extra score term), the hook missing (w̃² not applied)
    model, x = small_iwae(), data(1)
    params = encoder_params(model)
    torch.manual_seed(11)
    a = gradient_draws(model, x, 5, "standard", 40, 500, params)
    b = gradient_draws(model, x, 5, "dreg", 40, 500, params)
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    z = (a.mean(0) - b.mean(0)) / se
    ok = se > 0
    assert ok.sum() > 20 and z[ok].abs().max() < 4.5, z
    assert (a.mean(0).abs() > 4 * se)[ok].sum() > 20          # the gradient is clearly nonzero: the test has power


def test_dreg_lowers_the_encoder_gradient_variance_at_k_50():
    # catches: DReG reduced to the standard estimator (no stop-gradient) or its weights not squared
    model, x = small_iwae(), data(1)
    params = encoder_params(model)
    torch.manual_seed(12)
    copies = 50
    var_standard = gradient_draws(model, x, 50, "standard", 30, copies, params).var(0).sum() * copies
    var_dreg = gradient_draws(model, x, 50, "dreg", 30, copies, params).var(0).sum() * copies
    assert var_dreg < 0.2 * var_standard, (var_dreg, var_standard)         # measured: 0.05


# ----- VampPrior -------------------------------------------------------------------------------------------

def small_vamp(**kw) -> Vamp:
    torch.manual_seed(0)
    return Vamp(input_shape=(1, 4, 4), latent_dim=3, hidden=(16,), **kw).double()


def test_vamp_prior_is_the_log_sum_exp_over_its_pseudo_inputs_posteriors():
    # catches: a missing −log K, weights other than uniform, pseudo-inputs not kept in [0, 1]
    model = small_vamp(pseudo_inputs=7)
    with torch.no_grad():
        model.pseudo[0] = 3.0                          # outside [0, 1]: used as 1
    z = torch.randn(5, 4, 3, dtype=torch.float64)      # sample dims (S, N, d)
    u = model.pseudo.detach().clamp(0, 1)
    comps = []
    for k in range(7):
        mu, s = model.encoder(u[k]).chunk(2, dim=-1)
        comps.append(Normal(mu, F.softplus(s) + 1e-6).log_prob(z).sum(-1))
    expected = torch.logsumexp(torch.stack(comps), 0) - math.log(7)
    torch.testing.assert_close(model.prior.log_prob(z), expected)


def test_vamp_with_one_pseudo_input_equal_to_x_has_prior_q_and_zero_kl():
    # p(z) = q(z|u) with u = x: the prior is x's own posterior, so log q(z|x) − log p(z) = 0 for every z
    model = small_vamp(pseudo_inputs=1)
    x = torch.bernoulli(torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.pseudo.copy_(x)
    z = torch.randn(9, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(model.prior.log_prob(z), model.encode(x).log_prob(z), rtol=0, atol=1e-12)
    torch.manual_seed(0)
    terms = model.loss(x)
    assert terms["kl"].abs().max() < 1e-12
    torch.testing.assert_close(terms["elbo"], -terms["recon"])


# ----- IAF -------------------------------------------------------------------------------------------------

def small_iaf(**kw) -> IAF:
    torch.manual_seed(0)
    model = IAF(input_shape=(D,), latent_dim=4, hidden=(8,), iaf_hidden=12, likelihood="gaussian", **kw).double()
    with torch.no_grad():                             # move MADE's zero last layers off the identity
        for step in model.steps:
            step.made.net[-1].weight.normal_(0, 0.5)
            step.made.net[-1].bias.normal_(0, 0.5)
    return model


def test_iaf_log_q_is_the_base_density_minus_the_autograd_log_determinant():
    # catches: a sign error in Σ log σ, a step that is not autoregressive (then Σ log σ is not log|det|), the
    # reversed order mishandled, an inverse that does not invert
    model, x = small_iaf(iaf_depth=3), data(3)
    q = model.encode(x)
    torch.manual_seed(0)
    z = q.rsample((2,))                                                   # (2, 3, 4)
    cached = q.log_prob(z)                                                # from the sampling pass
    inverted = q.log_prob(z.detach().clone())                             # a new tensor: by inverting the steps
    loc, scale = q.base.base_dist.loc.detach(), q.base.base_dist.scale.detach()
    for s in range(2):
        for n in range(3):
            h = q.context[n].detach()

            def flow(z0):
                for step in model.steps:
                    z0 = step(z0, h)[0]
                return z0
            z0 = z[s, n].detach()
            for step in reversed(model.steps):
                z0 = step.inverse(z0, h)
            torch.testing.assert_close(flow(z0), z[s, n].detach())
            log_det = torch.linalg.slogdet(torch.autograd.functional.jacobian(flow, z0))[1]
            expected = Normal(loc[n], scale[n]).log_prob(z0).sum() - log_det
            torch.testing.assert_close(cached[s, n], expected)
            torch.testing.assert_close(inverted[s, n], expected)


# ----- linear-Gaussian instances: each model's vgm.log_px against the exact log p(x) ----------------------

SIGMA = 0.5


def posterior(W, b, m, P, R) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z ~ N(m, P), x = W z + b + N(0, R): p(z|x) = N(G x + o, C) (the Gaussian conditioning formulas)."""
    Pi, Ri = torch.linalg.inv(P), torch.linalg.inv(R)
    C = torch.linalg.inv(Pi + W.T @ Ri @ W)
    return C @ W.T @ Ri, C @ (Pi @ m - W.T @ Ri @ b), C


def set_gaussian_layer(layer: torch.nn.Linear, gain, offset, sd) -> None:
    """A linear layer whose output [μ, s] (and any further outputs, kept) gives N(gain·input + offset, sd²)
    through the models' softplus(s) + 1e-6 scale."""
    d = gain.shape[0]
    with torch.no_grad():
        layer.weight[:2 * d] = 0
        layer.weight[:d] = gain
        layer.bias[:d] = offset
        y = sd - 1e-6
        layer.bias[d:2 * d] = y + torch.log(-torch.expm1(-y))                 # softplus⁻¹


def linear_gaussian(cls, inflate: float = 1.3, **kw):
    """cls with one linear layer each way and a Gaussian decoder of σ = 0.5, p(x|z) = N(Wz + b, σ²I) (pPCA when
    p(z) = N(0, I)); the encoder set to the exact pPCA posterior with its sd inflated (good, not perfect)."""
    torch.manual_seed(0)
    model = cls(input_shape=(D,), latent_dim=Z, hidden=(), likelihood="gaussian", sigma=SIGMA, **kw).double()
    dec = model.decoder.body[0]
    with torch.no_grad():
        dec.weight.normal_()
        dec.bias.normal_()
    G, o, C = posterior(dec.weight.detach(), dec.bias.detach(), torch.zeros(Z, dtype=torch.float64),
                        torch.eye(Z, dtype=torch.float64), SIGMA ** 2 * torch.eye(D, dtype=torch.float64))
    set_gaussian_layer(model.encoder.head[0], G, o, inflate * C.diagonal().sqrt())
    return model.eval()


def marginal(model, loc, cov) -> MultivariateNormal:
    """x's marginal when z ~ N(loc, cov) and x = Wz + b + N(0, σ²I)."""
    dec = model.decoder.body[0]
    W, b = dec.weight.detach(), dec.bias.detach()
    return MultivariateNormal(loc @ W.T + b, W @ cov @ W.T + SIGMA ** 2 * torch.eye(D, dtype=torch.float64))


def exact_log_px_pca(model, x):
    return marginal(model, torch.zeros(Z, dtype=torch.float64), torch.eye(Z, dtype=torch.float64)).log_prob(x)


def pca_iwae():
    model = linear_gaussian(IWAE, k=5, estimator="dreg")
    return model, exact_log_px_pca


def pca_iaf():
    model = linear_gaussian(IAF, inflate=1.8, iaf_depth=2, iaf_hidden=8)   # each step first shrinks z by ~0.88
    with torch.no_grad():
        for step in model.steps:
            step.made.net[-1].weight.normal_(0, 0.1)
            step.made.net[-1].bias.normal_(0, 0.1)
    return model, exact_log_px_pca


def pca_vamp():
    model = linear_gaussian(Vamp, pseudo_inputs=3)
    with torch.no_grad():
        model.pseudo.normal_(0, 2)                       # components spread out: a clearly non-Gaussian prior

    def exact(m, x):
        comps = m.encode(m.pseudo_inputs()).base_dist    # (K, d)
        lp = torch.stack([marginal(m, comps.loc[k], torch.diag(comps.scale[k] ** 2)).log_prob(x)
                          for k in range(comps.loc.shape[0])])
        return torch.logsumexp(lp, 0) - math.log(comps.loc.shape[0])
    return model, exact


def pca_flow_prior():
    model = linear_gaussian(VAE, prior="flow", prior_depth=2, prior_hidden=8)
    with torch.no_grad():                                 # constant MADE outputs: the flow is an affine map
        for t in model.prior_flow.transforms:
            if hasattr(t, "made"):
                t.made.net[-1].bias.normal_(0, 0.5)

    def exact(m, x):
        zero = torch.zeros(1, Z, dtype=torch.float64)
        inv = lambda e: m.prior_flow.inverse(e[None])[0][0]
        c = inv(zero[0])
        A = torch.autograd.functional.jacobian(inv, zero[0])
        return marginal(m, c, A @ A.T).log_prob(x)
    return model, exact


def pca_hvae2():
    torch.manual_seed(0)
    d1, d2 = Z, 1
    model = HVAE2(input_shape=(D,), latent_dim=d1, latent2_dim=d2, hidden=(), hidden2=(), likelihood="gaussian",
                  sigma=SIGMA).double().eval()
    eye = lambda n: torch.eye(n, dtype=torch.float64)
    p1 = model.decoder2[0]                                # p(z1|z2) = N(A z2 + a, S²): the scale made constant
    dec = model.decoder.body[0]
    with torch.no_grad():
        for layer in (p1, dec):
            layer.weight.normal_()
            layer.bias.normal_()
        p1.weight[d1:] = 0
    A, a = p1.weight[:d1].detach(), p1.bias[:d1].detach()
    S2 = torch.diag((F.softplus(p1.bias[d1:]) + 1e-6).detach() ** 2)
    P1 = A @ A.T + S2                                     # z1 ~ N(a, A Aᵀ + S²)
    G, o, C = posterior(dec.weight.detach(), dec.bias.detach(), a, P1, SIGMA ** 2 * eye(D))
    set_gaussian_layer(model.encoder.head[0], G, o, 1.3 * C.diagonal().sqrt())
    G2, o2, C2 = posterior(A, a, torch.zeros(d2, dtype=torch.float64), eye(d2), S2)
    set_gaussian_layer(model.encoder2[0], G2, o2, 1.3 * C2.diagonal().sqrt())
    return model, lambda m, x: marginal(m, a, P1).log_prob(x)


@pytest.mark.parametrize("build", [pca_iwae, pca_iaf, pca_vamp, pca_flow_prior, pca_hvae2],
                         ids=["iwae", "iaf", "vamp", "vae-flow-prior", "hvae2"])
def test_log_px_converges_to_the_exact_marginal_of_the_linear_gaussian_model(build):
    # catches: any wrong term of a model's q(z|x) or p(z) density (the importance weights would converge to a
    # wrong value): the mixture, the IAF's log-determinant, the flow prior's change of variables, the second layer
    model, exact_fn = build()
    x = torch.randn(30, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    with torch.no_grad():
        exact = exact_fn(model, x)
    torch.manual_seed(0)
    gaps = [(exact - vgm.log_px(model, x, k)).mean().item() for k in (1, 10, 100, 1000, 5000)]
    assert gaps[0] > 0.1, gaps                            # the proposal is imperfect: L_1 is clearly below
    assert abs(gaps[3]) < 0.03 and abs(gaps[4]) < 0.01, gaps   # L_K reaches log p(x) (seeds 0-2: < 0.019, 0.004)


# ----- the rest of the models' contract ----------------------------------------------------------------------

def test_flow_prior_kl_is_estimated_against_the_flow_and_trains_it():
    # catches: the closed-form KL against N(0, I) used although p(z) is a flow; the flow not a trained submodule
    torch.manual_seed(0)
    model = VAE(input_shape=(D,), latent_dim=3, hidden=(8,), likelihood="gaussian", prior="flow", prior_depth=2,
                prior_hidden=8).double()
    x = data(5)
    torch.manual_seed(1)
    terms = model.loss(x)
    torch.manual_seed(1)
    q = model.encode(x)
    z = q.rsample()
    torch.testing.assert_close(terms["kl"], q.log_prob(z) - model.prior_flow.log_prob(z))
    terms["loss"].sum().backward()
    assert all(p.grad is not None for p in model.prior_flow.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.prior_flow.parameters())


def test_flow_prior_samples_at_a_temperature_scale_the_base_draw():
    # z = f⁻¹(T·ε): as T → 0 every draw decodes f⁻¹(0). catches: T ignored, or applied around a mean the flow lacks
    torch.manual_seed(0)
    model = VAE(input_shape=(D,), latent_dim=3, hidden=(8,), likelihood="gaussian", prior="flow", prior_depth=2,
                prior_hidden=8).double()
    with torch.no_grad():
        for p in model.prior_flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    at_zero = model.decode(model.prior_flow.inverse(torch.zeros(1, 3, dtype=torch.float64))[0]).mean
    torch.testing.assert_close(model.sample(4, temperature=1e-9), at_zero.expand(4, D))
    assert model.sample(4).std(0).min() > 1e-3


def test_the_two_layer_posterior_mean_is_exact_for_z1_and_sampled_for_z2():
    # E[z2] = G2 E[z1] + o2 for the linear second layer; the sampled mean is deterministic and leaves the
    # caller's random stream alone. catches: the z1 / z2 halves swapped, a biased or unseeded average
    model, _ = pca_hvae2()
    x = data(3)
    q = model.encode(x)
    state = torch.get_rng_state()
    mean = q.mean
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(q.mean, mean)
    enc2 = model.encoder2[0]
    loc1 = q.q1.loc.detach()
    torch.testing.assert_close(mean[:, :Z], loc1)
    expected = loc1 @ enc2.weight[:1].detach().T + enc2.bias[:1].detach()
    sd = F.softplus(enc2.bias[1:]).detach() + 1e-6
    spread = (enc2.weight[:1].detach() ** 2 @ q.q1.scale.detach().T ** 2).T.sqrt()      # sd of G2 z1
    se = (sd ** 2 + spread ** 2).sqrt() / math.sqrt(MEAN_DRAWS)
    assert ((mean[:, Z:] - expected).abs() < 4 * se).all()


@pytest.mark.parametrize("kind, options", [
    ("iwae", {"k": 3, "m": 2, "estimator": "dreg"}),
    ("vamp", {"pseudo_inputs": 5}),
    ("iaf", {"iaf_depth": 2, "iaf_hidden": 8}),
    ("vae", {"prior": "flow", "prior_flow": "nsf", "prior_depth": 2, "prior_hidden": 8}),
    ("hvae2", {"latent_dim": 4, "latent2_dim": 2, "hidden2": (8,), "k": 2}),
])
def test_each_model_is_saved_and_loaded_whole(tmp_path, kind, options):
    # catches: state left out of the weights (pseudo-inputs, IAF steps, a flow prior's LU permutation)
    torch.manual_seed(0)
    model = vgm.MODELS[kind](input_shape=(1, 4, 4), hidden=(8,), **({"latent_dim": 3} | options)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save(tmp_path)
    loaded = vgm.load(tmp_path)
    x = torch.bernoulli(torch.full((4, 1, 4, 4), 0.4))
    torch.manual_seed(3)
    a = vgm.log_px(model, x, 20)
    torch.manual_seed(3)
    torch.testing.assert_close(vgm.log_px(loaded, x, 20), a)


def cli(capsys, *args) -> tuple[int, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:          # argparse's usage errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, says", [
    (["iwae", "--k", "0"], "k must be >= 1, got 0"),
    (["iwae", "--m", "0"], "m must be >= 1, got 0"),
    (["hvae2", "--k", "0"], "k must be >= 1, got 0"),
    (["vamp", "--pseudo-inputs", "0"], "pseudo_inputs must be >= 1, got 0"),
    (["iaf", "--iaf-depth", "0"], "iaf_depth >= 1"),
    (["vae", "--prior", "flow", "--prior-depth", "0"], "prior_depth >= 1"),
    (["vae", "--k", "5"], "unrecognized arguments: --k 5"),
    (["vae", "--pseudo-inputs", "3"], "unrecognized arguments: --pseudo-inputs 3"),
    (["iaf", "--estimator", "dreg"], "unrecognized arguments: --estimator dreg"),
    (["iwae", "--beta", "2"], "beta does not apply to iwae"),
    (["iwae", "--dequantize"], "dequantize"),
    (["vamp", "--prior", "flow"], "invalid choice: 'flow'"),
    (["tcvae", "--prior", "flow"], "tcvae takes prior standard"),         # its loss needs the closed-form KL
])
def test_bad_options_are_refused_in_one_line(capsys, tmp_path, args, says):
    code, err = cli(capsys, "train", *args, "--data", "digits", "--epochs", "1", "--out", tmp_path / "r")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vgm: error: ") and says in lines[0], err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args", [["iwae", "--k", "3", "--estimator", "dreg"], ["vamp", "--pseudo-inputs", "4"],
                                  ["iaf"], ["vae", "--prior", "flow"], ["hvae2", "--k", "2"]])
def test_each_model_trains_and_evaluates_from_the_command_line(capsys, tmp_path, args):
    out = tmp_path / "r"
    small = ["--hidden", "32", "--latent-dim", "4"] + {"iaf": ["--iaf-hidden", "16"],
                                                         "hvae2": ["--hidden2", "8", "--latent2-dim", "2"]}.get(args[0], [])
    code, err = cli(capsys, "train", *args, *small, "--data", "digits", "--binarize", "dynamic", "--epochs", "1",
                    "--quiet", "--out", out)
    assert code == 0, err
    assert main(["evaluate", str(out), "--iw-samples", "10", "--json", "--quiet"]) == 0
    res = __import__("json").loads(capsys.readouterr().out)
    assert res["kind"] == args[0] and res["log_px"] <= 0 and res["bits_per_dim"] > 0
