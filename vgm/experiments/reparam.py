"""reparam: "sampling blocks gradients; the reparameterization trick fixes it".

Two unbiased estimators of ∇_{μ,σ} E_{z~N(μ,σ²)}[f(z)] from S samples z_s:
    reparameterised:  (1/S) Σ_s ∇_{μ,σ} f(μ + σ ε_s),             ε_s ~ N(0, I)
    score function:   (1/S) Σ_s f(z_s) ∇_{μ,σ} log q(z_s; μ, σ)    (REINFORCE; f needs no gradient)
    score + baseline: (1/S) Σ_s (f(z_s) − b_s) ∇ log q(z_s),  b_s = mean of the other S − 1 values (leave-one-out)
For f(z) = ‖z − c‖² the exact gradient is (2(μ − c), 2σ). Then a VAE is trained with each estimator for the
encoder's gradient of E_q[log p(x|z)] (the KL term keeps its closed form in all three).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.distributions import Normal, kl_divergence

from ..data import Splits
from ..registry import register_experiment
from ..train import evaluate_terms
from ..models.vae import VAE
from . import command_line, write_results
from .common import batch_size, is_small, datasets, pyplot, save_figure, train, vae_kw

CLAIM = ("Sampling blocks gradients; the reparameterization trick fixes it: orders of magnitude less variance "
         "than the score-function (REINFORCE) estimator.")
ESTIMATORS = ("reparameterised", "score function", "score + baseline")


def gradient_estimates(estimator: str, mu: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor, samples: int,
                       repeats: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`repeats` independent S-sample estimates of ∇_{μ,σ} E[‖z − c‖²], each of shape (repeats, D).

    Every repeat gets its own copy of (μ, σ), so one backward pass yields all the estimates at once.
    """
    m = mu.expand(repeats, -1).clone().requires_grad_(True)
    s = sigma.expand(repeats, -1).clone().requires_grad_(True)
    q = Normal(m, s)
    f = lambda z: ((z - c) ** 2).sum(-1)                    # (S, R)
    if estimator == "reparameterised":
        surrogate = f(q.rsample((samples,))).mean(0)
    else:
        z = q.sample((samples,))
        fz = f(z)
        if estimator == "score + baseline":
            fz = fz - (fz.sum(0, keepdim=True) - fz) / (samples - 1)
        surrogate = (fz * q.log_prob(z).sum(-1)).mean(0)
    gm, gs = torch.autograd.grad(surrogate.sum(), (m, s))
    return gm, gs


class ScoreFunctionVAE(VAE):
    """A VAE whose encoder learns from the score-function estimator of ∇ E_q[log p(x|z)] (z not reparameterised).

    surrogate = −(1/S) Σ_s [log p(x|z_s) + (log p(x|z_s) − b_s)⊥ · log q(z_s|x)] + KL(q ‖ p),  z_s ~ q (no path)
    where ⊥ stops gradients and b_s is the leave-one-out mean (or 0 when baseline=False). Its gradient is the
    decoder's usual one plus REINFORCE for the encoder; "elbo" is reported exactly as for the VAE.
    """

    def __init__(self, config=None, samples: int = 1, baseline: bool = False, **kwargs):
        super().__init__(config, **kwargs)
        if baseline and samples < 2:
            raise ValueError("a leave-one-out baseline needs samples >= 2")
        self.samples, self.baseline = samples, baseline

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        q = self.encode(x)
        z = q.sample((self.samples,))
        log_px = self.decode(z).log_prob(x)                   # (S, B): gradient to the decoder only
        reward = log_px.detach()
        if self.baseline:
            reward = reward - (reward.sum(0, keepdim=True) - reward) / (self.samples - 1)
        kl = kl_divergence(q, self.prior)
        recon = -log_px.mean(0)
        surrogate = recon - (reward * q.log_prob(z)).mean(0) + kl
        return {"recon": recon, "kl": kl, "elbo": -(recon + kl), "loss": surrogate}


def variance_study(sample_sizes, repeats: int, dim: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    mu, sigma = torch.randn(dim, generator=g) * 0.5, torch.rand(dim, generator=g) + 0.5
    c = torch.ones(dim)
    exact_mu = 2 * (mu - c)           # the analytic ∂E f/∂μ that the bias column is measured against
    rows = []
    torch.manual_seed(seed)
    for est in ESTIMATORS:
        for S in sample_sizes:
            if est == "score + baseline" and S < 2:
                continue
            gm, gs = gradient_estimates(est, mu, sigma, c, S, repeats)
            se_mu = gm.std(0) / repeats ** 0.5
            rows.append({"part": "estimator", "estimator": est, "samples": S,
                         "var_grad_mu": gm.var(0).sum().item(), "var_grad_sigma": gs.var(0).sum().item(),
                         "max_bias_in_se": ((gm.mean(0) - exact_mu).abs() / se_mu).max().item()})
    return rows


@register_experiment("reparam", data="images")
def run(out: Path, quick: bool, seed: int, data_dir: str | None, user_data: Splits | None = None) -> dict:
    plt = pyplot()
    sizes = (1, 4, 16, 64, 256) if quick else (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    rows = variance_study(sizes, repeats=500 if quick else 2000, dim=10, seed=seed)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, what in ((axes[0], "var_grad_mu", "∂/∂μ"), (axes[1], "var_grad_sigma", "∂/∂σ")):
        for est, mk in zip(ESTIMATORS, ("o-", "s-", "^--")):
            rs = [r for r in rows if r["estimator"] == est]
            ax.plot([r["samples"] for r in rs], [r[key] for r in rs], mk, label=est)
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_xlabel("samples S per estimate"), ax.set_ylabel("variance (summed over 10 coordinates)")
        ax.set_title(f"{what} E[‖z − c‖²], z ~ N(μ, diag σ²)"), ax.legend()
    figures = [save_figure(fig, out / "estimator_variance.png")]
    var = {(r["estimator"], r["samples"]): r for r in rows}
    ratio_mu = var["score function", 1]["var_grad_mu"] / var["reparameterised", 1]["var_grad_mu"]
    ratio_sigma = var["score function", 1]["var_grad_sigma"] / var["reparameterised", 1]["var_grad_sigma"]

    finals = []
    for name, data in datasets(data_dir, data=user_data):
        small = is_small(data)
        epochs = (8 if quick else 60) if small else (2 if quick else 10)
        kw = dict(latent_dim=8, hidden=(256, 128) if small else (512, 256), batch_size=batch_size(small), **vae_kw(name))
        curves = {}
        for label, cls, extra in (("reparameterised (1 sample)", VAE, {}),
                                  ("score function (1 sample)", ScoreFunctionVAE, {}),
                                  ("score + leave-one-out baseline (4 samples)", ScoreFunctionVAE,
                                   {"samples": 4, "baseline": True})):
            model, hist = train(lambda **k: cls(**k, **extra), data, epochs, seed, **kw)
            curves[label] = [h["val"]["elbo"] for h in hist]
            torch.manual_seed(seed)
            test = evaluate_terms(model, data.test)
            rows.append({"part": "VAE training", "data": name, "estimator": label, "epochs": epochs,
                         "test_elbo": test["elbo"], "test_kl": test["kl"], "best_val_elbo": max(curves[label])})
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for (label, c), mk in zip(curves.items(), ("o-", "s-", "^--")):
            ax.plot(range(1, len(c) + 1), c, mk, markersize=3, label=label)
        ax.set_xlabel("epoch"), ax.set_ylabel("validation ELBO (nats per image)")
        ax.set_title(f"{name}: VAE trained with each gradient estimator"), ax.legend()
        figures.append(save_figure(fig, out / f"vae_elbo_{name}.png"))
        finals.append((name, rows[-3]["test_elbo"], rows[-2]["test_elbo"], rows[-1]["test_elbo"]))
    held = ratio_mu > 10 and ratio_sigma > 10 and all(r > s for _, r, s, _ in finals)
    verdict = (f"{'Held' if held else 'Did not hold'} — with one sample the score-function estimator's variance is "
               f"{ratio_mu:.0f}x (∂μ) and {ratio_sigma:.0f}x (∂σ) the reparameterised one's; "
               + "; ".join(f"{name} VAE test ELBO {r:.1f} (reparameterised) vs {s:.1f} (score function) and "
                           f"{b:.1f} (score + baseline)" for name, r, s, b in finals))
    return write_results(
        out, name="reparam", title="The reparameterization trick: gradient variance", claim=CLAIM,
        command=command_line("reparam", quick, seed, data_dir, user_data), table=rows, figures=figures, verdict=verdict,
        held=held,
        notes="Estimator rows: variance over independent repeats of each S-sample estimate, summed over the 10 "
              "coordinates, for f(z) = ‖z − c‖² (exact gradient (2(μ − c), 2σ)); max_bias_in_se is the largest "
              "|mean − exact| in standard errors (all three are unbiased, so it stays around 3 or below). VAE "
              "rows: the same VAE (Gaussian p(x|z) with σ = 0.1 on digits, Bernoulli on MNIST) trained with each "
              "estimator for the encoder; the "
              "KL term is closed-form in all three, the decoder's gradient is the usual one. The baseline variant "
              "is a control (4 samples per image, leave-one-out mean as baseline), not part of the claim.")
