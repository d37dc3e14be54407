"""β-VAE (Higgins et al., 2017) and its capacity-annealed form (Burgess et al., 2018).

    β-VAE:     loss = −E_q[log p(x|z)] + β · KL(q(z|x) ‖ p(z))
    capacity:  loss = −E_q[log p(x|z)] + γ · |KL − C|,   C = C_max · min(1, t / T)   (t: training steps so far)
β > 1 buys a more factorised posterior with reconstruction error; capacity annealing lets the KL grow to
C_max nats at a steady rate instead, so the code admits information one factor at a time.
Defaults are the standard dSprites set-up: 4 convolutions 32-32-64-64 (k4 s2; 3 for 32x32 images), a
256-unit layer, 10 latent dimensions, a Bernoulli decoder.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..distributed import gather_rows
from ..elbo import elbo
from ..registry import register_model
from .vae import VAE, VAEConfig


@dataclass
class BetaVAEConfig(VAEConfig):
    input_shape: tuple[int, ...] = (1, 64, 64)
    latent_dim: int = 10
    arch: str = "conv"
    hidden: tuple[int, ...] = (256,)
    beta: float = field(default=4.0, metadata={"help": "weight of the KL term (unused when capacity > 0)"})
    capacity: float = field(default=0.0, metadata={"help": "C_max in nats; > 0 trains on γ·|KL − C| instead"})
    capacity_steps: int = field(default=100000, metadata={"help": "steps over which C rises linearly to C_max"})
    gamma: float = field(default=1000.0, metadata={"help": "γ of the capacity-annealed loss"})


@register_model("betavae", data=("images",), default_data="dsprites32")
class BetaVAE(VAE):
    """β-VAE; with capacity > 0, Burgess et al.'s γ·|KL − C| with C raised linearly to C_max."""

    Config = BetaVAEConfig
    default_iw_samples = 50     # conv decoders on 64x64 / 32x32 images: K = 50 takes about a minute on a CPU

    def __init__(self, config: BetaVAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if c.dequantize:
            raise ValueError(f"{self.kind} models binary images (dSprites); dequantize does not apply")
        if c.capacity < 0 or c.capacity_steps < 1 or c.gamma < 0:
            raise ValueError("capacity and gamma must be >= 0 and capacity_steps >= 1")
        # t, saved with the weights and the training checkpoint, so that --resume continues the schedule exactly
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def capacity_now(self) -> torch.Tensor:
        """C(t) = C_max · min(1, t / T), as a tensor (no sync)."""
        c = self.config
        return c.capacity * torch.clamp(self.step.float() / c.capacity_steps, max=1.0)

    def current_capacity(self) -> float:
        return self.capacity_now().item()

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example: recon, kl, elbo, and loss = recon + β·kl, or the annealed loss (see module docstring).

        γ·|mean KL − C| acts on the batch's mean KL (as in Burgess et al.); per example it is written
        γ·sign(mean KL − C)·(kl_i − C), whose batch mean is exactly γ·|mean KL − C|, gradient included.
        """
        c = self.config
        terms = elbo(self, x)
        if c.capacity > 0:
            cap = self.capacity_now()
            side = torch.sign(gather_rows(terms["kl"].detach())[0].mean() - cap)    # the global batch's mean KL
            terms["loss"] = terms["recon"] + c.gamma * side * (terms["kl"] - cap)
            terms["capacity"] = cap.expand_as(terms["kl"])
            if self.training and torch.is_grad_enabled():
                self.step += 1
        else:
            terms["loss"] = terms["recon"] + c.beta * terms["kl"]
        return terms
