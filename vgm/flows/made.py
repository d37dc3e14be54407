"""MADE (Germain et al., 2015) and the masked autoregressive affine transform of MAF (Papamakarios et al., 2017).

MADE: an MLP whose weights are masked so that output i depends only on inputs j < i (natural order). Degrees:
inputs 1..D, hidden units cycle through 1..D−1, a hidden unit of degree k sees inputs of degree ≤ k, an output
of degree i sees hidden units of degree < i.
MAF (data → noise):  z_i = (x_i − μ_i(x_<i)) · exp(−α_i(x_<i)),   log|det ∂z/∂x| = −Σ_i α_i
one parallel pass for the density; the inverse x_i = z_i exp(α_i) + μ_i needs D sequential passes.
Conditional MADE (context_features > 0): the context enters every first-layer hidden unit through an unmasked
linear map, so output i depends on x_<i and the context, and each p(x | c) stays autoregressive.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .coupling import SCALE_CLAMP, context_layer, run_conditioner
from .flow import Transform


class MaskedLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """x (N, D) -> (N, D, P): P outputs per value, output (i, ·) a function of x_<i (and the context) only.
    dropout > 0: dropout on the hidden units in training (a regulariser; evaluation and sampling use all units)."""

    def __init__(self, features: int, hidden: int, params: int = 2, layers: int = 2, context_features: int = 0,
                 dropout: float = 0.0):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.features, self.params = features, params
        d_in = torch.arange(1, features + 1)
        span = max(1, features - 1)
        if hidden >= span:                   # every degree 1..D-1, cycled
            d_hidden = torch.arange(hidden) % span + 1
        else:                                # fewer units than degrees: spread evenly over 1..D-1, both ends kept
            d_hidden = 1 + torch.arange(hidden) * (span - 1) // max(1, hidden - 1)
        d_out = d_in.repeat_interleave(params)                          # output (i, p) has degree i
        mods, prev = [], d_in
        for _ in range(layers):
            mods += [MaskedLinear(len(prev), hidden, d_hidden[:, None] >= prev[None, :]), nn.ReLU()]
            mods += [nn.Dropout(dropout)] if dropout else []       # none at 0: the saved layer names stay
            prev = d_hidden
        last = MaskedLinear(hidden, features * params, d_out[:, None] > prev[None, :])
        nn.init.zeros_(last.weight)          # start as the identity transform
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*mods, last)
        self.context = context_layer(context_features, hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return run_conditioner(self.net, 1, self.context, x, context).reshape(x.shape[0], self.features, self.params)


class MaskedAffineAutoregressive(Transform):
    """One MAF layer on (N, D) (or images, flattened); α soft-clamped to (−3, 3)."""

    takes_context = True

    def __init__(self, features: int, hidden: int, context_features: int = 0):
        super().__init__()
        self.made = MADE(features, hidden, params=2, context_features=context_features)

    def shift_log_scale(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.made(x, context)
        return p[..., 0], SCALE_CLAMP * torch.tanh(p[..., 1] / SCALE_CLAMP)

    def forward(self, x, context=None):
        xf = x.reshape(x.shape[0], -1)                  # images are flattened in raster order
        mu, alpha = self.shift_log_scale(xf, context)
        return ((xf - mu) * torch.exp(-alpha)).reshape(x.shape), -alpha.sum(1)

    def inverse(self, z, context=None):
        zf = z.reshape(z.shape[0], -1)
        x = torch.zeros_like(zf)
        for _ in range(zf.shape[1]):                    # after pass i, x_1..x_i are final
            mu, alpha = self.shift_log_scale(x, context)
            x = zf * torch.exp(alpha) + mu
        return x.reshape(z.shape), alpha.sum(1)
