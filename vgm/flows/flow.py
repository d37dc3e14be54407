"""The transform interface and the Flow: a base Normal(0, I) pushed through a sequence of transforms.

Convention (as in nflows): a transform's forward maps data x towards the base, z = f(x), and returns
log|det ∂f/∂x| per example; inverse maps z back to x and returns log|det ∂f⁻¹/∂z| = −(the forward's). Then
    log p(x) = log N(f(x); 0, I) + Σ_t log|det ∂f_t/∂x_{t−1}|        (change of variables, exact)
and sampling runs the inverses in reverse order from z ~ N(0, I).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal


class Transform(nn.Module):
    """An invertible map on examples of shape (N, *event_shape): forward and inverse, each with log|det J|."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


def sum_except_batch(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


class Flow(nn.Module):
    """Normal(0, I) on `event_shape`, pushed through `transforms` (applied to the base in reverse order).

    Duck-types torch.distributions.Distribution where that makes sense: log_prob, sample, rsample,
    sample_and_log_prob, event_shape, batch_shape; `base` is the torch Distribution at the bottom.
    """

    def __init__(self, transforms: list[Transform], event_shape: tuple[int, ...]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        self.event_shape = torch.Size(event_shape)
        self.batch_shape = torch.Size()
        self.register_buffer("base_loc", torch.zeros(self.event_shape), persistent=False)
        self.register_buffer("base_scale", torch.ones(self.event_shape), persistent=False)

    @property
    def base(self) -> Distribution:
        return Independent(Normal(self.base_loc, self.base_scale, validate_args=False), len(self.event_shape))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x) through every transform, and Σ log|det ∂f_t/∂x| per example."""
        logdet = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ld = t(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f⁻¹(z), and log|det ∂f⁻¹/∂z| per example."""
        logdet = z.new_zeros(z.shape[0])
        for t in reversed(self.transforms):
            z, ld = t.inverse(z)
            logdet = logdet + ld
        return z, logdet

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per example, for x of shape (*batch, *event_shape)."""
        lead = x.shape[: x.dim() - len(self.event_shape)]
        z, logdet = self(x.reshape(-1, *self.event_shape))
        return (self.base.log_prob(z) + logdet).reshape(lead)

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """x ~ p (differentiable in the flow's parameters) and log p(x) from the same pass:
        log p(x) = log N(z) − log|det ∂f⁻¹/∂z|."""
        sample_shape = torch.Size(sample_shape)
        z = self.base.rsample(sample_shape).reshape(-1, *self.event_shape)
        x, logdet = self.inverse(z)
        log_p = self.base.log_prob(z) - logdet
        return x.reshape(*sample_shape, *self.event_shape), log_p.reshape(sample_shape)

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        return self.rsample(sample_shape)

    @torch.no_grad()
    def sample_and_log_prob(self, sample_shape: torch.Size | tuple = ()) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rsample_and_log_prob(sample_shape)
