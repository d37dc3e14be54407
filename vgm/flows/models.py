"""The trainable flows: realnvp, maf, nsf and glow, as vgm models (`vgm train realnvp --data moons`).

Each is  x --[dequantize, logit: images only]--> y --[learned transforms]--> z ~ Normal(0, I)  and
    loss(x) = −log p(x) = −[log N(z; 0, I) + Σ log|det J|]           (nats per example, exact)
For images with L grey levels the dequantization and logit Jacobians are counted, so log p(x) is on the
discrete scale of vgm.dequantize (log P(k) ≥ E_u log p(y) − D log L): the same scale as a VAE trained with
--dequantize, and bits/dim as papers report them. For continuous (2-D) data log p(x) is the plain density.

Conditional (--conditional): every conditioner also sees the one-hot class label y ∈ 0..C−1, so the model is
p(x | y) (`conditional = True`: the trainer calls loss(x, y), vgm.evaluate passes the labels, sample(n, label=y)).
Called without labels, evaluate() scores the marginal p(x) = (1/C) Σ_y p(x | y) (exact, C passes), and sample()
cycles through the labels, as the cvae does.
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
from .autoregressive import MaskedRQSAutoregressive
from .conv1x1 import InvertibleConv1x1
from .coupling import ARCHS, AffineChannelCoupling, AffineCoupling, RQSplineCoupling
from .flow import Chain, Flow, Transform, check_temperature
from .linear import LULinear, Reverse
from .made import MaskedAffineAutoregressive
from .multiscale import MultiScale, max_squeezes, squeeze_chain, squeezed
from .preprocess import Logit, UniformDequantization

LEVELS_HELP = "grey levels of the data; set from the dataset (0: continuous data, no dequantization)"
ALPHA_HELP = "logit pre-processing: logit(α + (1 − 2α) y) on dequantized images"
ARCH_HELP = "coupling conditioner: MLP on the flattened masked values, or (images) a 3-layer CNN"
CONDITIONAL_HELP = "model p(x | label): the conditioners see the one-hot class label (labelled data)"
NUM_CLASSES_HELP = "K, the classes of the labels (with --conditional), for data that do not name their classes"
CLASS_NAMES_HELP = "class names (set from a labelled folder); their number is K"


def check_levels_fit(shape: tuple[int, ...], times: int, option: str, extra: int = 0) -> None:
    """Refuse `times` squeezes of an image that cannot take them, naming the largest valid value of `option`."""
    if len(shape) != 3:
        raise ValueError(f"{option.lstrip('-')} needs images (C, H, W), got shape {shape}")
    h, w = shape[1:]
    most = max_squeezes(h, w)
    if times > most:
        raise ValueError(f"images of {h}x{w} can be squeezed (height and width halved exactly) at most {most} "
                         f"times ({squeeze_chain(h, w, most)}): {option} {times + extra} is too many, the largest "
                         f"valid is {option} {most + extra}")


class FlowModel(Model):
    """Shared by the flows: pre-processing, the Flow, exact loss/evaluate, sampling and 2-D rendering."""

    default_iw_samples = 0     # a flow's log p(x) is exact: no importance sampling

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        c.input_shape = tuple(c.input_shape)
        for name in ("depth", "hidden", "levels_l", "steps_k", "width", "scales"):
            if getattr(c, name, 1) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(c, name)}")
        if c.levels == 1 or c.levels < 0:
            raise ValueError(f"levels must be 0 (continuous) or >= 2, got {c.levels}")
        if len(c.input_shape) not in (1, 3):
            raise ValueError(f"flows take vectors (D,) or images (C, H, W), got shape {c.input_shape}")
        c.classes = tuple(c.classes)
        if c.conditional:
            if self.n_classes < 2:
                raise ValueError(f"a conditional flow needs at least 2 classes, got {self.n_classes}")
        self.dequantize = UniformDequantization(c.levels) if c.levels else None
        pre: list[Transform] = [Logit(c.alpha)] if c.levels else []
        self.flow = Flow(pre + self.transforms(c), c.input_shape, classes=self.n_classes)

    @property
    def dims(self) -> int:
        return math.prod(self.config.input_shape)

    @property
    def conditional(self) -> bool:
        """True when the model is p(x | label): the trainer must call loss(x, labels)."""
        return bool(self.config.conditional)

    @property
    def n_classes(self) -> int:
        """K, the classes of the label a conditional model takes (its conditioners' context features); else 0."""
        c = self.config
        return (len(c.classes) or c.num_classes) if self.conditional else 0

    def transforms(self, c) -> list[Transform]:  # pragma: no cover - interface
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, noise: torch.Tensor | None = None, y=None) -> torch.Tensor:
        """log p(x) (conditional: log p(x | y), y the labels) per example (nats): exact for continuous data; for
        images, of the dequantized (k + u)/L on the discrete scale (u = `noise`, or fresh uniform noise)."""
        if tuple(x.shape[1:]) != self.config.input_shape:
            raise VgmError(f"{self.kind} models examples of shape {self.config.input_shape}, "
                           f"got {tuple(x.shape[1:])}")
        if self.dequantize is None:
            return self.flow.log_prob(x, y)
        v, logdet = self.dequantize(x, noise)
        return self.flow.log_prob(v, y) + logdet

    def marginal_log_prob(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """A conditional model's log p(x) = log (1/K) Σ_y p(x | y): the label marginalised under a uniform p(y)."""
        if noise is None and self.dequantize is not None:
            noise = torch.rand_like(x)                         # one dequantized x for every label's term
        per_label = torch.stack([self.log_prob(x, noise, torch.full((x.shape[0],), k, device=x.device))
                                 for k in range(self.n_classes)])
        return torch.logsumexp(per_label, 0) - math.log(self.n_classes)

    def loss(self, x: torch.Tensor, y=None) -> dict[str, torch.Tensor]:
        """loss = −log p(x) (conditional: −log p(x | y), y the batch's labels)."""
        lp = self.log_prob(x, y=y)
        return {"loss": -lp, "log_px": lp}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, iw_samples: int = 0, batch_size: int = 500, labels=None) -> dict:
        """Mean exact log p(x) (nats/example) and bits/dim; images use vgm.dequantize's fixed evaluation noise.
        iw_samples is not used: a flow's density needs no importance sampling. A conditional model scores
        log p(x | label) with the labels given, else the marginal log p(x) over a uniform label."""
        self.eval()
        if not torch.isfinite(x).all():
            raise VgmError("the data contain NaN or infinite values")
        noise = eval_noise(x) if self.dequantize is not None else None
        if labels is not None:
            labels = torch.as_tensor(labels, device=x.device)
            if labels.shape[:1] != x.shape[:1]:
                raise VgmError(f"{x.shape[0]} examples but {labels.shape[0] if labels.dim() else 1} labels")
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            xb, nb = x[i:i + batch_size], None if noise is None else noise[i:i + batch_size]
            if self.conditional and labels is None:
                total += self.marginal_log_prob(xb, nb).sum().item()
            else:
                total += self.log_prob(xb, nb, None if labels is None else labels[i:i + batch_size]).sum().item()
        lp = total / x.shape[0]
        out = {"n_examples": x.shape[0], "dims": self.dims, "log_px": lp, "iw_samples": 0,
               "units": {"log_px": "nats", "bits_per_dim": "bits/dim", "levels": "grey levels"}}
        if self.conditional:
            out["conditional"] = ("log p(x | label), the labels given" if labels is not None else
                                  f"log p(x) = log mean over the {self.n_classes} labels of p(x | label)")
        if self.config.levels:
            out.update(bits_per_dim=bits_per_dim(lp, self.dims), levels=self.config.levels,
                       note=f"log_px is exact (change of variables), on the discrete scale of the "
                            f"{self.config.levels} grey levels (dequantized with a fixed noise draw)")
        else:
            out.update(bits_per_dim=None, note="log_px is the exact log density of continuous values (nats): "
                                               "not the log of a probability, so no bits/dim")
        return out

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, label=None) -> torch.Tensor:
        """n draws x = f⁻¹(z), z ~ N(0, T² I) (T = temperature; Kingma & Dhariwal, 2018, sample at T < 1);
        images are quantized back to the data's grey levels. A conditional model draws given `label` (one for
        all, or one per draw), or with the labels cycling through the classes when it is None (as the cvae)."""
        check_temperature(temperature)
        if self.conditional and label is None:
            label = torch.arange(n, device=self.flow.base_loc.device) % self.n_classes
        v = self.flow.sample((n,), label, temperature)
        return v if self.dequantize is None else self.dequantize.inverse(v)[0]

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
    depth: int = field(default=8, metadata={"help": "coupling layers (each preceded by ActNorm); not used with "
                                                    "--multiscale, whose scales have the paper's fixed layers"})
    hidden: int = field(default=64, metadata={"help": "conditioner width (MLP units, or CNN channels)"})
    arch: str = field(default="auto", metadata={"choices": ("auto",) + ARCHS,
                                                "help": ARCH_HELP + "; auto: mlp, or conv with --multiscale"})
    multiscale: bool = field(default=False, metadata={
        "help": "images: the multi-scale architecture of Dinh et al. 2017 (per scale 3 checkerboard couplings, "
                "squeeze, 3 channel-wise couplings, half factored out; 4 checkerboard couplings at the last)"})
    scales: int = field(default=3, metadata={"help": "scales with --multiscale (each but the last halves the "
                                                     "image: at most 1 + the times it can be halved)"})
    levels: int = field(default=0, metadata={"help": LEVELS_HELP})
    alpha: float = field(default=0.05, metadata={"help": ALPHA_HELP})
    conditional: bool = field(default=False, metadata={"help": CONDITIONAL_HELP})
    num_classes: int = field(default=10, metadata={"help": NUM_CLASSES_HELP})
    classes: tuple[str, ...] = field(default=(), metadata={"help": CLASS_NAMES_HELP})


@register_model("realnvp", default_data="moons")
class RealNVP(FlowModel):
    """RealNVP (Dinh et al., 2017): affine couplings with alternating halves / checkerboard masks, and ActNorm;
    --multiscale: the paper's multi-scale architecture on images (squeeze, channel masks, factor-out)."""

    Config = RealNVPConfig

    def transforms(self, c):
        arch = c.arch if c.arch != "auto" else ("conv" if c.multiscale else "mlp")
        cf = self.n_classes
        if not c.multiscale:
            ts: list[Transform] = []
            for i in range(c.depth):
                ts += [ActNorm(c.input_shape), AffineCoupling(c.input_shape, c.hidden, i, arch, cf)]
            return ts
        check_levels_fit(c.input_shape, c.scales - 1, "--scales", extra=1)

        def checkerboard(shape, n):
            return [t for i in range(n) for t in (ActNorm(shape), AffineCoupling(shape, c.hidden, i, arch, cf))]

        def scale(shape, s) -> Transform:
            if s == c.scales - 1:                     # the last scale: 4 checkerboard couplings, N(0, I) on all
                return Chain(checkerboard(shape, 4))
            sq = squeezed(shape)
            channel = [t for i in range(3) for t in (ActNorm(sq), AffineChannelCoupling(sq, c.hidden, i, cf))]
            return MultiScale(shape, checkerboard(shape, 3), channel, scale((sq[0] // 2, *sq[1:]), s + 1),
                              prior=False)
        return [scale(c.input_shape, 0)]


@dataclass
class MAFConfig:
    input_shape: tuple[int, ...] = (2,)
    depth: int = field(default=5, metadata={"help": "MADE layers (order reversed between them)"})
    hidden: int = field(default=128, metadata={"help": "MADE hidden units (two hidden layers)"})
    levels: int = field(default=0, metadata={"help": LEVELS_HELP})
    alpha: float = field(default=0.05, metadata={"help": ALPHA_HELP})
    conditional: bool = field(default=False, metadata={"help": CONDITIONAL_HELP})
    num_classes: int = field(default=10, metadata={"help": NUM_CLASSES_HELP})
    classes: tuple[str, ...] = field(default=(), metadata={"help": CLASS_NAMES_HELP})


@register_model("maf", default_data="moons")
class MAF(FlowModel):
    """Masked autoregressive flow (Papamakarios et al., 2017): MADE affine layers, order reversed in between."""

    Config = MAFConfig

    def transforms(self, c):
        ts: list[Transform] = []
        for i in range(c.depth):
            ts.append(MaskedAffineAutoregressive(self.dims, c.hidden, self.n_classes))
            if i < c.depth - 1:
                ts.append(Reverse(self.dims))
        return ts


@dataclass
class NSFConfig:
    input_shape: tuple[int, ...] = (2,)
    depth: int = field(default=4, metadata={"help": "spline layers (couplings: each with ActNorm and an LU linear)"})
    hidden: int = field(default=64, metadata={"help": "conditioner width (MLP units, or CNN channels)"})
    arch: str = field(default="mlp", metadata={"choices": ARCHS, "help": ARCH_HELP + " (couplings)"})
    autoregressive: bool = field(default=False, metadata={
        "help": "RQ-NSF (AR) of Durkan et al. 2019: splines whose parameters come from a MADE (two hidden "
                "layers of --hidden units), order reversed between layers, instead of coupling layers"})
    dropout: float = field(default=0.0, metadata={
        "help": "with --autoregressive: dropout on the MADE's hidden units in training (a regulariser for small "
                "data sets)"})
    bins: int = field(default=8, metadata={"help": "spline bins K"})
    tail_bound: float = field(default=5.0, metadata={"help": "the spline acts on [-B, B]; identity outside"})
    levels: int = field(default=0, metadata={"help": LEVELS_HELP})
    alpha: float = field(default=0.05, metadata={"help": ALPHA_HELP})
    conditional: bool = field(default=False, metadata={"help": CONDITIONAL_HELP})
    num_classes: int = field(default=10, metadata={"help": NUM_CLASSES_HELP})
    classes: tuple[str, ...] = field(default=(), metadata={"help": CLASS_NAMES_HELP})


@register_model("nsf", default_data="moons")
class NSF(FlowModel):
    """Neural spline flow (Durkan et al., 2019): rational-quadratic spline couplings, ActNorm, LU linear layers;
    --autoregressive: RQ-NSF (AR), MADE-conditioned splines with the order reversed in between."""

    Config = NSFConfig

    def transforms(self, c):
        ts: list[Transform] = []
        cf = self.n_classes
        if c.dropout and not c.autoregressive:
            raise ValueError("--dropout is an option of the autoregressive nsf (--autoregressive)")
        if c.autoregressive:
            for i in range(c.depth):
                ts.append(MaskedRQSAutoregressive(self.dims, c.hidden, c.bins, c.tail_bound, 2, cf, c.dropout))
                if i < c.depth - 1:
                    ts.append(Reverse(self.dims))
            return ts
        for i in range(c.depth):
            ts += [ActNorm(c.input_shape),
                   RQSplineCoupling(c.input_shape, c.hidden, i, c.bins, c.tail_bound, c.arch, cf),
                   LULinear(self.dims)]
        return ts


@dataclass
class GlowConfig:
    input_shape: tuple[int, ...] = (1, 8, 8)
    levels_l: int = field(default=2, metadata={
        "help": "levels L: each squeezes the image (height and width halved), and all but the last factor out "
                "half the channels"})
    steps_k: int = field(default=8, metadata={
        "help": "steps K per level: ActNorm, invertible 1x1 convolution, affine coupling"})
    width: int = field(default=64, metadata={"help": "channels of the coupling CNNs (3x3, 1x1, 3x3)"})
    levels: int = field(default=0, metadata={"help": LEVELS_HELP})
    alpha: float = field(default=0.05, metadata={"help": ALPHA_HELP})
    conditional: bool = field(default=False, metadata={"help": CONDITIONAL_HELP})
    num_classes: int = field(default=10, metadata={"help": NUM_CLASSES_HELP})
    classes: tuple[str, ...] = field(default=(), metadata={"help": CLASS_NAMES_HELP})


@register_model("glow", data=("images",), default_data="digits")
class Glow(FlowModel):
    """Glow (Kingma & Dhariwal, 2018): L levels of [squeeze -> K x (ActNorm -> invertible 1x1 convolution ->
    affine coupling) -> split], each split-off half under a learned Gaussian conditioned on the kept half, the
    last level's output under a learned Gaussian (conditional: on the label too); sampling at a temperature."""

    Config = GlowConfig

    def transforms(self, c):
        check_levels_fit(c.input_shape, c.levels_l, "--levels-l")
        cf = self.n_classes

        def level(shape, l) -> Transform:
            sq = squeezed(shape)
            steps = [t for _ in range(c.steps_k)
                     for t in (ActNorm(sq), InvertibleConv1x1(sq), AffineChannelCoupling(sq, c.width, 0, cf))]
            inner = None if l == c.levels_l - 1 else level((sq[0] // 2, *sq[1:]), l + 1)
            return MultiScale(shape, [], steps, inner, prior=True, context_features=cf)
        return [level(c.input_shape, 0)]
