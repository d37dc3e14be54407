"""Coupling layers: half of the values (mask = 1) pass unchanged and parameterise an elementwise bijection of
the other half, so the Jacobian is triangular and its log-determinant is a sum over the transformed values.

    z = m ⊙ x + (1 − m) ⊙ g(x; θ(m ⊙ x)),     log|det ∂z/∂x| = Σ_i (1 − m_i) log|g'(x_i)|
AffineCoupling (RealNVP, Dinh et al. 2017): g(x) = x · exp(s) + t.
RQSplineCoupling (neural spline flow, Durkan et al. 2019): g = a rational-quadratic spline on [−B, B].
Masks: alternating halves for vectors, a checkerboard for images (C, H, W); `parity` flips them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .flow import Transform, sum_except_batch
from .spline import rational_quadratic_spline

SCALE_CLAMP = 3.0     # affine log-scales are soft-clamped to (−3, 3): s = 3 tanh(raw / 3)


def make_mask(shape: tuple[int, ...], parity: int) -> torch.Tensor:
    """1 = passes unchanged. Vectors (D,): the first ⌈D/2⌉ values (parity 0) or the rest; images (C, H, W):
    a checkerboard over the pixels, the same for every channel."""
    if len(shape) == 1:
        m = (torch.arange(shape[0]) < (shape[0] + 1) // 2).float()
    elif len(shape) == 3:
        c, h, w = shape
        m = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0).float().expand(c, h, w).clone()
    else:
        raise ValueError(f"coupling layers take vectors (D,) or images (C, H, W), got shape {shape}")
    return m if parity % 2 == 0 else 1 - m


ARCHS = ("mlp", "conv")


def conditioner(shape: tuple[int, ...], hidden: int, params: int, arch: str = "mlp") -> nn.Module:
    """θ(m ⊙ x): an MLP on the flattened values (two hidden layers), or for images a small CNN (3×3, 1×1, 3×3),
    the faster choice on a CPU only for large images; `params` numbers per value. The last layer starts at
    zero, so every coupling layer starts as the identity."""
    if arch not in ARCHS:
        raise ValueError(f"unknown conditioner arch {arch!r} (choose mlp or conv)")
    if arch == "conv" and len(shape) != 3:
        raise ValueError(f"arch 'conv' needs images (C, H, W), got shape {shape}")
    if arch == "mlp":
        d = math.prod(shape)
        net = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                            nn.Linear(hidden, d * params))
    else:
        c = shape[0]
        net = nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                            nn.Conv2d(hidden, c * params, 3, padding=1))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class Coupling(Transform):
    """The shared skeleton: mask, conditioner, and an elementwise bijection given per-value parameters."""

    params_per_value = 0

    def __init__(self, shape: tuple[int, ...], hidden: int, parity: int = 0, arch: str = "mlp"):
        super().__init__()
        self.shape, self.arch = tuple(shape), arch
        self.register_buffer("mask", make_mask(self.shape, parity), persistent=False)
        self.net = conditioner(self.shape, hidden, self.params_per_value, arch)

    def params(self, x: torch.Tensor) -> torch.Tensor:
        """(N, *shape, P): the conditioner's P parameters for every value."""
        p = self.net(x * self.mask)
        if self.arch == "conv":
            return p.reshape(x.shape[0], self.shape[0], self.params_per_value, *self.shape[1:]).movedim(2, -1)
        return p.reshape(x.shape[0], *self.shape, self.params_per_value)

    def elementwise(self, x, p, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def couple(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y, logabs = self.elementwise(x, self.params(x), inverse)     # x·mask = y·mask, so θ is the same
        keep = self.mask
        return keep * x + (1 - keep) * y, sum_except_batch((1 - keep) * logabs)

    def forward(self, x):
        return self.couple(x, inverse=False)

    def inverse(self, z):
        return self.couple(z, inverse=True)


class AffineCoupling(Coupling):
    """RealNVP: g(x) = x · exp(s) + t, log|g'| = s, with s soft-clamped to (−3, 3) for stable training."""

    params_per_value = 2

    def elementwise(self, x, p, inverse):
        s = SCALE_CLAMP * torch.tanh(p[..., 0] / SCALE_CLAMP)
        t = p[..., 1]
        if inverse:
            return (x - t) * torch.exp(-s), -s
        return x * torch.exp(s) + t, s


class RQSplineCoupling(Coupling):
    """Neural spline flow coupling: g = rational-quadratic spline with `bins` bins on [−bound, bound], identity
    outside; 3K − 1 parameters per value (K widths, K heights, K − 1 interior derivatives)."""

    def __init__(self, shape: tuple[int, ...], hidden: int, parity: int = 0, bins: int = 8, bound: float = 5.0,
                 arch: str = "mlp"):
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        if not bound > 0:
            raise ValueError(f"tail bound must be > 0, got {bound}")
        self.params_per_value = 3 * bins - 1
        self.bins, self.bound = bins, bound
        super().__init__(shape, hidden, parity, arch)
        # zero conditioner output: equal bins and derivative softplus⁻¹(1 − min) = identity map at start
        with torch.no_grad():
            self.net[-1].bias.view(-1, self.params_per_value)[:, 2 * bins:] = math.log(math.expm1(1 - 1e-3))

    def elementwise(self, x, p, inverse):
        k = self.bins
        return rational_quadratic_spline(x, p[..., :k], p[..., k:2 * k], p[..., 2 * k:], self.bound, inverse)
