"""Issue 14's models: FactorVAE, DIP-VAE, CVAE, VQ-VAE (with its code prior) — each number against an independent
computation, and the bad input of each as one line."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import vgm
from vgm.models import CVAE, DIPVAE, VQVAE, FactorVAE
from vgm.models.dipvae import dip_covariance, dip_penalty
from vgm.models.factorvae import permute_dims
from vgm.models.vqvae import codebook_stats, ema_update


# ---------------------------------------------------------------- FactorVAE

def fit_discriminator(model: FactorVAE, draw, steps: int = 150) -> float:
    """Train the discriminator alone on batches from `draw` (by its own aux loss), return its TC estimate E[l(z)]
    on fresh draws."""
    opt = torch.optim.Adam(model.auxiliary_parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model.discriminator_loss(draw(256)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return model.tc_logits(draw(10000)).mean().item()


def test_the_discriminators_tc_estimate_is_zero_for_independent_and_the_closed_form_for_correlated_gaussians():
    # catches: real and permuted labels swapped (TC < 0), a permutation shared by all dimensions (z̃ = a row
    # shuffle of z, indistinguishable: estimate 0 for correlated z too), or tc read as D instead of log D/(1 − D)
    torch.manual_seed(0)
    rho = 0.9
    tc_true = -0.5 * math.log(1 - rho ** 2)          # KL(N(0, Σ) ‖ N(0, I)) for unit variances: 0.830 nats
    chol = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]]))
    indep = FactorVAE(input_shape=(1, 8, 8), arch="mlp", hidden=(8,), latent_dim=2, disc_hidden=32, disc_layers=2)
    corr = FactorVAE(indep.config)
    assert abs(fit_discriminator(indep, lambda n: torch.randn(n, 2))) < 0.05
    est = fit_discriminator(corr, lambda n: torch.randn(n, 2) @ chol.T)
    assert 0.6 * tc_true < est < 1.15 * tc_true   # a classifier's density ratio falls short of the truth


def test_permute_dims_shuffles_each_column_on_its_own():
    torch.manual_seed(0)
    z = torch.arange(200.0).reshape(100, 2) * torch.tensor([1.0, -1.0])
    p = permute_dims(z)
    for j in range(2):                                          # each column keeps its values ...
        assert torch.equal(p[:, j].sort().values, z[:, j].sort().values)
    rows = {tuple(r) for r in z.tolist()}                      # ... but the rows are broken up
    assert sum(tuple(r) in rows for r in p.tolist()) < 10


def test_factorvae_loss_terms_and_the_discriminators_loss_stays_off_the_vae():
    torch.manual_seed(0)
    m = FactorVAE(input_shape=(1, 8, 8), arch="mlp", hidden=(16,), latent_dim=3, gamma=7.0, disc_hidden=16,
                  disc_layers=2)
    x = torch.rand(6, 1, 8, 8).round()
    t = m.loss(x)
    # catches: γ not applied to the discriminator's estimate, or the wrong term weighted
    assert torch.allclose(t["loss"], t["recon"] + t["kl"] + 7.0 * t["tc"])
    assert torch.allclose(t["elbo"], -(t["recon"] + t["kl"]))
    # catches: aux_loss computed from z without detach (the discriminator's loss would train the encoder)
    grads = torch.autograd.grad(t["aux_loss"].sum(), list(m.encoder.parameters()), allow_unused=True)
    assert all(g is None for g in grads)
    assert all(g is not None for g in torch.autograd.grad(t["aux_loss"].sum(), list(m.auxiliary_parameters())))


def test_factorvae_batch_of_one_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vgm", "train", "factorvae", "--data", "digits", "--arch", "mlp",
                        "--hidden", "16", "--disc-hidden", "8", "--disc-layers", "1", "--batch-size", "1",
                        "--epochs", "1", "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]            # (after the trainer's summary line of the run)
    assert "Traceback" not in r.stderr and last.startswith("vgm: error: factorvae needs batches of at least 2"), \
        r.stderr


def test_factorvae_resumes_exactly(tmp_path):
    # two optimizers (VAE, discriminator): a resumed run's weights and both Adam states equal an uninterrupted run's
    data = vgm.load_data("digits")
    data.train = data.train[:256]
    kw = dict(input_shape=(1, 8, 8), arch="mlp", hidden=(16,), latent_dim=2, disc_hidden=16, disc_layers=2,
              likelihood="gaussian")
    cfg = dict(batch_size=64, seed=3)
    torch.manual_seed(0)
    whole = FactorVAE(**kw)
    vgm.fit(whole, data, vgm.TrainConfig(epochs=2, **cfg), run_dir=tmp_path / "whole", progress=False)
    torch.manual_seed(0)
    part = FactorVAE(**kw)
    vgm.fit(part, data, vgm.TrainConfig(epochs=1, **cfg), run_dir=tmp_path / "part", progress=False)
    again = FactorVAE(**kw)
    vgm.fit(again, data, vgm.TrainConfig(epochs=2, **cfg), run_dir=tmp_path / "part", resume=True, progress=False)
    assert_same_checkpoints(tmp_path / "whole", tmp_path / "part")


def assert_same_checkpoints(a, b) -> None:
    from vgm.checkpoint import read_safetensors
    ta, _ = read_safetensors(a / "checkpoint.safetensors")
    tb, _ = read_safetensors(b / "checkpoint.safetensors")
    assert any(k.startswith("optim1.") for k in ta)               # the auxiliary optimizer's state is there
    for k in ta:
        if k.startswith(("model.", "optim")):
            assert torch.equal(ta[k], tb[k]), k


# ---------------------------------------------------------------- DIP-VAE

def test_dip_penalty_is_zero_for_identity_covariance_and_the_formula_otherwise():
    torch.manual_seed(0)
    raw = torch.randn(64, 4, dtype=torch.float64)
    centred = raw - raw.mean(0)
    white = centred @ torch.linalg.inv(torch.linalg.cholesky(centred.T @ centred / 64)).T   # Cov = I exactly
    zero_var = torch.zeros_like(white)
    assert dip_penalty(dip_covariance(white, zero_var, "i"), 10.0, 100.0).item() == pytest.approx(0, abs=1e-10)
    # type ii adds the mean posterior variance: means of covariance I/2 plus variances 1/2 give I
    assert dip_penalty(dip_covariance(white / math.sqrt(2), zero_var + 0.5, "ii"), 10.0, 100.0).item() == \
        pytest.approx(0, abs=1e-10)
    # catches: the diagonal counted in the off-diagonal sum, sample (M − 1) instead of population covariance,
    # or the two weights swapped
    cov = torch.tensor(torch.cov(raw.T, correction=0).tolist(), dtype=torch.float64)
    want = 3.0 * sum(cov[i, j] ** 2 for i in range(4) for j in range(4) if i != j) + \
        5.0 * sum((cov[i, i] - 1) ** 2 for i in range(4))
    var = torch.rand(64, 4, dtype=torch.float64)
    assert dip_penalty(dip_covariance(raw, var * 0, "i"), 3.0, 5.0).item() == pytest.approx(want.item(), rel=1e-10)
    cov2 = cov + torch.diag(var.mean(0))
    want2 = 3.0 * ((cov2 ** 2).sum() - (cov2.diagonal() ** 2).sum()) + 5.0 * ((cov2.diagonal() - 1) ** 2).sum()
    assert dip_penalty(dip_covariance(raw, var, "ii"), 3.0, 5.0).item() == pytest.approx(want2.item(), rel=1e-10)


def test_dipvae_loss_carries_the_penalty_of_its_posterior_means():
    torch.manual_seed(0)
    m = DIPVAE(input_shape=(1, 8, 8), arch="mlp", hidden=(16,), latent_dim=3, dip_type="ii", lambda_od=2.0,
               lambda_d=4.0)
    x = torch.rand(10, 1, 8, 8).round()
    t = m.loss(x)
    q = m.encode(x).base_dist
    want = dip_penalty(dip_covariance(q.loc, q.scale ** 2, "ii"), 2.0, 4.0)
    assert torch.allclose(t["dip"], want.expand(10))
    assert torch.allclose(t["loss"], t["recon"] + t["kl"] + want)


# ---------------------------------------------------------------- CVAE

def small_cvae(**kw) -> CVAE:
    torch.manual_seed(0)
    return CVAE(input_shape=(1, 8, 8), hidden=(32,), latent_dim=3, **kw)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_cvae_label_changes_the_decoder_and_the_elbo_terms_follow_the_formula(arch):
    kw = {"input_shape": (1, 16, 16)} if arch == "conv" else {}
    m = small_cvae(arch=arch, **kw) if arch == "mlp" else CVAE(arch="conv", hidden=(32,), latent_dim=3, **kw)
    shape = m.config.input_shape
    x = torch.rand(5, *shape).round()
    y = torch.tensor([0, 3, 3, 7, 9])
    z = torch.randn(5, 3)
    m3, m4 = m.given(torch.full((5,), 3)), m.given(torch.full((5,), 4))
    # catches: the label left out of the decoder (or of the encoder)
    assert (m3.decode(z).mean - m4.decode(z).mean).abs().max() > 1e-3
    assert (m3.encode(x).mean - m4.encode(x).mean).abs().max() > 1e-3
    torch.manual_seed(5)
    t = m.loss(x, y)
    # by hand: the same ε, the Gaussian KL in closed form, the Bernoulli log-likelihood as −BCE
    torch.manual_seed(5)
    q = m.given(y).encode(x).base_dist
    zz = q.loc + q.scale * torch.randn_like(q.loc)
    onehot = torch.nn.functional.one_hot(y, 10).float()
    logits = m.decoder(torch.cat([zz, onehot], 1))
    recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (q.loc ** 2 + q.scale ** 2 - 1 - 2 * q.scale.log()).sum(1)
    assert torch.allclose(t["recon"], recon, atol=1e-4)
    assert torch.allclose(t["kl"], kl, atol=1e-5)
    assert torch.allclose(t["elbo"], -(recon + kl), atol=1e-4)


def test_cvae_samples_take_the_label_and_dsprites_labels_use_one_factor():
    m = small_cvae()
    torch.manual_seed(1)
    a = m.sample(4, label=2)
    torch.manual_seed(1)
    b = m.sample(4, label=2, temperature=1.0)
    torch.manual_seed(1)
    c = m.sample(4, label=6)
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-3
    d = CVAE(input_shape=(1, 8, 8), hidden=(8,), factor="scale", factor_names=("shape", "scale"),
             factor_sizes=(3, 6))
    assert d.n_classes == 6
    y = torch.tensor([[2, 5], [0, 1]])
    assert torch.equal(d.one_hot(y).argmax(1), torch.tensor([5, 1]))          # the scale column, not shape


def test_cvae_bad_labels_are_one_line():
    m = small_cvae()
    with pytest.raises(vgm.VgmError, match="label 10 is outside the 10 classes"):
        m.sample(2, label=10)
    with pytest.raises(vgm.VgmError, match="label -1 is outside"):
        m.loss(torch.zeros(2, 1, 8, 8), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="unknown factor"):
        CVAE(factor="colour", factor_names=("shape",), factor_sizes=(3,))


def test_cvae_cli_trains_samples_a_label_and_refuses_unlabelled_data(tmp_path):
    run = tmp_path / "c"
    base = [sys.executable, "-m", "vgm"]
    r = subprocess.run(base + ["train", "cvae", "--hidden", "16", "--latent-dim", "2", "--epochs", "1",
                               "--out", str(run)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(base + ["sample", str(run), "--label", "3", "-n", "4"], capture_output=True, text=True)
    assert r.returncode == 0 and (run / "samples.png").exists(), r.stderr
    r = subprocess.run(base + ["sample", str(run), "--label", "11"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == "vgm: error: label 11 is outside the 10 classes of this cvae (0..9)\n"
    r = subprocess.run(base + ["train", "cvae", "--data", "moons", "--likelihood", "gaussian", "--epochs", "1",
                               "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr       # (after the trainer's summary line)
    assert r.stderr.splitlines()[-1] == "vgm: error: cvae is conditioned on labels, and moons have none"


# ---------------------------------------------------------------- VQ-VAE

def small_vq(**kw) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(input_shape=(1, 8, 8), codebook_size=6, code_dim=3, width=8, prior_width=16, prior_layers=1,
                 **kw)


def test_vq_quantizes_to_the_nearest_code_and_the_straight_through_gradient_reaches_the_encoder():
    m = small_vq()
    z = torch.randn(2, 3, 2, 2)
    idx, zq = m.quantize(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    brute = torch.stack([((flat[i] - m.codebook) ** 2).sum(1).argmin() for i in range(len(flat))])
    assert torch.equal(idx.flatten(), brute)
    x = torch.rand(4, 1, 8, 8).round()
    m.train()
    t = m.loss(x)
    # catches: a missing straight-through (decoding z_q directly: the reconstruction loss never reaches the encoder)
    g = torch.autograd.grad(t["recon"].sum(), list(m.encoder.parameters()))
    assert all(gi.abs().sum() > 0 for gi in g)
    # the codebook term moves the codebook, not the encoder; the commitment term the encoder, not the codebook
    assert torch.autograd.grad(t["vq"].sum(), m.codebook)[0].abs().sum() > 0
    assert all(gi is None for gi in torch.autograd.grad(t["vq"].sum(), list(m.encoder.parameters()),
                                                          allow_unused=True))
    assert torch.autograd.grad(t["commit"].sum(), m.codebook, allow_unused=True)[0] is None
    # catches: the prior's NLL (aux_loss) leaking into the autoencoder
    assert all(gi is None for gi in torch.autograd.grad(t["aux_loss"].sum(), list(m.encoder.parameters()),
                                                          allow_unused=True))
    z_e = m.encoder(x)
    _, zq = m.quantize(z_e)
    assert torch.allclose(t["commit"], 0.25 * ((z_e - zq) ** 2).flatten(1).sum(1))


def test_ema_update_matches_a_hand_computation():
    count = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    total = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    code = torch.zeros(3, 2, dtype=torch.float64)
    z = torch.tensor([[2.0, 2.0], [4.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    idx = torch.tensor([0, 0, 1])
    ema_update(count, total, code, z, idx, decay=0.9)
    # N = 0.9 N + 0.1 n with n = (2, 1, 0); m = 0.9 m + 0.1 Σ z: code 0 gets (6, 2), code 1 (1, 3), code 2 none
    n_want = torch.tensor([0.9 + 0.2, 1.8 + 0.1, 0.45], dtype=torch.float64)
    m_want = torch.tensor([[0.9 + 0.6, 0.2], [0.1, 1.8 + 0.3], [0.9, 0.9]], dtype=torch.float64)
    mass = n_want.sum()
    smooth = (n_want + 1e-5) / (mass + 3e-5) * mass
    assert torch.allclose(count, n_want) and torch.allclose(total, m_want)
    assert torch.allclose(code, m_want / smooth[:, None])


def test_ema_model_updates_its_codebook_only_when_training():
    m = small_vq(ema=True)
    x = torch.rand(8, 1, 8, 8).round()
    m.train()
    m.loss(x)                                       # first step: the codebook is set from the batch's z_e
    before = m.codebook.clone()
    c0, t0 = m.ema_count.clone(), m.ema_total.clone()
    with torch.no_grad():
        z_e = m.encoder(x)
        idx, _ = m.quantize(z_e)
    t = m.loss(x)
    assert (t["vq"] == 0).all()
    ema_update(c0, t0, before, z_e.permute(0, 2, 3, 1).reshape(-1, 3), idx.flatten(), 0.99)
    assert torch.allclose(m.codebook, before, atol=1e-6)
    m.eval()
    frozen = m.codebook.clone()
    m.loss(x)
    assert torch.equal(m.codebook, frozen)


def test_codebook_stats_and_the_prior_nll_are_exact():
    perplexity, dead = codebook_stats(torch.tensor([5, 5, 0, 0]))
    assert perplexity == pytest.approx(2.0) and dead == 2
    m = small_vq()
    codes = torch.randint(6, (3, 4))
    logits = m.code_prior.logits(codes)
    # catches: the prior scoring c_t with logits that saw c_t (no shift): the first position must not depend on c
    other = codes.clone()
    other[:, 0] = (codes[:, 0] + 1) % 6
    assert torch.allclose(m.code_prior.logits(other)[:, 0], logits[:, 0])
    assert not torch.allclose(m.code_prior.logits(other)[:, 1], logits[:, 1])
    want = -torch.log_softmax(logits, -1).gather(2, codes[..., None]).squeeze(2).sum(1)
    assert torch.allclose(m.code_prior.nll(codes), want)
    # the chain rule: Σ over all 6^2 grids of a 2-position prior's probabilities is 1
    two = VQVAE(input_shape=(1, 4, 8), codebook_size=6, code_dim=2, width=4, downsample=2, prior_width=16,
                prior_layers=1)
    grids = torch.cartesian_prod(torch.arange(6), torch.arange(6))
    assert torch.exp(-two.code_prior.nll(grids)).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_vqvae_resumes_exactly_and_evaluates(tmp_path):
    data = vgm.load_data("digits")
    data.train = data.train[:256]
    cfg = dict(batch_size=64, seed=2)
    kw = dict(input_shape=(1, 8, 8), codebook_size=8, code_dim=3, width=8, prior_width=16, prior_layers=1,
              ema=True, likelihood="gaussian")
    torch.manual_seed(0)
    whole = VQVAE(**kw)
    vgm.fit(whole, data, vgm.TrainConfig(epochs=2, **cfg), run_dir=tmp_path / "whole", progress=False)
    torch.manual_seed(0)
    part = VQVAE(**kw)
    vgm.fit(part, data, vgm.TrainConfig(epochs=1, **cfg), run_dir=tmp_path / "part", progress=False)
    again = VQVAE(**kw)
    vgm.fit(again, data, vgm.TrainConfig(epochs=2, **cfg), run_dir=tmp_path / "part", resume=True, progress=False)
    assert_same_checkpoints(tmp_path / "whole", tmp_path / "part")     # EMA buffers are in "model."
    res = vgm.evaluate(whole, data.test, 0, 100)
    codes = whole.codes(data.test)
    counts = torch.bincount(codes.flatten(), minlength=8)
    assert res["dead_codes"] == int((counts == 0).sum())
    assert res["mse"] == pytest.approx(((whole.reconstruct(data.test) - data.test) ** 2).mean().item(), rel=1e-5)
    assert res["kl"] == pytest.approx(whole.code_prior.nll(codes).mean().item(), rel=1e-5)
    assert whole.sample(3).shape == (3, 1, 8, 8)


def test_codebook_of_one_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vgm", "train", "vqvae", "--codebook-size", "1", "--out",
                        str(tmp_path / "v")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == ("vgm: error: bad model option: codebook_size must be >= 2 (one code "
                                              "carries no information), got 1\n")
    assert not (tmp_path / "v").exists()
