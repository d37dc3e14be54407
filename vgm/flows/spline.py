"""Monotone rational-quadratic splines (Durkan et al., 2019, "Neural Spline Flows", Section 3.1).

On [−B, B] the spline has K bins with knots (x_k, y_k) and positive knot derivatives d_k; outside it is the
identity (the boundary derivatives are fixed at 1 so the pieces join smoothly). In bin k, with
s_k = (y_{k+1} − y_k)/w_k, w_k = x_{k+1} − x_k, h_k = y_{k+1} − y_k and ξ = (x − x_k)/w_k ∈ [0, 1]:
    g(x)  = y_k + h_k [s_k ξ² + d_k ξ(1−ξ)] / [s_k + (d_{k+1} + d_k − 2 s_k) ξ(1−ξ)]              (eq. 4)
    g'(x) = s_k² [d_{k+1} ξ² + 2 s_k ξ(1−ξ) + d_k (1−ξ)²] / [s_k + (d_{k+1} + d_k − 2 s_k) ξ(1−ξ)]²  (eq. 5)
and the inverse solves the quadratic a ξ² + b ξ + c = 0 for ξ, taking the root 2c / (−b − √(b² − 4ac)) (eq. 6–8).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_WIDTH = 1e-3
MIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def knots(raw: torch.Tensor, bound: float, minimum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised bin sizes (..., K) -> bin sizes summing to 2B (each ≥ minimum·2B) and the K+1 knots."""
    k = raw.shape[-1]
    size = minimum + (1 - minimum * k) * torch.softmax(raw, dim=-1)
    cum = F.pad(torch.cumsum(size, dim=-1), (1, 0))
    cum = 2 * bound * cum - bound
    cum = torch.cat([torch.full_like(cum[..., :1], -bound), cum[..., 1:-1], torch.full_like(cum[..., :1], bound)], -1)
    return cum[..., 1:] - cum[..., :-1], cum


def rational_quadratic_spline(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor,
                              derivatives: torch.Tensor, bound: float, inverse: bool = False
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise spline g (or g⁻¹ when inverse) of x (...) given unnormalised parameters per element:
    widths, heights (..., K) and interior derivatives (..., K−1). Returns (output, log|g'|) of x's shape."""
    w, cx = knots(widths, bound, MIN_WIDTH)
    h, cy = knots(heights, bound, MIN_HEIGHT)
    d = MIN_DERIVATIVE + F.softplus(derivatives)
    one = torch.ones_like(d[..., :1])
    d = torch.cat([one, d, one], dim=-1)                    # boundary derivatives 1: identity tails join C¹

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    knots_in = cy if inverse else cx
    idx = (torch.searchsorted(knots_in[..., 1:-1].contiguous(), xc[..., None].contiguous())).clamp(0, w.shape[-1] - 1)
    pick = lambda t: t.gather(-1, idx)[..., 0]
    x_k, w_k, y_k, h_k = pick(cx), pick(w), pick(cy), pick(h)
    d_k, d_k1 = pick(d[..., :-1]), pick(d[..., 1:])
    s_k = h_k / w_k
    if inverse:
        dy = xc - y_k
        c2 = d_k1 + d_k - 2 * s_k
        a = h_k * (s_k - d_k) + dy * c2
        b = h_k * d_k - dy * c2
        c = -s_k * dy
        disc = (b.pow(2) - 4 * a * c).clamp_min(0)
        xi = (2 * c) / (-b - disc.sqrt())
        out = xi * w_k + x_k
    else:
        xi = (xc - x_k) / w_k
        out = y_k + h_k * (s_k * xi.pow(2) + d_k * xi * (1 - xi)) / (s_k + (d_k1 + d_k - 2 * s_k) * xi * (1 - xi))
    t = xi * (1 - xi)
    denom = s_k + (d_k1 + d_k - 2 * s_k) * t
    deriv = s_k.pow(2) * (d_k1 * xi.pow(2) + 2 * s_k * t + d_k * (1 - xi).pow(2)) / denom.pow(2)
    logabsdet = torch.log(deriv)
    if inverse:
        logabsdet = -logabsdet
    return torch.where(inside, out, x), torch.where(inside, logabsdet, torch.zeros_like(logabsdet))
