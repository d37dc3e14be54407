"""Decoder likelihoods p(x|z): Bernoulli on logits, or Gaussian with fixed or learned σ."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

LIKELIHOODS = ("bernoulli", "gaussian")
SIGMA_FLOOR = 1e-4   # a learned σ is softplus(raw) + SIGMA_FLOOR: it cannot shrink to 0 and blow up log p(x|z)


class Likelihood(nn.Module):
    """Turns decoder outputs into a Distribution over x with event shape = input_shape.

    bernoulli: p(x|z) = Π Bernoulli(x_i; sigmoid(logit_i)), for binary (or [0, 1]) data.
    gaussian:  p(x|z) = Π Normal(x_i; mean_i, σ²); σ fixed, or one learned σ shared by all values.
    A fixed σ is exactly the configured one (taken from the config, not stored with the weights); a learned σ is
    softplus(raw_sigma) + SIGMA_FLOOR, starts at the configured value and never goes below the floor.
    """

    def __init__(self, kind: str, event_dims: int, sigma: float = 0.1, learn_sigma: bool = False):
        super().__init__()
        if kind not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {kind!r} (choose {' or '.join(LIKELIHOODS)})")
        if not 0 < sigma < float("inf"):
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if learn_sigma and not sigma > SIGMA_FLOOR:
            raise ValueError(f"a learned sigma starts above its floor {SIGMA_FLOOR}, got {sigma}")
        self.kind, self.event_dims, self.learn_sigma = kind, event_dims, learn_sigma
        if learn_sigma:
            s = sigma - SIGMA_FLOOR
            self.raw_sigma = nn.Parameter(torch.tensor(s + math.log(-math.expm1(-s))))  # inverse softplus
        else:
            self.fixed_sigma = float(sigma)   # a Python number: the same σ in whatever dtype the decoder computes

    @property
    def sigma(self) -> torch.Tensor | float:
        return F.softplus(self.raw_sigma) + SIGMA_FLOOR if self.learn_sigma else self.fixed_sigma

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if not self.learn_sigma:      # weights saved before σ was taken from the config stored it as raw_sigma
            state_dict.pop(prefix + "raw_sigma", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, params: torch.Tensor) -> Distribution:
        if self.kind == "bernoulli":
            base = Bernoulli(logits=params, validate_args=False)  # [0, 1] values allowed, as is common
        else:
            sigma = self.sigma
            base = Normal(params, sigma.expand_as(params) if self.learn_sigma else sigma, validate_args=False)
        return Independent(base, self.event_dims)
