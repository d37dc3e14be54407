"""Decoder likelihoods p(x|z): Bernoulli on logits, or Gaussian with fixed or learned σ."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

LIKELIHOODS = ("bernoulli", "gaussian")


class Likelihood(nn.Module):
    """Turns decoder outputs into a Distribution over x with event shape = input_shape.

    bernoulli: p(x|z) = Π Bernoulli(x_i; sigmoid(logit_i)), for binary (or [0, 1]) data.
    gaussian:  p(x|z) = Π Normal(x_i; mean_i, σ²); σ fixed, or one learned σ shared by all values.
    """

    def __init__(self, kind: str, event_dims: int, sigma: float = 0.1, learn_sigma: bool = False):
        super().__init__()
        if kind not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {kind!r} (choose {' or '.join(LIKELIHOODS)})")
        if not 0 < sigma < float("inf"):
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.kind, self.event_dims, self.learn_sigma = kind, event_dims, learn_sigma
        raw = torch.tensor(sigma + math.log(-math.expm1(-sigma)))  # inverse softplus, stable for any σ > 0
        if learn_sigma:
            self.raw_sigma = nn.Parameter(raw)
        else:
            self.register_buffer("raw_sigma", raw)

    @property
    def sigma(self) -> torch.Tensor:
        return F.softplus(self.raw_sigma) + 1e-4

    def forward(self, params: torch.Tensor) -> Distribution:
        if self.kind == "bernoulli":
            base = Bernoulli(logits=params, validate_args=False)  # [0, 1] values allowed, as is common
        else:
            base = Normal(params, self.sigma.expand_as(params), validate_args=False)
        return Independent(base, self.event_dims)
