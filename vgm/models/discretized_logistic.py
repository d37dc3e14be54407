"""The discretised logistic: a distribution over the L grey levels x = k/(L−1), k = 0..L−1 (L = 256 for 8 bits).

A continuous logistic y ~ Logistic(μ, s), F(y) = σ((y − μ)/s), is rounded to the nearest level; the two end levels
take the tails (Salimans et al. 2017, PixelCNN++; Kingma et al. 2016, IAF; Vahdat & Kautz 2020, NVAE). With the
half bin width h = 1/(2(L−1)):
    P(0)   = F(h)                       P(L−1) = 1 − F(1 − h)
    P(k)   = F(x + h) − F(x − h)        (0 < k < L−1)
The middle case is computed without cancellation: with a = (x + h − μ)/s and b = (x − h − μ)/s,
    log(σ(a) − σ(b)) = log σ(a) + log σ(−b) + log(1 − e^(b − a)),
every term ≤ 0, so it stays exact where PixelCNN++ switches to the density at the bin centre.
Optionally a mixture of K components per value: P(k) = Σ_j π_j P_j(k).

The P(k) sum to 1 over the L levels, so log_prob is the log-probability of discrete data and −log P/(D ln 2) is
directly the bits/dim papers quote for 8-bit images (no −D log L term, unlike a dequantized density).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Distribution, constraints


class DiscretizedLogistic(Distribution):
    """Per-value discretised logistic on x ∈ {0, 1/(L−1), …, 1}, optionally a K-component mixture.

    loc, log_scale: location μ and log s on the [0, 1] data scale, shape batch_shape (one component), or
    batch_shape + (K,) with `logits` (mixture weights before softmax) of the same shape. Values of x off the
    lattice are taken at their nearest level. event_shape is (): wrap in Independent for an image.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval       # on its L-level lattice
    has_rsample = False

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, logits: torch.Tensor | None = None,
                 levels: int = 256, validate_args: bool | None = False):
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        if logits is None:
            self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
            self.logits = None
            batch_shape = self.loc.shape
        else:
            self.loc, self.log_scale, self.logits = torch.broadcast_tensors(loc, log_scale, logits)
            batch_shape = self.loc.shape[:-1]
        self.levels = levels
        super().__init__(batch_shape, torch.Size(), validate_args=validate_args)

    def _component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log P_j(k) for x broadcast against loc (one value per component)."""
        top = self.levels - 1
        k = torch.round(x * top).clamp(0, top)
        inv_s = torch.exp(-self.log_scale)
        centred = k / top - self.loc
        a = inv_s * (centred + 0.5 / top)           # standardised upper bin edge
        b = inv_s * (centred - 0.5 / top)           # standardised lower bin edge
        log_cdf_a = F.logsigmoid(a)                 # log F(x + h): level 0
        log_sf_b = F.logsigmoid(-b)                 # log(1 − F(x − h)): level L − 1
        width = inv_s / top                         # a − b > 0
        middle = log_cdf_a + log_sf_b + torch.log(-torch.expm1(-width))
        return torch.where(k == 0, log_cdf_a, torch.where(k == top, log_sf_b, middle))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.logits is None:
            return self._component_log_prob(x)
        lp = self._component_log_prob(x.unsqueeze(-1))
        return torch.logsumexp(lp + torch.log_softmax(self.logits, dim=-1), dim=-1)

    def cdf(self, y: torch.Tensor) -> torch.Tensor:
        """F(y) of the underlying continuous logistic (mixture) at y on the [0, 1] scale."""
        if self.logits is None:
            return torch.sigmoid((y - self.loc) * torch.exp(-self.log_scale))
        c = torch.sigmoid((y.unsqueeze(-1) - self.loc) * torch.exp(-self.log_scale))
        return (torch.softmax(self.logits, dim=-1) * c).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = (1/(L−1)) Σ_{k=1}^{L−1} P(K ≥ k), with P(K ≥ k) = 1 − F((k − ½)/(L−1)): exact, and memory of
        one batch (a loop over the L − 1 thresholds; meant for pictures, not for the training loop)."""
        top = self.levels - 1
        total = torch.zeros(self.batch_shape, dtype=self.loc.dtype, device=self.loc.device)
        for k in range(1, self.levels):
            total = total + (1 - self.cdf(torch.full_like(total, (k - 0.5) / top)))
        return total / top

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Draw y from the logistic (the mixture's component first), round it to the nearest level."""
        shape = self._extended_shape(sample_shape)
        loc, log_scale = self.loc, self.log_scale
        if self.logits is not None:
            j = Categorical(logits=self.logits).sample(sample_shape).unsqueeze(-1)
            loc = torch.gather(loc.expand(*shape, loc.shape[-1]), -1, j).squeeze(-1)
            log_scale = torch.gather(log_scale.expand(*shape, log_scale.shape[-1]), -1, j).squeeze(-1)
        tiny = torch.finfo(loc.dtype).tiny
        u = torch.rand(shape, dtype=loc.dtype, device=loc.device).clamp(tiny, 1 - 1e-7)
        y = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        top = self.levels - 1
        return torch.round(y * top).clamp(0, top) / top

