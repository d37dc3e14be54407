"""The fixed pre-processing of images, with its Jacobian counted (Dinh et al. 2017, Sec. 4.1).

UniformDequantization: x = k/(L−1) -> y = (k + u)/L ∈ [0, 1] (vgm.dequantize). Seen as the map v = k + u ↦ v/L,
    log|det| = −D log L, which puts log p(y) on the discrete scale: log P(k) ≥ E_u log p(y) − D log L.
Its inverse quantizes: ⌊y L⌋/(L − 1), so inverse(forward(x)) = x for x on the grey-level lattice.
Logit: y ∈ [0, 1] -> z = logit(α + (1 − 2α) y), which keeps values away from 0 and 1 where logit blows up
    (α > 0: a dequantized value can be exactly 0, whose logit is −∞);
    log|det ∂z/∂y| = Σ [log(1 − 2α) − log s − log(1 − s)],  s = α + (1 − 2α) y.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.dequantize import dequantize, log_scale, quantize
from .flow import Transform, sum_except_batch


class UniformDequantization(Transform):
    def __init__(self, levels: int):
        super().__init__()
        if levels < 2:
            raise ValueError(f"dequantization needs at least 2 grey levels, got {levels}")
        self.levels = levels

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """noise: u ∈ [0, 1) of x's shape (default: fresh uniform noise)."""
        d = x[0].numel()
        return dequantize(x, self.levels, noise), x.new_full((x.shape[0],), log_scale(self.levels, d))

    def inverse(self, y: torch.Tensor):
        d = y[0].numel()
        return quantize(y, self.levels), y.new_full((y.shape[0],), -log_scale(self.levels, d))


class Logit(Transform):
    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha}: logit(0) = -inf at alpha 0")
        self.alpha = alpha

    def forward(self, y):
        s = self.alpha + (1 - 2 * self.alpha) * y
        z = torch.log(s) - torch.log1p(-s)
        return z, sum_except_batch(math.log1p(-2 * self.alpha) - torch.log(s) - torch.log1p(-s))

    def inverse(self, z):
        y = (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)
        return y, sum_except_batch(F.logsigmoid(z) + F.logsigmoid(-z) - math.log1p(-2 * self.alpha))
