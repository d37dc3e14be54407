"""β-VAE, capacity annealing and β-TCVAE: the standard architecture, losses against their formulas, the step
counter across save/load and --resume, traversals, `vgm metrics`, and the beta-sweep experiment (quick)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import vgm
from vgm.models.betavae import BetaVAE
from vgm.models.tcvae import TCVAE
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


def test_tcvae_decomposition():
    torch.manual_seed(0)
    m = TCVAE(input_shape=(1, 32, 32), dataset_size=1000)
    x = (torch.rand(8, 1, 32, 32) < 0.1).float()
    q = m.encode(x)
    z = q.rsample()
    d = m.decomposition(q, z)
    # the three parts always sum to the one-sample KL estimate log q(z|x) − log p(z)
    assert torch.allclose(d["mi"] + d["tc"] + d["dwkl"], q.log_prob(z) - m.prior.log_prob(z), atol=1e-4)
    # one example standing for the whole data (N = M = 1): q(z) = q(z|x), which factorises: MI = TC = 0
    one = TCVAE(input_shape=(1, 32, 32), dataset_size=1)
    q1 = one.encode(x[:1])
    z1 = q1.rsample()
    d1 = one.decomposition(q1, z1)
    assert abs(d1["mi"].item()) < 1e-4 and abs(d1["tc"].item()) < 1e-4
    # MWS by hand for dimension 0 of example 0
    base = q.base_dist
    lp = torch.distributions.Normal(base.loc[:, 0], base.scale[:, 0]).log_prob(z[0, 0])
    by_hand = torch.logsumexp(lp, 0) - math.log(1000 * 8)
    pairs = torch.distributions.Normal(base.loc[None], base.scale[None]).log_prob(z[:, None])
    assert torch.allclose(torch.logsumexp(pairs, 1)[0, 0] - math.log(8000), by_hand)
    t = m.loss(x)
    assert torch.allclose(t["loss"], t["recon"] + t["mi"] + 6.0 * t["tc"] + t["dwkl"])


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
    r = run_cli("metrics", tmp_path / "d")
    assert r.returncode == 2 and "dsprites" in r.stderr and len(r.stderr.splitlines()) == 1


def test_beta_sweep_quick(tmp_path):
    from vgm.experiments.beta_sweep import run
    res = run(tmp_path, quick=True, seed=0, data_dir=None)
    assert [r["beta"] for r in res["table"]] == [1, 2, 4, 8, 16, 6.0]
    assert res["held"] in (True, False) and "Spearman" in res["verdict"]
    for f in res["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["name"] == "beta-sweep"
