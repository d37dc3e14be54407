"""elbo-gap: "the ELBO approximates the intractable posterior".

    log p(x) − ELBO(x) = KL(q(z|x) ‖ p(z|x)) ≥ 0,    ELBO = L_1 ≤ L_K ≤ log p(x),    L_K → log p(x) as K → ∞
where L_K = E[log (1/K) Σ_k p(x, z_k)/q(z_k|x)] is the importance-weighted bound (Burda et al., 2016). On a trained
VAE log p(x) is intractable and L_K for K up to 5000 is the best estimate; on probabilistic PCA (a linear-Gaussian
model, fitted in closed form by scikit-learn's PCA) log p(x) and the posterior are exact, and a mean-field q(z|x)
has a gap we know in closed form — the reference against which the estimates are checked.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from sklearn.decomposition import PCA
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from ..data import Splits
from ..registry import register_experiment
from ..models.vae import VAE
from . import command_line, write_results
from .common import VAE_KW, batch_size, is_small, datasets, pyplot, save_figure, train

CLAIM = "The ELBO approximates the intractable posterior: log p(x) − ELBO = KL(q(z|x) ‖ p(z|x))."


class PPCA:
    """x = W z + b + ε, z ~ N(0, I), ε ~ N(0, σ² I) (Tipping & Bishop's maximum-likelihood fit, from sklearn's PCA).

    W is rotated by a random orthogonal matrix — p(x) is unchanged, but the exact posterior p(z|x) is then
    correlated, so the mean-field q(z|x) used as encoder (exact mean, variances 1/Λ_jj of the posterior precision
    Λ: the best factorised Gaussian) leaves a gap KL(q ‖ p(z|x)) > 0 known in closed form.
    Implements the interface vgm.elbo / vgm.log_px use: encode, decode, prior.
    """

    def __init__(self, x: torch.Tensor, k: int, seed: int = 0):
        self.shape = tuple(x.shape[1:])
        flat = x.flatten(1).double().numpy()
        pca = PCA(n_components=k).fit(flat)
        self.pca = pca
        s2 = float(pca.noise_variance_)
        w = torch.as_tensor(pca.components_.T * (pca.explained_variance_ - s2) ** 0.5)      # (D, k)
        rot, _ = torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(seed), dtype=w.dtype))
        self.w, self.b, self.sigma = (w @ rot).float(), torch.as_tensor(pca.mean_).float(), s2 ** 0.5
        prec = (self.w.T @ self.w / s2 + torch.eye(k)).double()          # posterior precision Λ
        self.post_cov = torch.linalg.inv(prec).float()
        self.q_sd = prec.diagonal().rsqrt().float()
        self.k = k

    @property
    def prior(self):
        return Independent(Normal(torch.zeros(self.k), torch.ones(self.k)), 1)

    def posterior(self, x):
        mean = (x.flatten(1) - self.b) @ self.w @ self.post_cov / self.sigma ** 2
        return MultivariateNormal(mean, self.post_cov)

    def encode(self, x):
        return Independent(Normal(self.posterior(x).mean, self.q_sd.expand(x.shape[0], -1)), 1)

    def decode(self, z):
        mean = (z @ self.w.T + self.b).reshape(*z.shape[:-1], *self.shape)
        return Independent(Normal(mean, self.sigma), len(self.shape))

    def log_px(self, x) -> torch.Tensor:
        cov = self.w @ self.w.T + self.sigma ** 2 * torch.eye(self.w.shape[0])
        return MultivariateNormal(self.b, cov).log_prob(x.flatten(1))

    def exact_gap(self, x) -> torch.Tensor:
        q = self.encode(x)
        return kl_divergence(MultivariateNormal(q.mean, torch.diag_embed(q.variance)), self.posterior(x))


@torch.no_grad()
def log_weights(model, x: torch.Tensor, k: int, chunk: int = 250) -> torch.Tensor:
    """(k, N) log importance weights log p(x, z) − log q(z|x), z ~ q(z|x), drawn in chunks of samples."""
    q, prior = model.encode(x), model.prior
    out = []
    for s in range(0, k, chunk):
        z = q.sample((min(chunk, k - s),))
        out.append(model.decode(z).log_prob(x) + prior.log_prob(z) - q.log_prob(z))
    return torch.cat(out)


def bounds(log_w: torch.Tensor, ks) -> dict[int, tuple[float, float]]:
    """L_K for each K from one pool of weights: the pool is cut into ⌊k_max/K⌋ disjoint groups of K, so every
    estimate is unbiased and small K get many groups. Returns K -> (mean over examples, its Monte Carlo standard
    error, None where there is a single group)."""
    out = {}
    for k in ks:
        g = log_w.shape[0] // k
        lk = torch.logsumexp(log_w[:g * k].reshape(g, k, -1), 1) - math.log(k)     # (g, N)
        n = lk.shape[1]
        se = (lk.var(0).sum() / g).sqrt().item() / n if g > 1 else None
        out[k] = (lk.mean().item(), se)
    return out


@register_experiment("elbo-gap", data="images")
def run(out: Path, quick: bool, seed: int, data_dir: str | None, user_data: Splits | None = None) -> dict:
    plt = pyplot()
    rows, figures, summary = [], [], []
    for name, data in datasets(data_dir, data=user_data):
        small = is_small(data)
        ks = (1, 10, 100, 1000) if quick else (1, 2, 5, 10, 50, 100, 500, 1000, 5000)
        n_eval = (100 if quick else len(data.test)) if small else (50 if quick else 100)
        epochs = (20 if quick else 100) if small else (3 if quick else 20)
        latent = 8 if small else 16
        vae, _ = train(VAE, data, epochs, seed, latent_dim=latent, hidden=(256, 128) if small else (512, 256),
                       batch_size=batch_size(small), **VAE_KW)
        ppca = PPCA(torch.cat([data.train, data.val]), latent, seed)
        x = data.test[:n_eval]
        torch.manual_seed(seed)
        res = {"VAE": bounds(log_weights(vae, x, ks[-1]), ks), "PPCA": bounds(log_weights(ppca, x, ks[-1]), ks)}
        exact = ppca.log_px(x).mean().item()
        gap = ppca.exact_gap(x).mean().item()
        for model, b in res.items():
            for k in ks:
                rows.append({"data": name, "model": model, "K": k, "L_K": b[k][0], "mc_std_err": b[k][1],
                             "L_K_minus_ELBO": b[k][0] - b[1][0],
                             "exact_log_px": exact if model == "PPCA" else None,
                             "exact_gap_KL_q_posterior": gap if model == "PPCA" else None})
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for ax, model in zip(axes, res):
            b = res[model]
            ax.plot(ks, [b[k][0] for k in ks], "o-", label="L_K (importance-weighted bound)")
            ax.axhline(b[1][0], color="C1", ls="--", label="ELBO = L_1")
            if model == "PPCA":
                ax.axhline(exact, color="k", lw=1.5, label="exact log p(x)")
                ax.axhline(exact - gap, color="C2", ls=":", lw=2, label="exact log p(x) − KL(q ‖ p(z|x))")
            ax.set_xscale("log"), ax.set_xlabel("K (importance samples)"), ax.set_ylabel("nats per image")
            ax.set_title({"VAE": f"trained VAE (z = {latent}): log p(x) intractable",
                          "PPCA": f"probabilistic PCA (z = {latent}), mean-field q: exact reference"}[model])
            ax.legend(fontsize=8)
        fig.suptitle(f"{name}: mean over {n_eval} test images")
        figures.append(save_figure(fig, out / f"bounds_{name}.png"))
        kmax = ks[-1]
        summary.append((name, res, exact, gap, kmax))
    held = all(r["VAE"][k][0] > r["VAE"][1][0] and r["PPCA"][1][0] < exact
               and abs(r["PPCA"][k][0] - exact) < abs(r["PPCA"][1][0] - exact) for _, r, exact, _, k in summary)
    verdict = "; ".join(
        f"{name}: VAE ELBO {r['VAE'][1][0]:.2f}, L_{k} {r['VAE'][k][0]:.2f} (gap ≥ {r['VAE'][k][0] - r['VAE'][1][0]:.2f} "
        f"nats); PPCA ELBO {r['PPCA'][1][0]:.2f} vs exact log p(x) {exact:.2f} (measured gap "
        f"{exact - r['PPCA'][1][0]:.2f}, closed-form KL {gap:.2f}), L_{k} {r['PPCA'][k][0]:.2f}"
        for name, r, exact, gap, k in summary)
    verdict = ("Held — " if held else "Did not hold — ") + verdict
    return write_results(
        out, name="elbo-gap", title="The ELBO gap and the importance-weighted bound", claim=CLAIM,
        command=command_line("elbo-gap", quick, seed, data_dir, user_data), table=rows, figures=figures, verdict=verdict,
        held=held,
        notes="L_K is estimated from one pool of K_max importance weights per image, cut into disjoint groups of K "
              "(so the small-K values average many groups); mc_std_err is the Monte Carlo standard error of the mean "
              "(none for K_max, a single group). VAE: Gaussian p(x|z) with "
              "σ = 0.1 on grey levels, so log p(x) is a density (nats per image, can be positive). PPCA: "
              "maximum-likelihood fit to the same training images (sklearn PCA), W randomly rotated so that "
              "the mean-field q (exact posterior mean, variances 1/Λ_jj) differs from the correlated exact posterior.")
