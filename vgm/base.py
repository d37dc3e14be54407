"""The model interface shared by every vgm model, and the base class that gives save/load.

The interface (what evaluation relies on, and all it relies on):
    encode(x) -> Distribution over z (event shape (latent_dim,))
    decode(z) -> Distribution over x (event shape = input_shape)
    prior     -> Distribution over z
    sample(n), reconstruct(x)
Training relies on one more method: loss(x) -> dict of per-example tensors whose "loss" entry is minimised;
the other entries (recon, kl, elbo, ... in nats) are logged.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn


class Model(nn.Module):
    """Base class: a model is built from one plain dataclass config, which is what save() writes as JSON."""

    kind: ClassVar[str] = ""          # set by registry.register_model
    Config: ClassVar[type] = object    # the model's config dataclass
    default_iw_samples: ClassVar[int] = 1000   # K of `vgm evaluate` when not given: what a user can wait for
    # The fewest examples one call of loss(x) may see. A loss that couples the examples of a batch (β-TCVAE's
    # estimate of q(z), FactorVAE's permutation, DIP-VAE's batch covariance) sets 2: on a batch of one it would
    # log wrong numbers or fail. The trainer's batch plan merges a last batch smaller than this into the one
    # before it (training and validation, one process or torchrun), so every example is still seen each epoch.
    min_batch: ClassVar[int] = 1
    # A line `vgm train` prints after its summary, about what the logged numbers of this model are and are not
    # ("{run}" becomes the run folder); None: nothing to add. It is the model's own, so no other model prints it.
    training_note: ClassVar[str | None] = None

    def __init__(self, config: Any = None, **kwargs: Any):
        super().__init__()
        if config is None:
            config = self.Config(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save(self, run_dir) -> None:
        """Write model.safetensors and model.json into run_dir (atomically); `vgm.load(run_dir)` reads them."""
        from .checkpoint import save_model
        save_model(self, run_dir)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n draws z ~ prior, decoded to the mean of p(x|z). temperature T scales the prior's spread about its
        mean (z = μ + T·(z₀ − μ)): T < 1 trades diversity for typical samples."""
        prior = self.prior
        z = prior.sample((n,))
        if temperature != 1.0:
            z = prior.mean + temperature * (z - prior.mean)
        return self.decode(z).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z = mean of q(z|x))."""
        return self.decode(self.encode(x).mean).mean
