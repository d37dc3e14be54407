"""ActNorm (Kingma & Dhariwal, 2018): a per-channel (images) or per-feature (vectors) affine map
    z = (x − b) · exp(−s),    log|det ∂z/∂x| = −(H·W) Σ_c s_c
whose b and s are set from the first batch it sees in training (data-dependent init: z has zero mean and unit
variance there), then trained like any parameter. A channel whose values in that batch have a standard deviation
below STD_FLOOR (constant there, e.g. a batch of one vector) is only centred, s = 0: the batch says nothing of its
spread, and s = log(~0) would blow a later shift of 0.1 up to 1e5. The `initialized` buffer is saved with the
weights, so a loaded or resumed model never re-initialises.
"""
from __future__ import annotations

import torch
from torch import nn

from .flow import Transform

STD_FLOOR = 1e-3


class ActNorm(Transform):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        pshape = (shape[0],) + (1,) * (len(shape) - 1)          # one per channel (or feature)
        self.loc = nn.Parameter(torch.zeros(pshape))
        self.log_scale = nn.Parameter(torch.zeros(pshape))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))                     # all but the channel axis
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        std = var.sqrt()
        self.loc.copy_(mean.reshape(self.loc.shape))
        self.log_scale.copy_(torch.where(std < STD_FLOOR, 0.0, std.log()).reshape(self.loc.shape))
        self.initialized.fill_(1)

    def _logdet(self, n: int) -> torch.Tensor:
        per_channel = 1
        for s in self.shape[1:]:
            per_channel *= s
        return (-self.log_scale.sum() * per_channel).expand(n)

    def forward(self, x):
        if not self.initialized and self.training and x.shape[0] > 0:
            self.initialize(x)
        return (x - self.loc) * torch.exp(-self.log_scale), self._logdet(x.shape[0])

    def inverse(self, z):
        return z * torch.exp(self.log_scale) + self.loc, -self._logdet(z.shape[0])
