"""Image and conditional flows: squeeze, invertible 1x1 convolution, channel couplings, multi-scale factor-out with
a learned prior, Glow, multi-scale RealNVP, the autoregressive spline flow, contexts, temperatures, bad input."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import vgm
from vgm.flows import (AffineChannelCoupling, AffineCoupling, Chain, Flow, GaussianPrior, InvertibleConv1x1,
                       MaskedAffineAutoregressive, MaskedRQSAutoregressive, MultiScale, RQSplineCoupling, Squeeze)
from vgm.flows.multiscale import max_squeezes

from test_flows import jacobian_logdet, perturb

IMG4, IMG8 = (4, 2, 2), (2, 4, 4)
CTX = 3


def ctx_for(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, CTX, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def new_transforms():
    """(name, transform, event shape, context or None) for every transform this module adds or makes conditional.
    Built at collection under a forked RNG, so other test modules' draws do not depend on this one."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_transforms()


def build_transforms():
    inner = Chain([AffineChannelCoupling((2, 2, 2), 6, 1), GaussianPrior((2, 2, 2))])   # below a 1x4x4 scale
    return [
        ("squeeze", Squeeze(IMG8), IMG8, None),
        ("conv1x1", InvertibleConv1x1(IMG8), IMG8, None),
        ("conv1x1-4ch", InvertibleConv1x1(IMG4), IMG4, None),
        ("channel-coupling", AffineChannelCoupling(IMG8, 6, 0), IMG8, None),
        ("channel-coupling-parity1", AffineChannelCoupling(IMG4, 6, 1), IMG4, None),
        ("channel-coupling-ctx", AffineChannelCoupling(IMG8, 6, 1, context_features=CTX), IMG8, CTX),
        ("gaussian-prior", GaussianPrior(IMG8), IMG8, None),
        ("gaussian-prior-ctx", GaussianPrior(IMG8, context_features=CTX), IMG8, CTX),
        ("multiscale-split", MultiScale((1, 4, 4), [AffineCoupling((1, 4, 4), 6, 0, "conv")],
                                        [AffineChannelCoupling(IMG4, 6, 0)], inner), (1, 4, 4), None),
        ("multiscale-last", MultiScale(IMG8, [], [InvertibleConv1x1((8, 2, 2)), AffineChannelCoupling((8, 2, 2), 6)],
                                       None), IMG8, None),
        ("multiscale-ctx", MultiScale(IMG8, [], [AffineChannelCoupling((8, 2, 2), 6, context_features=CTX)],
                                      Chain([GaussianPrior(IMG4, CTX)]), context_features=CTX), IMG8, CTX),
        ("multiscale-no-prior", MultiScale(IMG8, [AffineCoupling(IMG8, 6, 1, "conv")], [], Chain([]), prior=False),
         IMG8, None),
        ("ar-spline", MaskedRQSAutoregressive(5, 16, bins=4, bound=2.0), (5,), None),
        ("ar-spline-img", MaskedRQSAutoregressive(8, 16, bins=3, bound=2.0), (2, 2, 2), None),
        ("ar-spline-ctx", MaskedRQSAutoregressive(5, 16, bins=4, bound=2.0, context_features=CTX), (5,), CTX),
        ("maf-ctx", MaskedAffineAutoregressive(5, 16, context_features=CTX), (5,), CTX),
        ("affine-ctx", AffineCoupling((5,), 8, 0, context_features=CTX), (5,), CTX),
        ("affine-conv-ctx", AffineCoupling(IMG8, 8, 1, "conv", context_features=CTX), IMG8, CTX),
        ("spline-ctx", RQSplineCoupling((5,), 8, 1, bins=4, bound=2.0, context_features=CTX), (5,), CTX),
    ]


def call(t, x, c, inverse=False):
    f = t.inverse if inverse else t
    return f(x, c) if t.takes_context else f(x)


@pytest.mark.parametrize("name,t,shape,cf", new_transforms(), ids=lambda v: v if isinstance(v, str) else "")
def test_new_transform_inverse_and_logdet(name, t, shape, cf):
    t = perturb(t.double(), 0.3)
    x = 1.5 * torch.randn(6, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = ctx_for(6) if cf else None
    z, ld = call(t, x, c)
    x2, ld_inv = call(t, z, c, inverse=True)
    assert z.numel() == x.numel() and ld.shape == (6,)
    assert torch.allclose(x2, x, atol=1e-5), (x2 - x).abs().max()
    assert torch.allclose(ld_inv, -ld, atol=1e-5)
    jac = [jacobian_logdet(lambda v: call(t, v, None if c is None else c[i:i + 1]), x[i:i + 1]) for i in range(6)]
    assert torch.allclose(ld, torch.cat(jac), atol=1e-5)
    if name != "squeeze":
        assert z.shape == x.shape and not torch.allclose(z, x, atol=1e-3)                # perturbed: a real map is checked
    if cf:                                                         # the context changes the map
        assert not torch.allclose(call(t, x, ctx_for(6, seed=5))[0], z, atol=1e-4)


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(1, 2, 4, 6)
    z, ld = Squeeze((2, 4, 6))(x)
    assert z.shape == (1, 8, 2, 3) and ld.item() == 0
    for c in range(2):
        for a in range(2):
            for b in range(2):
                for i in range(2):
                    for j in range(3):
                        assert z[0, 4 * c + 2 * a + b, i, j] == x[0, c, 2 * i + a, 2 * j + b]


def test_conv1x1_logdet_is_pixels_times_log_det_w_and_starts_as_a_rotation():
    torch.manual_seed(3)
    t = InvertibleConv1x1((4, 3, 5)).double()
    w0 = t.weight()
    assert torch.allclose(w0 @ w0.T, torch.eye(4, dtype=torch.float64), atol=1e-6)   # a rotation: |det| = 1
    perturb(t, 0.4)
    w = t.weight()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    z, ld = t(x)
    assert torch.allclose(z, torch.einsum("oc,nchw->nohw", w, x))                  # the same W at every pixel
    sign, logabs = torch.linalg.slogdet(w)
    assert torch.allclose(ld, 15 * logabs * torch.ones(2, dtype=torch.float64))    # H·W·log|det W|
    assert t.sign.abs().min() == 1 and not torch.allclose(logabs, torch.zeros((), dtype=torch.float64))


def test_multiscale_with_identity_steps_is_exactly_the_base_density():
    """Squeeze and split keep every value once: with identity steps and priors at their start, log p(x) is
    log N(x; 0, I); with learned priors it is the product of the factored-out Gaussians, computed by hand."""
    torch.manual_seed(0)
    model = vgm.MODELS["glow"](input_shape=(1, 8, 8), levels_l=3, steps_k=1, width=4).double()
    for lvl in (model.flow.transforms[0], model.flow.transforms[0].inner, model.flow.transforms[0].inner.inner):
        lvl.after = torch.nn.ModuleList()                                      # identity steps
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(model.flow.log_prob(x), Normal(0, 1).log_prob(x).sum((1, 2, 3)), atol=1e-10)
    perturb(model, 0.3)                                            # learned priors: split convs and the top prior
    levels = [model.flow.transforms[0], model.flow.transforms[0].inner, model.flow.transforms[0].inner.inner]
    expect = torch.zeros(5, dtype=torch.float64)
    h = x
    for lvl in levels:
        n, c, s = h.shape[0], h.shape[1], h.shape[2]
        sq = h.reshape(n, c, s // 2, 2, s // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, s // 2, s // 2)
        if lvl.inner is None:
            top = lvl.top
            expect += Normal(top.loc, top.log_scale.exp()).log_prob(sq).sum((1, 2, 3))
        else:
            z1, z2 = sq[:, :2 * c], sq[:, 2 * c:]
            mu, log_s = lvl.split(z1).chunk(2, 1)
            expect += Normal(mu, log_s.exp()).log_prob(z2).sum((1, 2, 3))
            h = z1
    assert torch.allclose(model.flow.log_prob(x), expect, atol=1e-8)


def small_image_model(kind: str, shape=(1, 4, 4), conditional=False, **kw):
    torch.manual_seed(1)
    model = vgm.MODELS[kind](input_shape=shape, levels=17, conditional=conditional, num_classes=3, **kw).double()
    c = torch.arange(64) % 3 if conditional else None
    model.flow(torch.rand(64, *shape, dtype=torch.float64), model.flow.context_tensor(c, 64))    # ActNorm init
    return perturb(model, 0.05)


IMAGE_MODELS = [("glow", dict(levels_l=2, steps_k=2, width=6)), ("realnvp", dict(multiscale=True, scales=2, hidden=6)),
                ("nsf", dict(autoregressive=True, depth=2, hidden=16, bins=4))]


@pytest.mark.parametrize("kind,kw", IMAGE_MODELS, ids=[k for k, _ in IMAGE_MODELS])
@pytest.mark.parametrize("conditional", [False, True])
def test_image_model_inverse_logdet_and_sampling(kind, kw, conditional):
    model = small_image_model(kind, conditional=conditional, **kw)
    y = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    c = model.flow.context_tensor(torch.tensor([0, 1, 2, 1]) if conditional else None, 4)
    z, ld = model.flow(y, c)
    assert torch.allclose(model.flow.inverse(z, c)[0], y, atol=1e-5)
    jac = [jacobian_logdet(lambda v: model.flow(v, None if c is None else c[i:i + 1]), y[i:i + 1]) for i in range(4)]
    assert torch.allclose(ld, torch.cat(jac), atol=1e-5)
    label = 2 if conditional else None
    x, logp = model.flow.sample_and_log_prob((5,), label)
    assert x.shape == (5, 1, 4, 4) and torch.allclose(model.flow.log_prob(x, label), logp, atol=1e-5)
    xs = model.sample(7, temperature=0.7, label=label)
    levels = xs * 16
    assert xs.shape == (7, 1, 4, 4) and torch.equal(levels, levels.round())      # back on the grey levels


def test_temperature_scales_the_base_draw():
    model = small_image_model("glow", levels_l=2, steps_k=1, width=4)
    torch.manual_seed(7)
    got = model.flow.sample((6,), temperature=0.5)
    torch.manual_seed(7)
    z = 0.5 * torch.randn(6, 1, 4, 4, dtype=torch.float64)
    assert torch.allclose(got, model.flow.inverse(z)[0])
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(vgm.VgmError, match="temperature"):
            model.sample(3, temperature=bad)


def test_ar_spline_starts_as_identity_and_is_autoregressive():
    t = MaskedRQSAutoregressive(6, 20, bins=5, bound=3.0).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    z, ld = t(x)
    assert torch.allclose(z, x, atol=1e-7) and torch.allclose(ld, torch.zeros(4, dtype=torch.float64), atol=1e-7)
    perturb(t, 0.5)
    z = t(x)[0]
    assert torch.allclose(t.inverse(z)[0], x, atol=1e-12, rtol=0)     # D passes: exact, not nearly converged
    j = torch.autograd.functional.jacobian(lambda v: t(v[None])[0][0], x[0])
    assert torch.equal(j.triu(1), torch.zeros_like(j)) and (j.diagonal() > 0).all()
    assert (j.tril(-1).abs() > 0).sum() > 10                       # and depends on the earlier values
    drop = perturb(MaskedRQSAutoregressive(6, 20, bins=5, bound=3.0, dropout=0.5).double(), 0.5).train()
    jd = torch.autograd.functional.jacobian(lambda v: drop(v[None])[0][0], x[0])
    assert torch.equal(jd.triu(1), torch.zeros_like(jd))         # dropout in training keeps the order
    drop.eval()
    assert torch.equal(drop(x)[0], drop(x)[0]) and not torch.equal(drop.train()(x)[0], drop(x)[0])
    with pytest.raises(ValueError, match="autoregressive"):
        vgm.MODELS["nsf"](input_shape=(2,), dropout=0.2)


CONDITIONAL_2D = [("realnvp", dict(depth=3, hidden=16)), ("maf", dict(depth=3, hidden=16)),
                  ("nsf", dict(depth=2, hidden=16)), ("nsf", dict(depth=2, hidden=16, autoregressive=True))]


@pytest.mark.parametrize("kind,kw", CONDITIONAL_2D, ids=["realnvp", "maf", "nsf", "nsf-ar"])
def test_conditional_densities_differ_and_each_integrates_to_one(kind, kw):
    torch.manual_seed(2)
    model = vgm.MODELS[kind](input_shape=(2,), conditional=True, num_classes=3, **kw).double()
    model.flow(torch.randn(64, 2, dtype=torch.float64), model.flow.context_tensor(torch.arange(64) % 3, 64))
    perturb(model, 0.15, seed=3).eval()
    n, lim = 400, 10.0
    axis = torch.linspace(-lim, lim, n, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    cell = (axis[1] - axis[0]).item() ** 2
    with torch.no_grad():
        logps = [model.log_prob(pts, y=k) for k in range(3)]
    for lp in logps:
        assert abs(lp.exp().sum().item() * cell - 1) < 5e-3
    for a in range(3):
        for b in range(a):
            assert (logps[a] - logps[b]).abs().max() > 0.1                     # the label changes the density


def test_vector_context_flow_integrates_to_one_for_each_context():
    torch.manual_seed(0)
    flow = Flow([AffineCoupling((2,), 16, 0, context_features=2), MaskedRQSAutoregressive(2, 16, 4, 4.0, 2, 2),
                 AffineCoupling((2,), 16, 1, context_features=2)], (2,), context_features=2).double()
    perturb(flow, 0.2)
    axis = torch.linspace(-10, 10, 400, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    cell = (axis[1] - axis[0]).item() ** 2
    with torch.no_grad():
        lp = [flow.log_prob(pts, torch.tensor(c, dtype=torch.float64)) for c in ([1.0, -1.0], [-2.0, 0.5])]
    assert all(abs(v.exp().sum().item() * cell - 1) < 5e-3 for v in lp)
    assert (lp[0] - lp[1]).abs().max() > 0.1


def test_conditional_flow_learns_the_label():
    """Two classes of 2-D points: trained on p(x | y), the right label scores the test points higher and the
    samples of each label land near that class's mean."""
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    y = torch.randint(0, 2, (3000,), generator=g)
    x = means[y] + 0.4 * torch.randn(3000, 2, generator=g)
    torch.manual_seed(0)
    model = vgm.MODELS["realnvp"](input_shape=(2,), depth=2, hidden=16, conditional=True, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for i in range(0, 2500, 100):
            loss = model.loss(x[i:i + 100], y[i:i + 100])["loss"].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    xt, yt = x[2500:], y[2500:]
    right = model.evaluate(xt, labels=yt)["log_px"]
    wrong = model.evaluate(xt, labels=1 - yt)["log_px"]
    assert right > wrong + 5
    for k in range(2):
        s = model.sample(500, label=k)
        near = ((s - means[k]).norm(dim=1) < (s - means[1 - k]).norm(dim=1)).float().mean()
        assert near > 0.95, near
    ev = model.evaluate(xt)                                           # no labels: the marginal, a true density
    assert "labels" in ev["conditional"] and wrong < ev["log_px"] < right


def test_marginal_evaluation_uses_one_noise_draw_for_every_label():
    from vgm.data.dequantize import eval_noise
    model = small_image_model("glow", conditional=True, levels_l=1, steps_k=1, width=4).float()
    x = torch.randint(0, 17, (6, 1, 4, 4)) / 16.0
    u = eval_noise(x)
    with torch.no_grad():
        per = torch.stack([model.log_prob(x, u, k) for k in range(3)])
    expect = (torch.logsumexp(per, 0) - math.log(3)).mean().item()
    assert model.evaluate(x)["log_px"] == pytest.approx(expect, rel=1e-6)
    assert model.evaluate(x, labels=torch.full((6,), 2))["log_px"] == pytest.approx(per[2].mean().item(), rel=1e-6)
    torch.manual_seed(4)
    fresh = model.marginal_log_prob(x)                               # no noise given: one draw for all labels
    torch.manual_seed(4)
    assert torch.allclose(fresh, model.marginal_log_prob(x, torch.rand_like(x)))


def test_bad_context_and_temperature_are_vgm_errors():
    torch.manual_seed(0)
    cond = vgm.MODELS["realnvp"](input_shape=(2,), depth=1, hidden=4, conditional=True, num_classes=3)
    plain = vgm.MODELS["realnvp"](input_shape=(2,), depth=1, hidden=4)
    vec = Flow([AffineCoupling((2,), 4, 0, context_features=2)], (2,), context_features=2)
    x = torch.randn(4, 2)
    cases = [(lambda: cond.loss(x), "conditional"), (lambda: cond.loss(x, torch.tensor([0, 1, 3, 0])), "0..2"),
             (lambda: cond.loss(x, torch.tensor([0, 1])), "labels"), (lambda: cond.loss(x, torch.tensor(-1)), "0..2"),
             (lambda: cond.loss(x, torch.tensor([0.5, 1, 1, 1])), "whole"),
             (lambda: plain.loss(x, torch.zeros(4)), "not conditional"),
             (lambda: vec.log_prob(x, torch.zeros(4, 3)), "2 features"),
             (lambda: vec.log_prob(x, torch.zeros(3, 2)), "2 features"),
             (lambda: vec.sample((2,), torch.tensor([float("nan"), 0.0])), "NaN"),
             (lambda: cond.sample(2, temperature=0), "temperature"),
             (lambda: vec.sample((2,), torch.zeros(2), temperature=-0.5), "temperature"),
             (lambda: cond.evaluate(x, labels=torch.zeros(3)), "labels")]
    for fn, words in cases:
        with pytest.raises(vgm.VgmError, match=words):
            fn()


def test_odd_channels_and_unsqueezable_sizes_are_refused():
    with pytest.raises(ValueError, match="even number, got 3"):
        AffineChannelCoupling((3, 4, 4), 8)
    with pytest.raises(ValueError, match="height and width must be even"):
        Squeeze((1, 6, 5))
    assert max_squeezes(28, 28) == 2 and max_squeezes(8, 8) == 3 and max_squeezes(32, 16) == 4
    with pytest.raises(ValueError, match=r"at most 2 times \(28x28 -> 14x14 -> 7x7\).*largest valid is --levels-l 2"):
        vgm.MODELS["glow"](input_shape=(1, 28, 28), levels_l=3)
    with pytest.raises(ValueError, match="largest valid is --scales 3"):
        vgm.MODELS["realnvp"](input_shape=(1, 28, 28), multiscale=True, scales=4)
    with pytest.raises(ValueError, match="needs images"):
        vgm.MODELS["realnvp"](input_shape=(2,), multiscale=True)


def test_cli_glow_on_digits_and_its_bad_input(tmp_path, capsys):
    from vgm.cli import main
    run, cond = tmp_path / "glow", tmp_path / "cond"
    small = ["--epochs", "1", "--steps-k", "1", "--width", "8", "--quiet"]
    assert main(["train", "glow", "--data", "digits", "--levels-l", "2", "--out", str(run), *small]) == 0
    assert main(["sample", str(run), "-n", "16", "--temperature", "0.7", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 500
    assert main(["train", "glow", "--data", "digits", "--conditional", "--levels-l", "1", "--out", str(cond),
                 *small]) == 0
    assert main(["sample", str(cond), "-n", "8", "--label", "3", "--out", str(tmp_path / "three.png")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(cond), "--json"]) == 0 and "labels given" in capsys.readouterr().out
    for argv, words in ((["train", "glow", "--data", "digits", "--levels-l", "4"], "largest valid is --levels-l 3"),
                        (["sample", str(cond), "--label", "10"], "0..9"),
                        (["train", "realnvp", "--data", "digits", "--multiscale", "--scales", "5"], "--scales 4"),
                        (["train", "glow", "--data", "moons"], "glow takes images"),
                        (["sample", str(run), "--temperature", "0"], "temperature")):
        assert main(argv + (["--out", str(tmp_path / "x")] if argv[0] == "train" else [])) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("vgm: error:") and err.count("\n") == 1 and words in err, err
