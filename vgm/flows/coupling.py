"""Coupling layers: half of the values (mask = 1) pass unchanged and parameterise an elementwise bijection of
the other half, so the Jacobian is triangular and its log-determinant is a sum over the transformed values.

    z = m ⊙ x + (1 − m) ⊙ g(x; θ(m ⊙ x)),     log|det ∂z/∂x| = Σ_i (1 − m_i) log|g'(x_i)|
AffineCoupling (RealNVP, Dinh et al. 2017): g(x) = x · exp(s) + t.
RQSplineCoupling (neural spline flow, Durkan et al. 2019): g = a rational-quadratic spline on [−B, B].
Masks: alternating halves for vectors, a checkerboard for images (C, H, W); `parity` flips them.
Conditional (context_features > 0): θ(m ⊙ x, c), the context c (N, F) projected by a linear map and added to the
conditioner's first hidden layer (for a CNN, the same value at every pixel of a hidden channel).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .flow import Transform, sum_except_batch
from .spline import MIN_DERIVATIVE, rational_quadratic_spline

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


def conditioner(shape: tuple[int, ...], hidden: int, params: int, arch: str = "mlp") -> nn.Sequential:
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


def context_layer(context_features: int, hidden: int) -> nn.Linear | None:
    """The linear map of the context into a conditioner's first hidden layer (None: not conditional)."""
    if context_features < 0:
        raise ValueError(f"context_features must be >= 0, got {context_features}")
    return nn.Linear(context_features, hidden) if context_features else None


def run_conditioner(net: nn.Sequential, first: int, proj: nn.Linear | None, x: torch.Tensor,
                    context: torch.Tensor | None) -> torch.Tensor:
    """net(x), with proj(context) added to the output of net[:first] (the first layer's pre-activation)."""
    if (proj is None) != (context is None):
        raise ValueError("a conditional transform needs a context, an unconditional one takes none")
    if proj is None:
        return net(x)
    h = net[:first](x)
    c = proj(context)
    return net[first:](h + c.reshape(*c.shape, *(1,) * (h.dim() - 2)))


class Coupling(Transform):
    """The shared skeleton: mask, conditioner, and an elementwise bijection given per-value parameters."""

    params_per_value = 0
    takes_context = True

    def __init__(self, shape: tuple[int, ...], hidden: int, parity: int = 0, arch: str = "mlp",
                 context_features: int = 0):
        super().__init__()
        self.shape, self.arch = tuple(shape), arch
        self.register_buffer("mask", make_mask(self.shape, parity), persistent=False)
        self.net = conditioner(self.shape, hidden, self.params_per_value, arch)
        self.context = context_layer(context_features, hidden)

    def params(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(N, *shape, P): the conditioner's P parameters for every value."""
        inp = x * self.mask
        if self.arch == "conv":               # channels-last: mkldnn's faster layout for the CNN on a CPU
            inp = inp.contiguous(memory_format=torch.channels_last)
        p = run_conditioner(self.net, 2 if self.arch == "mlp" else 1, self.context, inp, context)
        if self.arch == "conv":
            return p.reshape(x.shape[0], self.shape[0], self.params_per_value, *self.shape[1:]).movedim(2, -1)
        return p.reshape(x.shape[0], *self.shape, self.params_per_value)

    def elementwise(self, x, p, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def couple(self, x: torch.Tensor, context: torch.Tensor | None, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y, logabs = self.elementwise(x, self.params(x, context), inverse)     # x·mask = y·mask, so θ is the same
        keep = self.mask
        return keep * x + (1 - keep) * y, sum_except_batch((1 - keep) * logabs)

    def forward(self, x, context=None):
        return self.couple(x, context, inverse=False)

    def inverse(self, z, context=None):
        return self.couple(z, context, inverse=True)


class AffineCoupling(Coupling):
    """RealNVP: g(x) = x · exp(s) + t, log|g'| = s, with s soft-clamped to (−3, 3) for stable training."""

    params_per_value = 2

    def elementwise(self, x, p, inverse):
        s = SCALE_CLAMP * torch.tanh(p[..., 0] / SCALE_CLAMP)
        t = p[..., 1]
        if inverse:
            return (x - t) * torch.exp(-s), -s
        return x * torch.exp(s) + t, s


def identity_spline_bias(bias: torch.Tensor, bins: int) -> None:
    """With a zero last layer and this bias, every spline starts as the identity: equal bins, and interior
    derivatives MIN_DERIVATIVE + softplus(b) = 1 (bias laid out as (values, 3K − 1), derivatives last)."""
    with torch.no_grad():
        bias.view(-1, 3 * bins - 1)[:, 2 * bins:] = math.log(math.expm1(1 - MIN_DERIVATIVE))


class RQSplineCoupling(Coupling):
    """Neural spline flow coupling: g = rational-quadratic spline with `bins` bins on [−bound, bound], identity
    outside; 3K − 1 parameters per value (K widths, K heights, K − 1 interior derivatives)."""

    def __init__(self, shape: tuple[int, ...], hidden: int, parity: int = 0, bins: int = 8, bound: float = 5.0,
                 arch: str = "mlp", context_features: int = 0):
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        if not bound > 0:
            raise ValueError(f"tail bound must be > 0, got {bound}")
        self.params_per_value = 3 * bins - 1
        self.bins, self.bound = bins, bound
        super().__init__(shape, hidden, parity, arch, context_features)
        identity_spline_bias(self.net[-1].bias, bins)

    def elementwise(self, x, p, inverse):
        k = self.bins
        return rational_quadratic_spline(x, p[..., :k], p[..., k:2 * k], p[..., 2 * k:], self.bound, inverse)


class AffineChannelCoupling(Transform):
    """Channel-wise affine coupling on images (Dinh et al. 2017's channel masks; Glow's coupling): one half of the
    channels (the first for parity 0, the second for parity 1) passes unchanged and, through a CNN (3×3, 1×1, 3×3,
    the last layer zero so the layer starts as the identity), gives s and t for the other half:
        z_b = x_b · exp(s) + t,   log|det| = Σ s   (s soft-clamped to (−3, 3), as in AffineCoupling).
    Only the transformed half is computed: half the work of a channel mask over all channels. The CNN runs in the
    channels-last layout (30% faster training on a CPU, measured on Glow for mnist)."""

    takes_context = True

    def __init__(self, shape: tuple[int, ...], hidden: int, parity: int = 0, context_features: int = 0):
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"a channel coupling takes images (C, H, W), got shape {tuple(shape)}")
        c = shape[0]
        if c % 2:
            raise ValueError(f"a channel coupling splits the channels in halves: needs an even number, got {c}")
        self.shape, self.parity = tuple(shape), parity % 2
        self.net = conditioner((c // 2, *shape[1:]), hidden, 2, "conv")
        self.context = context_layer(context_features, hidden)

    def couple(self, x: torch.Tensor, context: torch.Tensor | None, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        keep, change = x.chunk(2, 1)
        if self.parity:
            keep, change = change, keep
        p = run_conditioner(self.net, 1, self.context, keep.contiguous(memory_format=torch.channels_last), context)
        s = SCALE_CLAMP * torch.tanh(p[:, 0::2] / SCALE_CLAMP)      # output channel 2i: s of value i, 2i + 1: t
        t = p[:, 1::2]
        y = (change - t) * torch.exp(-s) if inverse else change * torch.exp(s) + t
        ld = sum_except_batch(s)
        out = (y, keep) if self.parity else (keep, y)
        return torch.cat(out, 1), -ld if inverse else ld

    def forward(self, x, context=None):
        return self.couple(x, context, inverse=False)

    def inverse(self, z, context=None):
        return self.couple(z, context, inverse=True)
