"""The autoregressive rational-quadratic spline flow, RQ-NSF (AR) of Durkan et al. (2019): a monotone spline per
value whose widths, heights and knot derivatives come from a MADE of the values before it,
    z_i = g(x_i; θ_i(x_<i, c)),     log|det ∂z/∂x| = Σ_i log g'(x_i; θ_i)
(a triangular Jacobian: one MADE pass for the density, D sequential passes to invert). The spline is
vgm.flows.spline's, identity outside [−B, B]; the MADE's zero last layer and bias make it start as the identity.
"""
from __future__ import annotations

import torch

from .coupling import identity_spline_bias
from .flow import Transform
from .made import MADE
from .spline import rational_quadratic_spline


class MaskedRQSAutoregressive(Transform):
    """One RQ-NSF (AR) layer on (N, D) (images are flattened in raster order); K bins on [−bound, bound]."""

    takes_context = True

    def __init__(self, features: int, hidden: int, bins: int = 8, bound: float = 5.0, layers: int = 2,
                 context_features: int = 0, dropout: float = 0.0):
        super().__init__()
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        if not bound > 0:
            raise ValueError(f"tail bound must be > 0, got {bound}")
        self.bins, self.bound = bins, bound
        self.made = MADE(features, hidden, 3 * bins - 1, layers, context_features, dropout)
        identity_spline_bias(self.made.net[-1].bias, bins)

    def spline(self, x: torch.Tensor, context: torch.Tensor | None, target: torch.Tensor, inverse: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """g (or g⁻¹) of `target` with the parameters θ(x, context); (output, log|g'| summed per example)."""
        p, k = self.made(x, context), self.bins
        y, logabs = rational_quadratic_spline(target, p[..., :k], p[..., k:2 * k], p[..., 2 * k:], self.bound, inverse)
        return y, logabs.sum(1)

    def forward(self, x, context=None):
        xf = x.reshape(x.shape[0], -1)
        z, ld = self.spline(xf, context, xf, inverse=False)
        return z.reshape(x.shape), ld

    def inverse(self, z, context=None):
        zf = z.reshape(z.shape[0], -1)
        x = torch.zeros_like(zf)
        ld = zf.new_zeros(zf.shape[0])
        for _ in range(zf.shape[1]):                    # after pass i, x_1..x_i are final
            x, ld = self.spline(x, context, zf, inverse=True)
        return x.reshape(z.shape), ld
