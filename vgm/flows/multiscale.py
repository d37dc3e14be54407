"""Multi-scale flows (Dinh et al. 2017; Kingma & Dhariwal 2018): squeeze, transform, and factor out half.

Squeeze: (C, H, W) -> (4C, H/2, W/2), each 2×2 block of pixels becomes 4 channels (a permutation: log|det| = 0).
MultiScale, one scale:  x -> [before] -> squeeze -> [after] -> h = (z1 | z2), halves of the channels;
    z2 is factored out: it is modelled by a Gaussian N(μ(z1, c), σ(z1, c)²) whose parameters come from a 3×3
    convolution of z1 (zero at the start: N(0, I)), or by N(0, I) when prior=False (RealNVP);
    z1 goes on through `inner` (the next scale), and the scale's output is (inner(z1) | ε2) unsqueezed back to
    (C, H, W), ε2 = (z2 − μ)/σ. Then with the Flow's base N(0, I) on the whole output,
        log N(ε2; 0, I) − Σ log σ = log N(z2; μ, σ²),
    so the bookkeeping of a factored-out half is the usual change of variables; the last scale (inner=None) puts
    everything under a learned GaussianPrior (prior=True) or N(0, I).
Sampling at temperature T draws every ε from N(0, T² I): z2 = μ + T σ ε₀, Glow's temperature.
"""
from __future__ import annotations

import torch
from torch import nn

from .coupling import context_layer
from .flow import Transform, forward_all, inverse_all, sum_except_batch


def max_squeezes(height: int, width: int) -> int:
    """How many times an image of height × width can be squeezed (both halved, exactly) in a row."""
    n = 0
    while height % 2 == 0 and width % 2 == 0 and height > 1 and width > 1:
        height, width, n = height // 2, width // 2, n + 1
    return n


def squeeze_chain(height: int, width: int, times: int) -> str:
    """28x28 -> 14x14 -> 7x7 as text (the sizes `times` squeezes pass through, as far as they go)."""
    sizes = [f"{height}x{width}"]
    for _ in range(min(times, max_squeezes(height, width))):
        height, width = height // 2, width // 2
        sizes.append(f"{height}x{width}")
    return " -> ".join(sizes)


def squeezed(shape: tuple[int, ...]) -> tuple[int, int, int]:
    c, h, w = shape
    return 4 * c, h // 2, w // 2


class Squeeze(Transform):
    """(C, H, W) -> (4C, H/2, W/2): channel 4c + 2a + b of output pixel (i, j) is channel c of input pixel
    (2i + a, 2j + b). A permutation of the values: log|det| = 0."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"squeeze takes images (C, H, W), got shape {tuple(shape)}")
        c, h, w = shape
        if h % 2 or w % 2:
            raise ValueError(f"cannot squeeze an image of {h}x{w}: its height and width must be even")
        self.shape = tuple(shape)

    def forward(self, x):
        n, c, h, w = x.shape
        z = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        return z, x.new_zeros(n)

    def inverse(self, z):
        n, c4, h2, w2 = z.shape
        x = z.reshape(n, c4 // 4, 2, 2, h2, w2).permute(0, 1, 4, 2, 5, 3).reshape(n, c4 // 4, 2 * h2, 2 * w2)
        return x, z.new_zeros(n)


class GaussianPrior(Transform):
    """A learned diagonal Gaussian N(μ, σ²) on (C, H, W) as a transform to N(0, I): ε = (z − μ) e^{−log σ},
    log|det| = −Σ log σ. μ and log σ: one per value, plus (conditional) a linear function of the context per
    channel; all zero at the start (the identity)."""

    takes_context = True

    def __init__(self, shape: tuple[int, ...], context_features: int = 0):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.context = context_layer(context_features, 2 * shape[0])
        if self.context is not None:
            nn.init.zeros_(self.context.weight)
            nn.init.zeros_(self.context.bias)

    def params(self, n: int, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if (self.context is None) != (context is None):
            raise ValueError("a conditional prior needs a context, an unconditional one takes none")
        if context is None:
            return self.loc.expand(n, *self.loc.shape), self.log_scale.expand(n, *self.loc.shape)
        m, s = self.context(context)[:, :, None, None].chunk(2, 1)
        return self.loc + m, self.log_scale + s

    def forward(self, z, context=None):
        mu, log_s = self.params(z.shape[0], context)
        return (z - mu) * torch.exp(-log_s), -sum_except_batch(log_s)

    def inverse(self, e, context=None):
        mu, log_s = self.params(e.shape[0], context)
        return mu + e * torch.exp(log_s), sum_except_batch(log_s)


class MultiScale(Transform):
    """One scale of a multi-scale flow on (C, H, W) (see the module docstring); inner=None: the last scale."""

    takes_context = True

    def __init__(self, shape: tuple[int, ...], before: list[Transform], after: list[Transform],
                 inner: Transform | None, prior: bool = True, context_features: int = 0):
        super().__init__()
        self.squeeze = Squeeze(shape)
        self.inner_shape = squeezed(shape)
        c = self.inner_shape[0]
        self.before, self.after = nn.ModuleList(before), nn.ModuleList(after)
        self.inner = inner
        self.top = self.split = self.split_context = None
        if inner is None:
            if prior:
                self.top = GaussianPrior(self.inner_shape, context_features)
        elif prior:                                                # c = 4 C_in: always even
            self.split = nn.Conv2d(c // 2, c, 3, padding=1)       # z1 -> (μ, log σ) of z2
            nn.init.zeros_(self.split.weight)
            nn.init.zeros_(self.split.bias)
            self.split_context = context_layer(context_features, c)
            if self.split_context is not None:
                nn.init.zeros_(self.split_context.weight)
                nn.init.zeros_(self.split_context.bias)

    def split_params(self, z1: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and log σ of the factored-out half given the kept half (and the context)."""
        h = self.split(z1)
        if self.split_context is not None:
            h = h + self.split_context(context)[:, :, None, None]
        return h.chunk(2, 1)

    def forward(self, x, context=None):
        h, ld = forward_all(self.before, x, context)
        h = self.squeeze(h)[0]
        h, ld2 = forward_all(self.after, h, context)
        ld = ld + ld2
        if self.inner is None:
            if self.top is not None:
                h, ld2 = self.top(h, context)
                ld = ld + ld2
        else:
            z1, z2 = h.chunk(2, 1)
            if self.split is not None:
                mu, log_s = self.split_params(z1, context)
                z2 = (z2 - mu) * torch.exp(-log_s)
                ld = ld - sum_except_batch(log_s)
            z1, ld2 = self.inner(z1, context) if self.inner.takes_context else self.inner(z1)
            h, ld = torch.cat([z1, z2], 1), ld + ld2
        return self.squeeze.inverse(h)[0], ld

    def inverse(self, z, context=None):
        h = self.squeeze(z)[0]
        ld = z.new_zeros(z.shape[0])
        if self.inner is None:
            if self.top is not None:
                h, ld = self.top.inverse(h, context)
        else:
            z1, e2 = h.chunk(2, 1)
            z1, ld = self.inner.inverse(z1, context) if self.inner.takes_context else self.inner.inverse(z1)
            if self.split is not None:
                mu, log_s = self.split_params(z1, context)
                e2 = mu + e2 * torch.exp(log_s)
                ld = ld + sum_except_batch(log_s)
            h = torch.cat([z1, e2], 1)
        h, ld2 = inverse_all(self.after, h, context)
        h = self.squeeze.inverse(h)[0]
        x, ld3 = inverse_all(self.before, h, context)
        return x, ld + ld2 + ld3
