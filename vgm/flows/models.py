"""The trainable flows: realnvp, maf and nsf, as vgm models (`vgm train realnvp --data moons`).

Each is  x --[dequantize, logit: images only]--> y --[learned transforms]--> z ~ Normal(0, I)  and
    loss(x) = −log p(x) = −[log N(z; 0, I) + Σ log|det J|]           (nats per example, exact)
For images with L grey levels the dequantization and logit Jacobians are counted, so log p(x) is on the
discrete scale of vgm.dequantize (log P(k) ≥ E_u log p(y) − D log L): the same scale as a VAE trained with
--dequantize, and bits/dim as papers report them. For continuous (2-D) data log p(x) is the plain density.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..base import Model
from ..data.dequantize import bits_per_dim, eval_noise
from ..errors import VgmError
from ..registry import register_model
from .actnorm import ActNorm
from .coupling import ARCHS, AffineCoupling, RQSplineCoupling
from .flow import Flow, Transform
from .linear import LULinear, Reverse
from .made import MaskedAffineAutoregressive
from .preprocess import Logit, UniformDequantization

LEVELS_HELP = "grey levels of the data; set from the dataset (0: continuous data, no dequantization)"
ALPHA_HELP = "logit pre-processing: logit(α + (1 − 2α) y) on dequantized images"
ARCH_HELP = "coupling conditioner: MLP on the flattened masked values, or (images) a 3-layer CNN"


class FlowModel(Model):
    """Shared by the flows: pre-processing, the Flow, exact loss/evaluate, sampling and 2-D rendering."""

    default_iw_samples = 0     # a flow's log p(x) is exact: no importance sampling

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        c.input_shape = tuple(c.input_shape)
        if c.depth < 1 or c.hidden < 1:
            raise ValueError(f"depth and hidden must be >= 1, got {c.depth} and {c.hidden}")
        if c.levels == 1 or c.levels < 0:
            raise ValueError(f"levels must be 0 (continuous) or >= 2, got {c.levels}")
        if len(c.input_shape) not in (1, 3):
            raise ValueError(f"flows take vectors (D,) or images (C, H, W), got shape {c.input_shape}")
        self.dequantize = UniformDequantization(c.levels) if c.levels else None
        pre: list[Transform] = [Logit(c.alpha)] if c.levels else []
        self.flow = Flow(pre + self.transforms(c), c.input_shape)

    @property
    def dims(self) -> int:
        return math.prod(self.config.input_shape)

    def transforms(self, c) -> list[Transform]:  # pragma: no cover - interface
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) per example (nats): exact for continuous data; for images, of the dequantized y = (k + u)/L
        on the discrete scale (u = `noise`, or fresh uniform noise)."""
        if tuple(x.shape[1:]) != self.config.input_shape:
            raise VgmError(f"{self.kind} models examples of shape {self.config.input_shape}, "
                           f"got {tuple(x.shape[1:])}")
        if self.dequantize is None:
            return self.flow.log_prob(x)
        y, logdet = self.dequantize(x, noise)
        return self.flow.log_prob(y) + logdet

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """loss = −log p(x)."""
        lp = self.log_prob(x)
        return {"loss": -lp, "log_px": lp}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, iw_samples: int = 0, batch_size: int = 500) -> dict:
        """Mean exact log p(x) (nats/example) and bits/dim; images use vgm.dequantize's fixed evaluation noise.
        iw_samples is not used: a flow's density needs no importance sampling."""
        self.eval()
        if not torch.isfinite(x).all():
            raise VgmError("the data contain NaN or infinite values")
        noise = eval_noise(x) if self.dequantize is not None else None
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            total += self.log_prob(x[i:i + batch_size], None if noise is None else noise[i:i + batch_size]).sum().item()
        lp = total / x.shape[0]
        out = {"n_examples": x.shape[0], "dims": self.dims, "log_px": lp, "iw_samples": 0,
               "units": {"log_px": "nats", "bits_per_dim": "bits/dim", "levels": "grey levels"}}
        if self.config.levels:
            out.update(bits_per_dim=bits_per_dim(lp, self.dims), levels=self.config.levels,
                       note=f"log_px is exact (change of variables), on the discrete scale of the "
                            f"{self.config.levels} grey levels (dequantized with a fixed noise draw)")
        else:
            out.update(bits_per_dim=None, note="log_px is the exact log density of continuous values (nats): "
                                               "not the log of a probability, so no bits/dim")
        return out

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n draws x = f⁻¹(z), z ~ N(0, T² I) (T = temperature; Kingma & Dhariwal, 2018, sample at T < 1);
        images are quantized back to the data's grey levels."""
        z = temperature * self.flow.base.sample((n,)).reshape(n, *self.config.input_shape)
        y = self.flow.inverse(z)[0]
        return y if self.dequantize is None else self.dequantize.inverse(y)[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise VgmError(f"{self.kind} is a flow: f⁻¹(f(x)) = x exactly, there is no reconstruction to show")

    def render_samples(self, samples: torch.Tensor, path) -> None:
        """2-D data: the model's density as a heat map beside its samples; images: a grid."""
        if self.config.input_shape != (2,):
            from ..plots import save_examples
            save_examples(path, samples, title=f"{self.kind}: {len(samples)} samples")
            return
        from .plots import save_density_and_samples
        save_density_and_samples(path, self, samples)


@dataclass
class RealNVPConfig:
    input_shape: tuple[int, ...] = (2,)
    depth: int = field(default=8, metadata={"help": "coupling layers (each preceded by ActNorm)"})
    hidden: int = field(default=64, metadata={"help": "conditioner width (MLP units, or CNN channels)"})
    arch: str = field(default="mlp", metadata={"choices": ARCHS, "help": ARCH_HELP})
    levels: int = field(default=0, metadata={"help": LEVELS_HELP})
    alpha: float = field(default=0.05, metadata={"help": ALPHA_HELP})


@register_model("realnvp", default_data="moons")
class RealNVP(FlowModel):
    """RealNVP (Dinh et al., 2017): affine couplings with alternating halves / checkerboard masks, and ActNorm."""

    Config = RealNVPConfig

    def transforms(self, c):
        ts: list[Transform] = []
        for i in range(c.depth):
            ts += [ActNorm(c.input_shape), AffineCoupling(c.input_shape, c.hidden, i, c.arch)]
        return ts


@dataclass
class MAFConfig:
    input_shape: tuple[int, ...] = (2,)
    depth: int = field(default=5, metadata={"help": "MADE layers (order reversed between them)"})
    hidden: int = field(default=128, metadata={"help": "MADE hidden units (two hidden layers)"})
    levels: int = field(default=0, metadata={"help": LEVELS_HELP})
    alpha: float = field(default=0.05, metadata={"help": ALPHA_HELP})


@register_model("maf", default_data="moons")
class MAF(FlowModel):
    """Masked autoregressive flow (Papamakarios et al., 2017): MADE affine layers, order reversed in between."""

    Config = MAFConfig

    def transforms(self, c):
        ts: list[Transform] = []
        for i in range(c.depth):
            ts.append(MaskedAffineAutoregressive(self.dims, c.hidden))
            if i < c.depth - 1:
                ts.append(Reverse(self.dims))
        return ts


@dataclass
class NSFConfig:
    input_shape: tuple[int, ...] = (2,)
    depth: int = field(default=4, metadata={"help": "spline coupling layers (each with ActNorm and an LU linear)"})
    hidden: int = field(default=64, metadata={"help": "conditioner width (MLP units, or CNN channels)"})
    arch: str = field(default="mlp", metadata={"choices": ARCHS, "help": ARCH_HELP})
    bins: int = field(default=8, metadata={"help": "spline bins K"})
    tail_bound: float = field(default=5.0, metadata={"help": "the spline acts on [-B, B]; identity outside"})
    levels: int = field(default=0, metadata={"help": LEVELS_HELP})
    alpha: float = field(default=0.05, metadata={"help": ALPHA_HELP})


@register_model("nsf", default_data="moons")
class NSF(FlowModel):
    """Neural spline flow (Durkan et al., 2019): rational-quadratic spline couplings, ActNorm, LU linear layers."""

    Config = NSFConfig

    def transforms(self, c):
        ts: list[Transform] = []
        for i in range(c.depth):
            ts += [ActNorm(c.input_shape), RQSplineCoupling(c.input_shape, c.hidden, i, c.bins, c.tail_bound, c.arch),
                   LULinear(self.dims)]
        return ts
