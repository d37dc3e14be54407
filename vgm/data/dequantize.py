"""Uniform dequantization: a continuous density for discrete grey levels, scored on the discrete scale.

Images come as x = k/(L−1), k ∈ {0, …, L−1} (L grey levels: 17 for digits, 256 for 8-bit MNIST). Dequantized,
    y = (k + u) / L,   u ~ U(0, 1)^D,   y ∈ [0, 1]^D.
For any density p on [0, 1]^D, p_L(v) = p(v/L) / L^D is a density on [0, L]^D whose unit cubes k + [0, 1)^D
partition it, so (Theis et al. 2016)
    log P(k) ≥ E_u[ log p(y) ] − D log L.
"log p(y) − D log L" is what flows and the dequantized VAE report as log_px (nats per example), and
−log_px / (D ln 2) is the bits/dim of L-level data that papers quote (about 1 for MNIST flows). Evaluation uses
one fixed noise draw (EVAL_SEED), so two models scored on the same split see exactly the same y.
"""
from __future__ import annotations

import math

import torch

EVAL_SEED = 0


def grey_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """k = round(x · (L − 1)), the integer grey level of each value of x ∈ [0, 1]."""
    return torch.round(x * (levels - 1)).clamp_(0, levels - 1)


def dequantize(x: torch.Tensor, levels: int, noise: torch.Tensor | None = None) -> torch.Tensor:
    """y = (k + u) / L with u ~ U(0, 1) (or the given `noise`, same shape as x)."""
    u = torch.rand_like(x) if noise is None else noise
    return (grey_levels(x, levels) + u) / levels


def quantize(y: torch.Tensor, levels: int) -> torch.Tensor:
    """The inverse of dequantize: the grey level k = ⌊y L⌋ of y ∈ [0, 1], back on the data scale k/(L − 1)."""
    return torch.floor(y * levels).clamp_(0, levels - 1) / (levels - 1)


def log_scale(levels: int, dims: int) -> float:
    """−D log L: log|det| of v ↦ v / L on D values, the term that puts log p(y) on the discrete scale."""
    return -dims * math.log(levels)


def eval_noise(x: torch.Tensor) -> torch.Tensor:
    """The dequantization noise used by every evaluation: fixed by EVAL_SEED, so identical across models."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    return torch.rand(x.shape, generator=g).to(x.device)


def bits_per_dim(log_px: float, dims: int) -> float:
    return -log_px / (dims * math.log(2))
