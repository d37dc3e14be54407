"""β-VAE, capacity annealing and β-TCVAE: the standard architecture, losses against their formulas, the step
counter across save/load and --resume, traversals, `vgm metrics`, and the beta-sweep experiment (quick)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

import vgm
from vgm.models.betavae import BetaVAE
from vgm.models.tcvae import TCVAE, decomposition
from vgm.tools.traversal import kl_per_dim, traversal

from conftest import run_cli


def layers(module, kind):
    return [m for m in module.modules() if isinstance(m, kind)]


def test_standard_architecture_64_and_32():
    m = BetaVAE()
    convs = layers(m.encoder, nn.Conv2d)
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert [(l.in_features, l.out_features) for l in layers(m.encoder, nn.Linear)] == [(1024, 256), (256, 20)]
    assert [(l.in_features, l.out_features) for l in layers(m.decoder, nn.Linear)] == [(10, 256), (256, 1024)]
    assert [c.out_channels for c in layers(m.decoder, nn.ConvTranspose2d)] == [64, 32, 32, 1]
    assert m.config.likelihood == "bernoulli" and m.config.latent_dim == 10
    x = torch.zeros(3, 1, 64, 64)
    assert m.decode(m.encode(x).rsample()).mean.shape == x.shape
    small = TCVAE(input_shape=(1, 32, 32))
    assert [c.out_channels for c in layers(small.encoder, nn.Conv2d)] == [32, 32, 64]
    assert small.decode(torch.zeros(2, 10)).mean.shape == (2, 1, 32, 32)


def test_beta_loss_is_recon_plus_beta_kl():
    torch.manual_seed(0)
    m = BetaVAE(input_shape=(1, 32, 32), beta=4.0)
    x = (torch.rand(5, 1, 32, 32) < 0.1).float()
    torch.manual_seed(1)
    t = m.loss(x)
    assert torch.allclose(t["loss"], t["recon"] + 4.0 * t["kl"])
    assert torch.allclose(t["elbo"], -(t["recon"] + t["kl"]))


def test_capacity_loss_schedule_and_gradient():
    torch.manual_seed(0)
    m = BetaVAE(input_shape=(1, 32, 32), capacity=20.0, capacity_steps=4, gamma=100.0).train()
    x = (torch.rand(6, 1, 32, 32) < 0.1).float()
    caps = []
    for _ in range(6):
        caps.append(m.current_capacity())
        torch.manual_seed(2)
        m.loss(x)
    assert caps == [0.0, 5.0, 10.0, 15.0, 20.0, 20.0] and int(m.step) == 6
    m.eval()
    m.loss(x)
    assert int(m.step) == 6                               # evaluation does not advance the schedule
    m.train()
    m.step.fill_(2)                                        # C = 10
    torch.manual_seed(3)
    t = m.loss(x)
    batch = t["recon"].mean() + 100.0 * (t["kl"].mean() - 10.0).abs()   # Burgess et al.'s batch loss
    assert torch.allclose(t["loss"].mean(), batch)
    g1 = torch.autograd.grad(t["loss"].mean(), m.encoder.head[0].weight, retain_graph=True)[0]
    g2 = torch.autograd.grad(batch, m.encoder.head[0].weight)[0]
    assert torch.allclose(g1, g2, atol=1e-6)


def test_step_counter_is_saved(tmp_path):
    m = BetaVAE(input_shape=(1, 32, 32), capacity=5.0)
    m.step.fill_(123)
    m.save(tmp_path)
    assert int(vgm.load(tmp_path).step) == 123


class PointPosteriors:
    """q(z|x) = N(x, s² I): the examples are their own posterior means; p(z) = N(0, I). Only encode and prior,
    as vgm.models.tcvae.decomposition needs."""

    def __init__(self, s: float, d: int):
        self.s = s
        self.prior = Independent(Normal(torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)), 1)

    def encode(self, x):
        return Independent(Normal(x, self.s * torch.ones_like(x)), 1)


def tcvae(d: int, dataset_size: int) -> TCVAE:
    """A tiny β-TCVAE whose minibatch estimator (config, prior) is called on hand-made posteriors."""
    return TCVAE(input_shape=(1, 4, 4), latent_dim=d, arch="mlp", hidden=(4,), dataset_size=dataset_size).double()


def separated(n: int, d: int, s: float = 0.01) -> torch.Tensor:
    """n posterior means 100 s apart in every dimension: q(z_i) = q(z_i|x_i)/N and q(z_ik) = q(z_ik|x_ik)/N."""
    g = torch.Generator().manual_seed(0)
    return torch.stack([torch.randperm(n, generator=g) for _ in range(d)], 1).double()


# A correlated Gaussian aggregate posterior: means μ_n ~ N(0, Σ − s²I), posteriors N(μ_n, s²I), so that
# q(z) → N(0, Σ) as N grows, where (R the correlation matrix of Σ)
#     TC = −½ log det R,   dwkl = ½ Σ_k (Σ_kk − 1 − log Σ_kk),   MI = H(q(z)) − H(q(z|x)) = ½ (log det Σ − d log s²).
CORR = torch.tensor([[1.0, 0.7, 0.3], [0.7, 1.0, 0.5], [0.3, 0.5, 1.0]], dtype=torch.float64)
SD = torch.tensor([1.5, 0.8, 1.0], dtype=torch.float64)
COV = SD[:, None] * CORR * SD[None]
S = 0.3


def gaussian_closed_form() -> dict[str, float]:
    return {"tc": -0.5 * torch.logdet(CORR).item(),
            "dwkl": 0.5 * (SD ** 2 - 1 - torch.log(SD ** 2)).sum().item(),
            "mi": 0.5 * (torch.logdet(COV).item() - 3 * math.log(S ** 2))}


def gaussian_means(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(COV - S ** 2 * torch.eye(3)).T


def assert_near_closed_form(terms: dict[str, torch.Tensor], exact: dict[str, float]) -> None:
    for k, v in exact.items():
        se = terms[k].std().item() / math.sqrt(len(terms[k]))
        assert abs(terms[k].mean().item() - v) < 4 * se + 0.02, (k, terms[k].mean().item(), v, se)


@pytest.mark.parametrize("m", [1, 7, 64])
def test_tcvae_minibatch_estimator_on_separated_posteriors(m):
    """Posteriors that do not overlap make q(z_i) = q(z_i|x_i)/N exactly, so MI = log N and TC = (d − 1) log N
    for any batch size M: Chen et al.'s log(N·M) constant gives log(N·M) and (d − 1) log(N·M); dropping the
    cross terms gives 0; treating the batch as the data set gives log M."""
    n, d = 1000, 4
    mu = separated(n, d)[:m]
    q = Independent(Normal(mu, 0.01 * torch.ones_like(mu)), 1)
    torch.manual_seed(0)
    z = q.sample()
    t = tcvae(d, n).decomposition(q, z)
    assert torch.allclose(t["mi"], torch.full((m,), math.log(n), dtype=torch.float64), atol=1e-9)
    assert torch.allclose(t["tc"], torch.full((m,), (d - 1) * math.log(n), dtype=torch.float64), atol=1e-9)
    assert torch.allclose(t["mi"] + t["tc"] + t["dwkl"], q.log_prob(z) - Normal(0.0, 1.0).log_prob(z).sum(-1))
    # dataset_size 0 (a model not built from data): the batch is the whole data set
    alone = tcvae(d, 0).decomposition(q, z)
    assert torch.allclose(alone["mi"], torch.full((m,), math.log(m), dtype=torch.float64), atol=1e-9)


def test_tcvae_minibatch_estimator_against_a_gaussian_closed_form():
    """Large N and M: the stratified minibatch estimate of q(z) approaches the mixture N(0, Σ)."""
    m = 2000
    mu = gaussian_means(m, seed=1)
    q = Independent(Normal(mu, S * torch.ones_like(mu)), 1)
    torch.manual_seed(2)
    terms = tcvae(3, 10 ** 6).decomposition(q, q.sample())
    assert_near_closed_form(terms, gaussian_closed_form())


def test_tcvae_full_pool_decomposition_against_the_definition_and_a_closed_form():
    n = 2000
    pool = gaussian_means(n, seed=3)
    model = PointPosteriors(S, 3)
    torch.manual_seed(4)
    terms = decomposition(model, pool, pool, batch_size=300, max_elements=300 * 3 * 450)   # chunks of 450
    assert_near_closed_form(terms, gaussian_closed_form())
    # the same draws, by the definition: log q(z) = log (1/N) Σ_n N(z; μ_n, s²I), marginals likewise
    torch.manual_seed(4)
    z = torch.cat([model.encode(pool[i:i + 300]).sample() for i in range(0, n, 300)])
    pairs = Normal(pool[None], S).log_prob(z[:, None])                               # (n, n, d)
    log_qz = torch.logsumexp(pairs.sum(-1), 1) - math.log(n)
    log_marg = torch.logsumexp(pairs, 1) - math.log(n)
    log_qzx, log_pz = model.encode(pool).log_prob(z), model.prior.log_prob(z)
    torch.testing.assert_close(terms["mi"], log_qzx - log_qz)
    torch.testing.assert_close(terms["tc"], log_qz - log_marg.sum(-1))
    torch.testing.assert_close(terms["dwkl"], log_marg.sum(-1) - log_pz)
    # held-out examples with posteriors far from the pool's: q(z|x) against the pool's mixture, not their own
    far = separated(50, 3)[:5] + 1000.0
    assert (decomposition(model, far, pool)["mi"] > 1000).all()


def test_tcvae_minibatch_and_full_pool_estimates_agree_when_the_batch_is_the_pool():
    """On a real β-TCVAE: the training estimator with M = N is the exact mixture the evaluation uses."""
    torch.manual_seed(0)
    x = (torch.rand(40, 1, 32, 32) < 0.1).float()
    m = TCVAE(input_shape=(1, 32, 32), dataset_size=40).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        q = m.encode(x)
        batch = m.decomposition(q, q.sample())
    torch.manual_seed(5)
    full = decomposition(m, x, x, batch_size=64)
    for k in ("mi", "tc", "dwkl"):
        torch.testing.assert_close(full[k], batch[k], atol=1e-4, rtol=1e-5)
    t = m.loss(x)
    assert torch.allclose(t["loss"], t["recon"] + t["mi"] + 6.0 * t["tc"] + t["dwkl"])
    with pytest.raises(vgm.VgmError):
        decomposition(m, x[:0], x)


def test_traversal_rows_move_one_dimension():
    torch.manual_seed(0)
    m = BetaVAE(input_shape=(1, 32, 32)).eval()
    x = (torch.rand(20, 1, 32, 32) < 0.1).float()
    imgs = traversal(m, x[0], steps=5, span=3.0)
    assert imgs.shape == (10, 5, 1, 32, 32)
    mu = m.encode(x[:1]).mean[0]
    z = mu.clone()
    z[3] = 1.5                                             # row 3, the 4th of linspace(−3, 3, 5)
    assert torch.allclose(imgs[3, 3], m.decode(z).mean, atol=1e-6)
    kl = kl_per_dim(m, x)
    with torch.no_grad():
        total = torch.distributions.kl_divergence(m.encode(x), m.prior).mean().item()
    assert kl.shape == (10,) and kl.sum() == pytest.approx(total, rel=1e-5)


def test_train_resume_metrics_cli(tmp_path):
    env = {"VGM_DSPRITES_SIZE": "400"}
    common = ["--data", "dsprites32", "--capacity", "10", "--capacity-steps", "20", "--batch-size", "64",
              "--quiet", "--seed", "3"]
    full, part = tmp_path / "full", tmp_path / "part"
    r = run_cli("train", "betavae", *common, "--epochs", "2", "--out", full, env=env)
    assert r.returncode == 0, r.stderr
    assert run_cli("train", "betavae", *common, "--epochs", "1", "--out", part, env=env).returncode == 0
    r = run_cli("train", "betavae", "--epochs", "2", "--resume", "--out", part, env=env)
    assert r.returncode == 0, r.stderr
    a, b = (vgm.checkpoint.read_safetensors(p / "checkpoint.safetensors")[0] for p in (full, part))
    assert int(a["model.step"]) == 2 * math.ceil(324 / 64)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "optim.")))
    r = run_cli("metrics", full, "--json", "--n-codes", "300", "--n-train", "20", "--n-eval", "10",
                "--batch-size", "16", "--n-variance", "300", "--dci-model", "forest", env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert 0 <= res["mig"] <= 1 and 0 <= res["sap"] <= 1 and 0 <= res["dci"]["disentanglement"] <= 1
    assert 0 <= res["beta_vae_score"]["eval_accuracy"] <= 1 and 0 <= res["factor_vae_score"]["eval_accuracy"] <= 1
    r = run_cli("metrics", full, "--n-train", "0", env=env)
    assert r.returncode == 2 and r.stderr.startswith("vgm: error:") and len(r.stderr.splitlines()) == 1


def test_metrics_cli_refuses_other_data(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text(json.dumps({"kind": "vae", "data": {"data": "digits"}}))
    r = run_cli("metrics", tmp_path / "d")               # not a whole run configuration: refused in one line
    assert r.returncode == 2 and "not a vgm run configuration" in r.stderr and len(r.stderr.splitlines()) == 1


def test_beta_sweep_quick(tmp_path):
    from vgm.experiments.beta_sweep import run, verdict_of
    res = run(tmp_path, quick=True, seed=0, data_dir=None)
    assert [r["beta"] for r in res["table"]] == [1, 2, 4, 8, 16, 6.0, 1.0, 1.0]
    assert [r["model"] for r in res["table"][5:]] == ["tcvae", "factorvae", "dipvae"]
    assert all(0 <= r["mig"] <= 1 and r["test_kl"] > 0 for r in res["table"])
    # the verdict, recomputed from the table: Spearman ρ(β, recon) ≥ 0.9 and the best MIG at β ≥ 4 beats β = 1 by 0.05
    sweep = [r for r in res["table"] if r["model"] == "betavae"]
    ranks = lambda v: np.argsort(np.argsort(v)).astype(float)
    rho = float(np.corrcoef(ranks([r["beta"] for r in sweep]), ranks([r["test_recon"] for r in sweep]))[0, 1])
    mig1 = next(r["mig"] for r in sweep if r["beta"] == 1)
    held = rho >= 0.9 - 1e-9 and max(r["mig"] for r in sweep if r["beta"] >= 4) >= mig1 + 0.05
    assert res["spearman_beta_recon"] == pytest.approx(rho)
    assert res["held"] is held and res["verdict"].startswith("held" if held else "did not hold")
    made = lambda recon, migs: [{"model": "betavae", "beta": b, "test_recon": r, "mig": m}
                                for b, r, m in zip((1, 2, 4, 8, 16), recon, migs)]
    rising, flat = (1, 2, 3, 4, 5), (1, 3, 2, 5, 4)                    # Spearman 1.0 and 0.8
    assert verdict_of(made(rising, (0.1, 0.1, 0.1, 0.16, 0.1)))[1] is True
    assert verdict_of(made(rising, (0.1, 0.3, 0.14, 0.1, 0.1)))[1] is False      # MIG +0.04 only (β = 2 not counted)
    assert verdict_of(made(flat, (0.1, 0.1, 0.1, 0.16, 0.1)))[1] is False
    for f in res["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["name"] == "beta-sweep"
