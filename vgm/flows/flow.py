"""The transform interface and the Flow: a base Normal(0, I) pushed through a sequence of transforms.

Convention (as in nflows): a transform's forward maps data x towards the base, z = f(x), and returns
log|det ∂f/∂x| per example; inverse maps z back to x and returns log|det ∂f⁻¹/∂z| = −(the forward's). Then
    log p(x) = log N(f(x); 0, I) + Σ_t log|det ∂f_t/∂x_{t−1}|        (change of variables, exact)
and sampling runs the inverses in reverse order from z ~ N(0, I).

Conditional flows: a transform with `takes_context = True` has forward(x, context) and inverse(z, context), the
context (N, F) entering its conditioners; the map stays invertible in x for every fixed context, so
p(x | c) is a normalised density for each c. A Flow built with `context_features` (a vector) or `classes` (an
integer label, one-hot encoded) takes the context in log_prob(x, context) and sample(n, context).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from ..errors import VgmError


class Transform(nn.Module):
    """An invertible map on examples of shape (N, *event_shape): forward and inverse, each with log|det J|."""

    takes_context = False    # True: forward(x, context) and inverse(z, context), context (N, F) or None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


def sum_except_batch(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


def forward_all(transforms, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """x through each transform in order (the context to those that take one); Σ log|det| per example."""
    logdet = x.new_zeros(x.shape[0])
    for t in transforms:
        x, ld = t(x, context) if t.takes_context else t(x)
        logdet = logdet + ld
    return x, logdet


def inverse_all(transforms, z: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """z through each transform's inverse in reverse order; Σ log|det| of the inverses per example."""
    logdet = z.new_zeros(z.shape[0])
    for t in reversed(transforms):
        z, ld = t.inverse(z, context) if t.takes_context else t.inverse(z)
        logdet = logdet + ld
    return z, logdet


class Chain(Transform):
    """Transforms applied one after another, as one transform (a scale of a multi-scale flow, say)."""

    takes_context = True

    def __init__(self, transforms: list[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x, context=None):
        return forward_all(self.transforms, x, context)

    def inverse(self, z, context=None):
        return inverse_all(self.transforms, z, context)


def check(ok, message) -> None:
    """Raise VgmError(message()) unless ok: at once for a CPU tensor or a bool; for a GPU tensor by an asynchronous
    device assert instead, so that a training step waits for no host sync (as the cvae checks its labels)."""
    if torch.is_tensor(ok) and ok.device.type != "cpu":
        torch._assert_async(ok, "vgm: bad context")
    elif not bool(ok):
        raise VgmError(message())


def check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise VgmError(f"temperature must be a finite number > 0, got {temperature}")


class Flow(nn.Module):
    """Normal(0, I) on `event_shape`, pushed through `transforms` (applied to the base in reverse order).

    Duck-types torch.distributions.Distribution where that makes sense: log_prob, sample, rsample,
    sample_and_log_prob, event_shape, batch_shape; `base` is the torch Distribution at the bottom.
    context_features > 0: a conditional flow on vectors (N, F); classes > 0: on integer labels in [0, classes)
    (one-hot, F = classes). The transforms' conditioners must have been built for that F.
    """

    def __init__(self, transforms: list[Transform], event_shape: tuple[int, ...], context_features: int = 0,
                 classes: int = 0):
        super().__init__()
        if context_features < 0 or classes < 0 or (classes and context_features not in (0, classes)):
            raise ValueError(f"a flow on labels of {classes} classes has {classes} context features, "
                             f"got context_features={context_features}")
        self.transforms = nn.ModuleList(transforms)
        self.event_shape = torch.Size(event_shape)
        self.batch_shape = torch.Size()
        self.classes = classes
        self.context_features = classes or context_features
        self.register_buffer("base_loc", torch.zeros(self.event_shape), persistent=False)
        self.register_buffer("base_scale", torch.ones(self.event_shape), persistent=False)

    @property
    def conditional(self) -> bool:
        return self.context_features > 0

    @property
    def base(self) -> Distribution:
        return Independent(Normal(self.base_loc, self.base_scale, validate_args=False), len(self.event_shape))

    def context_tensor(self, context, n: int) -> torch.Tensor | None:
        """The context as (n, F) floats: labels are one-hot encoded; one context (a label, or a vector (F,)) is
        repeated n times. Raises VgmError for a missing, unexpected or wrongly sized context."""
        if not self.conditional:
            if context is not None:
                raise VgmError("this flow is not conditional: it takes no context")
            return None
        if context is None:
            what = f"a class label in 0..{self.classes - 1}" if self.classes else f"a vector of {self.context_features}"
            raise VgmError(f"this flow is conditional: give a context ({what})")
        c = torch.as_tensor(context, device=self.base_loc.device)
        if self.classes:
            if c.is_floating_point() and not torch.equal(c, c.round()):
                raise VgmError("class labels must be whole numbers")
            if c.dim() > 1 or (c.dim() == 1 and c.shape[0] not in (1, n)):
                raise VgmError(f"labels: expected one label or {n}, got shape {tuple(c.shape)}")
            c = c.long().reshape(-1)
            check(c.numel() == 0 or (c.min() >= 0) & (c.max() < self.classes),
                  lambda: f"class labels must be in 0..{self.classes - 1}, got {c.min().item()}..{c.max().item()}")
            c = F.one_hot(c, self.classes).to(self.base_loc.dtype)
        else:
            if c.shape[-1:] != (self.context_features,) or c.dim() > 2 or (c.dim() == 2 and c.shape[0] not in (1, n)):
                raise VgmError(f"context: expected {self.context_features} features, one vector or {n}, "
                               f"got shape {tuple(c.shape)}")
            c = c.to(self.base_loc.dtype).reshape(-1, self.context_features)
            check(torch.isfinite(c).all(), lambda: "the context contains NaN or infinite values")
        return c.expand(n, -1) if c.shape[0] == 1 else c

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x) through every transform, and Σ log|det ∂f_t/∂x| per example (context: (N, F) or None)."""
        return forward_all(self.transforms, x, context)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f⁻¹(z), and log|det ∂f⁻¹/∂z| per example."""
        return inverse_all(self.transforms, z, context)

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """Exact log p(x) (or log p(x | context)) per example, for x of shape (*batch, *event_shape)."""
        lead = x.shape[: x.dim() - len(self.event_shape)]
        xf = x.reshape(-1, *self.event_shape)
        z, logdet = self(xf, self.context_tensor(context, xf.shape[0]))
        return (self.base.log_prob(z) + logdet).reshape(lead)

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple = (), context=None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """x ~ p (differentiable in the flow's parameters) and log p(x) from the same pass:
        log p(x) = log N(z) − log|det ∂f⁻¹/∂z|. A conditional flow draws each x given its context (one context
        for every draw, or one per draw)."""
        sample_shape = torch.Size(sample_shape)
        z = self.base.rsample(sample_shape).reshape(-1, *self.event_shape)
        x, logdet = self.inverse(z, self.context_tensor(context, z.shape[0]))
        log_p = self.base.log_prob(z) - logdet
        return x.reshape(*sample_shape, *self.event_shape), log_p.reshape(sample_shape)

    def rsample(self, sample_shape: torch.Size | tuple = (), context=None) -> torch.Tensor:
        return self.rsample_and_log_prob(sample_shape, context)[0]

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple = (), context=None, temperature: float = 1.0) -> torch.Tensor:
        """Draws x = f⁻¹(z), z ~ N(0, T² I): temperature T < 1 gives more typical samples (Kingma & Dhariwal,
        2018); T = 1 samples the flow's density."""
        check_temperature(temperature)
        sample_shape = torch.Size(sample_shape)
        z = temperature * self.base.sample(sample_shape).reshape(-1, *self.event_shape)
        x = self.inverse(z, self.context_tensor(context, z.shape[0]))[0]
        return x.reshape(*sample_shape, *self.event_shape)

    @torch.no_grad()
    def sample_and_log_prob(self, sample_shape: torch.Size | tuple = (), context=None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rsample_and_log_prob(sample_shape, context)
