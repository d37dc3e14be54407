"""Glow's invertible 1×1 convolution (Kingma & Dhariwal, 2018): the channel vector of every pixel is multiplied by
one learned C×C matrix W, a learned generalisation of a channel permutation,
    z[:, :, i, j] = W x[:, :, i, j],      log|det ∂z/∂x| = H·W_img · log|det W|.
LU-parametrised as in the paper: W = P L (U + diag(sign · exp(log_s))) with P a fixed permutation, L unit
lower-triangular, U strictly upper-triangular and the signs fixed, so log|det W| = Σ log_s costs O(C) and W
stays invertible. It starts at a random rotation (the LU factors of the Q of a Gaussian matrix, drawn from
torch's global RNG and stored with the weights).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .flow import Transform


class InvertibleConv1x1(Transform):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"a 1x1 convolution takes images (C, H, W), got shape {tuple(shape)}")
        c = shape[0]
        self.pixels = shape[1] * shape[2]
        q = torch.linalg.qr(torch.randn(c, c, dtype=torch.float64))[0]
        p, low, up = torch.linalg.lu(q)
        s = up.diagonal()
        self.register_buffer("perm", p.float())
        self.register_buffer("sign", s.sign().float())
        self.lower = nn.Parameter(low.tril(-1).float())
        self.upper = nn.Parameter(up.triu(1).float())
        self.log_s = nn.Parameter(s.abs().log().float())
        self.register_buffer("eye", torch.eye(c), persistent=False)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """L (unit lower) and U (upper, diagonal sign · exp(log_s)), so W = P L U."""
        low = self.lower.tril(-1) + self.eye
        up = self.upper.triu(1) + torch.diag(self.sign * torch.exp(self.log_s))
        return low, up

    def weight(self) -> torch.Tensor:
        low, up = self.factors()
        return self.perm @ low @ up

    def logdet(self, n: int) -> torch.Tensor:
        return (self.pixels * self.log_s.sum()).expand(n)

    def forward(self, x):
        w = self.weight()
        return F.conv2d(x, w[:, :, None, None]), self.logdet(x.shape[0])

    def inverse(self, z):
        low, up = self.factors()
        # W⁻¹ = U⁻¹ L⁻¹ Pᵀ: two triangular solves against Pᵀ (a C×C matrix, not the data)
        h = torch.linalg.solve_triangular(low, self.perm.T, upper=False, unitriangular=True)
        w_inv = torch.linalg.solve_triangular(up, h, upper=True)
        return F.conv2d(z, w_inv[:, :, None, None]), -self.logdet(z.shape[0])
