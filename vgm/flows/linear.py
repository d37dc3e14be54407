"""Volume-preserving and linear invertible layers on vectors (images are flattened and reshaped back).

Permutation: z = x[perm], log|det| = 0 (Reverse is the fixed reversal MAF layers alternate with).
LULinear: z = W x + b with W = P L U (Glow's LU trick, Kingma & Dhariwal 2018): P a fixed permutation,
L unit lower-triangular, U upper-triangular with diagonal exp(v), so log|det W| = Σ v at O(D) cost and the
inverse is two triangular solves.
"""
from __future__ import annotations

import torch
from torch import nn

from .flow import Transform


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


class Permutation(Transform):
    def __init__(self, perm: torch.Tensor):
        super().__init__()
        self.register_buffer("perm", perm.long())
        self.register_buffer("inv_perm", torch.argsort(perm), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.inv_perm.copy_(torch.argsort(self.perm))     # the stored permutation's inverse

    def forward(self, x):
        return flat(x)[:, self.perm].reshape(x.shape), x.new_zeros(x.shape[0])

    def inverse(self, z):
        return flat(z)[:, self.inv_perm].reshape(z.shape), z.new_zeros(z.shape[0])


class Reverse(Permutation):
    def __init__(self, features: int):
        super().__init__(torch.arange(features - 1, -1, -1))


class LULinear(Transform):
    """z = P L U x + b; starts as a random permutation (drawn from torch's global RNG, stored in the weights)."""

    def __init__(self, features: int):
        super().__init__()
        self.register_buffer("perm", torch.randperm(features))
        self.register_buffer("inv_perm", torch.argsort(self.perm), persistent=False)
        self.lower = nn.Parameter(torch.zeros(features, features))
        self.upper = nn.Parameter(torch.zeros(features, features))
        self.log_diag = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("eye", torch.eye(features), persistent=False)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.tril(self.lower, -1) + self.eye
        up = torch.triu(self.upper, 1) + torch.diag(torch.exp(self.log_diag))
        return low, up

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.inv_perm.copy_(torch.argsort(self.perm))     # the stored permutation's inverse

    def forward(self, x):
        low, up = self.factors()
        h = flat(x) @ up.T @ low.T                      # L U x, row-wise
        z = h[:, self.perm] + self.bias
        return z.reshape(x.shape), self.log_diag.sum().expand(x.shape[0])

    def inverse(self, z):
        low, up = self.factors()
        h = (flat(z) - self.bias)[:, self.inv_perm].T
        h = torch.linalg.solve_triangular(low, h, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(up, h, upper=True).T
        return x.reshape(z.shape), (-self.log_diag.sum()).expand(z.shape[0])


