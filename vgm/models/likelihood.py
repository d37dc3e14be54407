"""Decoder likelihoods p(x|z): Bernoulli, continuous Bernoulli, Gaussian (fixed or learned σ), discretised logistic."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Independent, Normal

from .discretized_logistic import DiscretizedLogistic

LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian", "logistic")
PARAMS_PER_VALUE = {"bernoulli": 1, "continuous-bernoulli": 1, "gaussian": 1, "logistic": 2}
MIN_LOG_SCALE = -7.0   # the discretised logistic's log s is clamped here (as in PixelCNN++): s ≥ 9e-4, a bin is 1/255
SIGMA_FLOOR = 1e-4   # a learned σ is softplus(raw) + SIGMA_FLOOR: it cannot shrink to 0 and blow up log p(x|z)


class Likelihood(nn.Module):
    """Turns decoder outputs into a Distribution over x with event shape = input_shape.

    bernoulli:            Π Bernoulli(x_i; sigmoid(logit_i)): a probability of binary data; on grey levels in
                          [0, 1] (common practice) it is a cross-entropy, not a normalised density.
    continuous-bernoulli: Π ContinuousBernoulli(x_i; sigmoid(logit_i)) (Loaiza-Ganem & Cunningham, 2019): the
                          Bernoulli form normalised into a density on [0, 1].
    gaussian:             Π Normal(x_i; mean_i, σ²); σ fixed, or one learned σ shared by all values.
    logistic:             Π DiscretizedLogistic(x_i; μ_i, s_i) over the data's L grey levels (`levels`): a
                          probability of the discrete values, so −log p / (D ln 2) is bits/dim as papers report.
    A fixed σ is exactly the configured one (taken from the config, not stored with the weights); a learned σ is
    softplus(raw_sigma) + SIGMA_FLOOR, starts at the configured value and never goes below the floor.
    """

    def __init__(self, kind: str, event_dims: int, sigma: float = 0.1, learn_sigma: bool = False, levels: int = 0):
        super().__init__()
        if kind not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {kind!r} (choose {', '.join(LIKELIHOODS)})")
        if kind == "logistic" and levels < 2:
            raise ValueError("the discretised logistic needs data with grey levels (levels >= 2: digits, mnist, "
                             f"8-bit images), got levels {levels}")
        self.levels = levels
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
        """params: (..., C·k, H, W) decoder outputs, k = PARAMS_PER_VALUE[kind] (logistic: μ channels, then log s)."""
        if self.kind == "bernoulli":
            base = Bernoulli(logits=params, validate_args=False)  # [0, 1] values allowed, as is common
        elif self.kind == "continuous-bernoulli":
            base = ContinuousBernoulli(logits=params, validate_args=False)
        elif self.kind == "logistic":
            loc, log_scale = params.chunk(2, dim=-len(params.shape[-self.event_dims:]))
            base = DiscretizedLogistic(torch.sigmoid(loc), log_scale.clamp(min=MIN_LOG_SCALE), levels=self.levels)
        else:
            sigma = self.sigma
            base = Normal(params, sigma.expand_as(params) if self.learn_sigma else sigma, validate_args=False)
        return Independent(base, self.event_dims)
