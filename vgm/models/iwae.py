"""The importance-weighted autoencoder (Burda et al., 2016), with MIWAE (Rainforth et al., 2018) and the doubly
reparameterised gradient (DReG, Tucker et al., 2019) as options of the same model.

    log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x),   z_k = z(ε_k; φ) ~ q(z|x),  k = 1..K
    L_K(x)  = log (1/K) Σ_k w_k                 ELBO = L_1 ≤ L_K ≤ L_{K+1} ≤ log p(x)   (in expectation)
    MIWAE:  (1/M) Σ_m L_K^(m)                   M independent K-sample bounds (M·K samples per example)
Gradient estimators (w̃_k = w_k / Σ_j w_j, the normalised weights):
    standard  autograd of L_K: Σ_k w̃_k ∇ log w_k. In the encoder's part the score-function term ∂ log q/∂φ
              does not vanish as K grows while the true gradient does, so the encoder gradient's
              signal-to-noise ratio falls like O(1/√K) (Rainforth et al., 2018).
    dreg      decoder (and any prior parameters) θ: the same Σ_k w̃_k ∇_θ log w_k; encoder φ:
              Σ_k w̃_k² (∂ log w_k / ∂z_k)(∂z_k / ∂φ), with log q's parameters held fixed (stop-gradient) inside
              log w_k (Tucker et al., 2019, eq. 7): unbiased for ∇_φ L_K, and its SNR grows with K.
DReG is computed by one backward pass of the surrogate Σ_k sg(w̃_k) log w_k, whose gradient reaching each z_k
is multiplied by sg(w̃_k) on the way back (a hook), so θ sees w̃_k and φ sees w̃_k²; its value is replaced by L_K.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.distributions import Distribution, Independent, Normal

from ..registry import register_model
from .vae import VAE, VAEConfig

ESTIMATORS = ("standard", "dreg")


def stop_gradient(q: Distribution) -> Distribution:
    """The same density as q with its parameters detached: log q(z) then passes gradient only through z.
    A diagonal Gaussian is rebuilt from detached loc and scale; other posteriors provide `detached()`."""
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        base = q.base_dist
        return Independent(Normal(base.loc.detach(), base.scale.detach(), validate_args=False),
                           q.reinterpreted_batch_ndims)
    if hasattr(q, "detached"):
        return q.detached()
    raise ValueError(f"the DReG estimator needs a posterior with detachable parameters, got {type(q).__name__}")


def check_samples(k: int, m: int) -> None:
    for name, v in (("k", k), ("m", m)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


def iw_terms(model, x: torch.Tensor, k: int, m: int = 1, estimator: str = "standard") -> dict[str, torch.Tensor]:
    """Per example: loss = −(1/M) Σ_m L_K^(m) (gradient by `estimator`); iw_bound, its value; and from the same
    M·K samples the ELBO estimate (mean of log w) as elbo = −(recon + kl), recon = −mean log p(x|z),
    kl = mean (log q(z|x) − log p(z)). Sample j·K + i is the i-th of group j. `model` needs encode, decode, prior."""
    check_samples(k, m)
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r} (choose {' or '.join(ESTIMATORS)})")
    q = model.encode(x)
    z = q.rsample((m * k,))                                          # (M·K, N, d)
    log_px_z = model.decode(z).log_prob(x)
    log_pz = model.prior.log_prob(z)
    log_qz = (stop_gradient(q) if estimator == "dreg" else q).log_prob(z)
    log_w = (log_px_z + log_pz - log_qz).reshape(m, k, -1)           # (M, K, N)
    bound = (torch.logsumexp(log_w, dim=1) - math.log(k)).mean(0)
    objective = bound
    if estimator == "dreg" and z.requires_grad:
        w = torch.softmax(log_w.detach(), dim=1)                     # w̃, per group
        z.register_hook(lambda g: g * w.reshape(m * k, -1, *(1,) * (g.dim() - 2)))
        surrogate = (w * log_w).sum(1).mean(0)
        objective = bound.detach() + (surrogate - surrogate.detach())
    recon = -log_px_z.detach().mean(0)
    kl = (log_qz - log_pz).detach().mean(0)
    return {"loss": -objective, "iw_bound": bound.detach(), "elbo": -(recon + kl), "recon": recon, "kl": kl}


@dataclass
class IWAEConfig(VAEConfig):
    hidden: tuple[int, ...] = field(default=(200, 200), metadata={"help": "encoder widths; the decoder mirrors "
                                                                          "them (Burda et al.: 200, 200)"})
    latent_dim: int = 50
    k: int = field(default=5, metadata={"help": "importance samples K per bound"})
    m: int = field(default=1, metadata={"help": "M independent K-sample bounds averaged (MIWAE; 1: IWAE)"})
    estimator: str = field(default="standard", metadata={"choices": ESTIMATORS, "help": "encoder gradient: "
                                                         "autograd of L_K, or the doubly reparameterised one"})


@register_model("iwae")
class IWAE(VAE):
    """Importance-weighted autoencoder: trains on the K-sample bound L_K (MIWAE with --m, DReG with --estimator)."""

    Config = IWAEConfig

    def __init__(self, config: IWAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        check_samples(c.k, c.m)
        if c.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {c.estimator!r} (choose {' or '.join(ESTIMATORS)})")
        if c.beta != 1:
            raise ValueError("beta does not apply to iwae: it trains on the bound L_K, which has no KL weight")
        if c.dequantize:
            raise ValueError("dequantize does not apply to iwae (train vae --dequantize for grey levels)")

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The (M)IWAE terms of iw_terms with this model's k, m and estimator."""
        c = self.config
        return iw_terms(self, x, c.k, c.m, c.estimator)
