"""Normalizing flows: invertibility, log|det J| against autograd, normalisation, MADE's ordering, fitting a
Gaussian, the dequantized scale shared with the VAE, and the command line on a 2-D dataset."""
from __future__ import annotations

import json
import math

import pytest
import torch

import vgm
from vgm.data.dequantize import eval_noise, log_scale
from vgm.flows import (MADE, ActNorm, AffineCoupling, Logit, LULinear, MaskedAffineAutoregressive,
                       Permutation, Reverse, RQSplineCoupling, UniformDequantization)
from vgm.data.toy2d import TOY
from vgm.flows.actnorm import STD_FLOOR

from conftest import run_cli

VEC, IMG = (5,), (1, 4, 4)


def perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its (identity) initialisation, so the checks see a non-trivial map."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def transforms():
    """(name, transform, event shape, input sampler) for every transform class, on vectors and images."""
    torch.manual_seed(0)
    normal = lambda s: lambda n: 1.5 * torch.randn(n, *s, dtype=torch.float64)
    unit = lambda s: lambda n: torch.rand(n, *s, dtype=torch.float64) * 0.98 + 0.01
    return [
        ("affine-vec", AffineCoupling(VEC, 16, parity=0), VEC, normal(VEC)),
        ("affine-vec-odd", AffineCoupling(VEC, 16, parity=1), VEC, normal(VEC)),
        ("affine-img", AffineCoupling(IMG, 8, parity=1), IMG, normal(IMG)),
        ("affine-img-conv", AffineCoupling(IMG, 8, parity=0, arch="conv"), IMG, normal(IMG)),
        ("spline-vec", RQSplineCoupling(VEC, 16, 0, bins=5, bound=2.0), VEC, normal(VEC)),   # some values in the tails
        ("spline-img", RQSplineCoupling(IMG, 8, 1, bins=4, bound=2.0), IMG, normal(IMG)),
        ("spline-img-conv", RQSplineCoupling(IMG, 8, 1, bins=4, bound=2.0, arch="conv"), IMG, normal(IMG)),
        ("maf", MaskedAffineAutoregressive(VEC[0], 16), VEC, normal(VEC)),
        ("maf-img", MaskedAffineAutoregressive(16, 16), IMG, normal(IMG)),
        ("permutation", Permutation(torch.randperm(VEC[0])), VEC, normal(VEC)),
        ("reverse", Reverse(VEC[0]), VEC, normal(VEC)),
        ("lu-linear", LULinear(VEC[0]), VEC, normal(VEC)),
        ("lu-linear-img", LULinear(16), IMG, normal(IMG)),
        ("actnorm-vec", ActNorm(VEC), VEC, normal(VEC)),
        ("actnorm-img", ActNorm((2, 3, 3)), (2, 3, 3), normal((2, 3, 3))),
        ("logit", Logit(0.05), IMG, unit(IMG)),
    ]


def jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det ∂fn/∂x| of each example, from autograd's full Jacobian."""
    out = []
    for xi in x:
        j = torch.autograd.functional.jacobian(lambda v: fn(v.reshape(1, *xi.shape))[0].reshape(-1), xi.reshape(-1))
        out.append(torch.linalg.slogdet(j)[1])
    return torch.stack(out)


@pytest.mark.parametrize("name,t,shape,draw", transforms(), ids=lambda v: v if isinstance(v, str) else "")
def test_transform_inverse_and_logdet(name, t, shape, draw):
    t = t.double()
    x = draw(6)
    if isinstance(t, ActNorm):
        t(draw(64))                                   # data-dependent init first, then move off it
    perturb(t)
    z, ld = t(x)
    x2, ld_inv = t.inverse(z)
    assert z.shape == x.shape and ld.shape == (6,)
    assert torch.allclose(x2, x, atol=1e-5), (x2 - x).abs().max()
    assert torch.allclose(ld_inv, -ld, atol=1e-5)
    assert torch.allclose(ld, jacobian_logdet(t, x), atol=1e-5)
    assert torch.allclose(ld_inv, jacobian_logdet(t.inverse, z), atol=1e-5)


def test_spline_is_identity_outside_bound_and_monotone_inside():
    t = perturb(RQSplineCoupling((2,), 8, 0, bins=6, bound=1.0).double(), scale=1.0)
    grid = torch.linspace(-3, 3, 2001, dtype=torch.float64)
    x = torch.stack([torch.full_like(grid, 0.4), grid], 1)     # value 0 conditions value 1
    z, _ = t(x)
    out = grid.abs() > 1
    assert torch.equal(z[out, 1], grid[out])
    assert (z[1:, 1] - z[:-1, 1] > 0).all()


def test_dequantization_inverts_on_the_lattice_and_counts_its_scale():
    levels = 17
    t = UniformDequantization(levels)
    x = torch.randint(0, levels, (8, *IMG)).double() / (levels - 1)
    u = torch.rand(8, *IMG, dtype=torch.float64)
    y, ld = t(x, noise=u)
    assert ((y >= 0) & (y < 1)).all() and torch.equal(t.inverse(y)[0], x)
    assert torch.allclose(ld, torch.full((8,), -16 * math.log(levels), dtype=torch.float64))
    assert torch.allclose(ld[:2], jacobian_logdet(lambda v: (t(x[:1], noise=v)[0],), u[:2]))   # ∂y/∂u = 1/L


def test_logit_needs_alpha_above_zero_and_is_finite_at_the_ends():
    """A dequantized value can be exactly 0 (k = 0, u = 0), whose logit at α = 0 is −inf and aborts training."""
    with pytest.raises(ValueError, match="alpha"):
        Logit(0.0)
    with pytest.raises(ValueError, match="alpha"):
        vgm.MODELS["realnvp"](input_shape=IMG, levels=17, alpha=0.0)
    t = Logit(1e-6).double()
    y = torch.tensor([[0.0, 1.0, 0.5, 1e-9]], dtype=torch.float64)
    z, ld = t(y)
    assert torch.isfinite(z).all() and torch.isfinite(ld).all()
    assert torch.allclose(ld, jacobian_logdet(t, y)) and torch.allclose(t.inverse(z)[0], y, atol=1e-12)
    model = vgm.MODELS["realnvp"](input_shape=IMG, levels=17, depth=1, hidden=8)
    x = torch.zeros(2, *IMG)
    assert torch.isfinite(model.log_prob(x, noise=torch.zeros_like(x))).all()     # y = 0 exactly


def test_actnorm_init_on_a_constant_feature_and_on_one_example():
    """A feature constant in the first batch used to get exp(s) = 1e-6 (a later shift of 0.1 became 1e5); a first
    batch of one example skipped the initialisation silently."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64) + 1
    x[:, 1] = 3.0
    an = ActNorm((3,)).double().train()
    z, ld = an(x)
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z[:, [0, 2]].var(0, correction=0), torch.ones(2, dtype=torch.float64))
    assert an.log_scale[1].item() == 0 and an.loc[1].item() == 3.0               # centred, scale 1
    shifted = x[:4].clone()
    shifted[:, 1] = 3.1
    assert torch.allclose(an(shifted)[0][:, 1], torch.full((4,), 0.1, dtype=torch.float64))
    assert torch.allclose(ld, jacobian_logdet(an, x[:6]).mean() * torch.ones(64, dtype=torch.float64))
    nearly = ActNorm((1,)).double().train()
    nearly(torch.full((8, 1), 5.0, dtype=torch.float64) + 0.1 * STD_FLOOR * torch.arange(8.0)[:, None])
    assert nearly.log_scale.item() == 0                                          # below the floor: constant
    one = ActNorm((3,)).double().train()
    z1, _ = one(x[:1])                                                           # a batch of one vector
    assert int(one.initialized) == 1 and torch.equal(one.loc.detach(), x[0]) and not one.log_scale.any()
    assert torch.equal(z1, torch.zeros_like(z1))
    img = ActNorm((2, 3, 3)).double().train()                                    # one image: 9 values a channel
    zi, _ = img(torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64) * 4)
    assert int(img.initialized) == 1
    assert torch.allclose(zi.var((0, 2, 3), correction=0), torch.ones(2, dtype=torch.float64))
    frozen = ActNorm((3,)).double().eval()                                       # evaluation never initialises
    frozen(x)
    assert int(frozen.initialized) == 0


def test_permutation_rebuilds_its_inverse_on_load():
    torch.manual_seed(0)
    saved, fresh = Permutation(torch.randperm(7)), Permutation(torch.randperm(7))
    assert not torch.equal(saved.perm, fresh.perm)
    fresh.load_state_dict(saved.state_dict())
    x = torch.randn(5, 7)
    z, _ = fresh(x)
    assert torch.equal(z, saved(x)[0]) and torch.equal(fresh.inverse(z)[0], x)


FLOW_CASES = [("realnvp", VEC, 0), ("maf", VEC, 0), ("nsf", VEC, 0), ("realnvp", IMG, 17), ("maf", IMG, 17),
              ("nsf", IMG, 17)]


def small_flow(kind: str, shape, levels: int, dtype=torch.float64):
    torch.manual_seed(1)
    model = vgm.MODELS[kind](input_shape=shape, levels=levels, depth=3, hidden=16).to(dtype)
    init = torch.rand if levels else torch.randn                 # dequantized images live in (0, 1)
    model.flow(init(64, *shape, dtype=dtype))                    # ActNorm's data-dependent init
    return perturb(model, 0.05 if levels else 0.2)      # mild on images: samples stay inside logit's range


@pytest.mark.parametrize("kind,shape,levels", FLOW_CASES)
def test_whole_flow_inverse_logdet_and_sampling(kind, shape, levels):
    model = small_flow(kind, shape, levels)
    y = torch.rand(4, *shape, dtype=torch.float64) if levels else torch.randn(4, *shape, dtype=torch.float64)
    z, ld = model.flow(y)
    assert torch.allclose(model.flow.inverse(z)[0], y, atol=1e-5)
    assert torch.allclose(ld, jacobian_logdet(model.flow, y), atol=1e-5)
    x, logp = model.flow.sample_and_log_prob((5,))
    assert x.shape == (5, *shape) and torch.allclose(model.flow.log_prob(x), logp, atol=1e-5)


@pytest.mark.parametrize("kind", ["realnvp", "maf", "nsf"])
def test_2d_density_integrates_to_one(kind):
    model = perturb(small_flow(kind, (2,), 0), 0.1, seed=1).eval()
    n, lim = 400, 10.0
    axis = torch.linspace(-lim, lim, n, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = model.log_prob(pts).exp().sum().item() * (axis[1] - axis[0]).item() ** 2
    assert abs(mass - 1) < 5e-3, mass


def test_made_is_autoregressive():
    d = 6
    made = perturb(MADE(d, hidden=20, params=2).double())
    x = torch.randn(d, dtype=torch.float64)
    j = torch.autograd.functional.jacobian(lambda v: made(v[None])[0], x)      # (d, P, d)
    dep = j.abs().sum(1) > 0                                                   # output i depends on input j
    assert not dep.triu().any()                                                # only on j < i
    assert dep[torch.ones(d, d, dtype=torch.bool).tril(-1)].all()             # and on every such j
    # fewer hidden units than inputs: still autoregressive, and the last output sees the first and last inputs
    # (read off the product of the masks: a single-point Jacobian can miss paths through inactive ReLUs)
    masks = [m.mask.double() for m in MADE(12, hidden=5, params=1).net if hasattr(m, "mask")]
    dep12 = (masks[2] @ masks[1] @ masks[0]) > 0                              # (outputs, inputs)
    assert not dep12.triu().any()
    assert dep12[-1, 0] and dep12[-1, -2] and dep12[1, 0]
    maf = perturb(MaskedAffineAutoregressive(d, 20).double())
    jz = torch.autograd.functional.jacobian(lambda v: maf(v[None])[0][0], x)
    assert torch.equal(jz.triu(1), torch.zeros_like(jz)) and (jz.diagonal() != 0).all()


def gaussian_splits(n_train=6000, n_test=4000):
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]]) * 0.5
    mvn = torch.distributions.MultivariateNormal(torch.tensor([1.0, -2.0]), cov)
    draw = lambda n: torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(cov).T + mvn.loc
    return vgm.Splits(draw(n_train), draw(1000), draw(n_test)), mvn


@pytest.mark.parametrize("kind", ["realnvp", "maf"])
def test_flow_fits_a_gaussian_to_its_test_likelihood(kind):
    data, mvn = gaussian_splits()
    torch.manual_seed(0)
    model = vgm.MODELS[kind](input_shape=(2,), depth=2, hidden=16)
    vgm.fit(model, data, vgm.TrainConfig(epochs=8, batch_size=128, lr=3e-3, device="cpu"), progress=False)
    got = model.evaluate(data.test)["log_px"]
    true = mvn.log_prob(data.test).mean().item()            # the best any model can do on this test set
    assert abs(got - true) < 0.03, (got, true)


def test_actnorm_init_survives_save_load_and_is_not_redone(tmp_path):
    data, _ = gaussian_splits(600, 100)
    torch.manual_seed(0)
    model = vgm.MODELS["realnvp"](input_shape=(2,), depth=2, hidden=8)
    vgm.fit(model, data, vgm.TrainConfig(epochs=1, batch_size=100, device="cpu"), run_dir=tmp_path, progress=False)
    loaded = vgm.load(tmp_path)
    an = loaded.flow.transforms[0]
    assert isinstance(an, ActNorm) and int(an.initialized) == 1
    before = an.loc.detach().clone()
    loaded.train().loss(torch.randn(50, 2) * 10 + 7)
    assert torch.equal(an.loc, before)                       # a new batch does not re-initialise it
    assert torch.allclose(loaded.evaluate(data.test)["log_px"] * torch.ones(1),
                          model.evaluate(data.test)["log_px"] * torch.ones(1))


def test_toy_datasets_are_seeded_and_two_dimensional():
    for name in TOY:
        a, b = vgm.load_data(name), vgm.load_data(name)
        assert a.train.shape[1:] == (2,) and torch.equal(a.test, b.test) and a.meta == {"levels": 0}
        assert a.train.abs().max() < 6
    with pytest.raises(vgm.VgmError):
        vgm.load_data("moons", binarize="static")


def test_wrong_dimension_is_a_vgm_error():
    model = vgm.MODELS["maf"](input_shape=(2,))
    with pytest.raises(vgm.VgmError, match="shape"):
        model.log_prob(torch.randn(3, 5))


def test_flow_and_dequantized_vae_are_scored_on_the_same_scale():
    """Both use y = (k + u)/L with the same evaluation noise, and log p(y) − D log L."""
    data = vgm.load_data("digits")
    x = data.test[:50]
    assert data.meta["levels"] == 17
    torch.manual_seed(0)
    vae = vgm.VAE(input_shape=data.shape, hidden=(32,), latent_dim=4, likelihood="gaussian", learn_sigma=True,
                  levels=17, dequantize=True).eval()
    y = vgm.data.dequantize.dequantize(x, 17, eval_noise(x))
    torch.manual_seed(1)
    got = vgm.evaluate(vae, x, iw_samples=20, batch_size=50)        # the grid points k/(L-1): dequantized inside
    torch.manual_seed(1)                                              # the same draws, on y, by hand
    terms, lp = vgm.elbo(vae, y), vgm.log_px(vae, y, 20)
    shift = log_scale(17, 64)
    assert got["log_px"] == pytest.approx(lp.mean().item() + shift, rel=1e-6)
    assert got["elbo"] == pytest.approx(terms["elbo"].mean().item() + shift, rel=1e-6)
    assert got["bits_per_dim"] == pytest.approx(-got["log_px"] / (64 * math.log(2)))
    flow = vgm.MODELS["maf"](input_shape=data.shape, levels=17, depth=1, hidden=8).eval()
    assert flow.evaluate(x)["log_px"] == pytest.approx(
        (flow.flow.log_prob(y) + shift).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="dequantize"):
        vgm.VAE(input_shape=data.shape, levels=17, dequantize=True)           # Bernoulli is no density on y


def test_cli_train_evaluate_sample_on_moons(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "nsf", "--data", "moons", "--epochs", "1", "--depth", "1", "--hidden", "8", "--bins", "4",
                "--batch-size", "500", "--out", run, "--quiet", "--seed", "3")
    assert r.returncode == 0, r.stderr
    r = run_cli("evaluate", run, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["kind"] == "nsf" and res["dims"] == 2 and res["n_examples"] == 5000
    assert res["log_px"] == pytest.approx(vgm.load(run).evaluate(vgm.load_data("moons").test)["log_px"], abs=1e-4)
    assert res["bits_per_dim"] is None                     # a density of continuous values: no bits/dim
    r = run_cli("sample", run, "-n", "500", "--out", tmp_path / "s.png")
    assert r.returncode == 0 and (tmp_path / "s.png").stat().st_size > 1000, r.stderr


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from vgm.cli import main
    run = tmp_path / "run"
    assert main(["train", "realnvp", "--data", "moons", "--epochs", "1", "--depth", "1", "--out", str(run),
                 "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["data"] = "digits"                                   # a moons flow asked to score 8x8 digits
    (run / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    for argv in (["evaluate", str(run)], ["train", "maf", "--data", "rings", "--binarize", "static"],
                 ["train", "nsf", "--data", "moons", "--bins", "1", "--out", str(tmp_path / "x")],
                 ["train", "realnvp", "--data", "digits", "--alpha", "0", "--out", str(tmp_path / "y")],
                 ["reconstruct", str(run)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("vgm: error:") and err.count("\n") == 1, err


def test_flow_vs_vae_quick(tmp_path):
    from vgm.experiments.flow_vs_vae import run
    res = run(tmp_path, quick=True, seed=0, data_dir=None)
    flow, vae = res["table"]
    assert flow["log_px_kind"] == "exact" and vae["elbo"] <= vae["log_px"]          # ELBO ≤ L_K
    assert abs(flow["params"] - vae["params"]) < 0.1 * vae["params"]
    for r in (flow, vae):
        assert r["bits_per_dim"] == pytest.approx(-r["log_px"] / (64 * math.log(2)))
    assert (tmp_path / "samples.png").stat().st_size > 1000 and (tmp_path / "results.json").is_file()


def test_resume_keeps_actnorm_init_and_matches_an_uninterrupted_run(tmp_path):
    """A re-initialised ActNorm on resume would change the numbers; the core promises identical ones."""
    data, _ = gaussian_splits(600, 100)
    cfg = lambda e: vgm.TrainConfig(epochs=e, batch_size=100, device="cpu", seed=2)
    build = lambda: (torch.manual_seed(0), vgm.MODELS["nsf"](input_shape=(2,), depth=2, hidden=8, bins=4))[1]
    whole = build()
    vgm.fit(whole, data, cfg(2), run_dir=tmp_path / "a", progress=False)
    vgm.fit(build(), data, cfg(1), run_dir=tmp_path / "b", progress=False)
    resumed = build()
    vgm.fit(resumed, data, cfg(2), run_dir=tmp_path / "b", resume=True, progress=False)
    for (k, v), w in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
