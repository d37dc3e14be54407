"""The conditional VAE (Sohn et al., 2015): encoder and decoder both see the label y.

    q(z|x, y) = Normal(μ(x, y), diag σ(x, y)²),   p(z) = Normal(0, I),   p(x|z, y) = decoder likelihood
    loss = −E_q[log p(x|z, y)] + β · KL(q(z|x, y) ‖ p(z))      (= −ELBO of log p(x|y) when β = 1)
The label enters as a one-hot vector: appended to the flattened image (mlp) or as K constant channels (conv) in
the encoder, appended to z in the decoder. The prior does not depend on y (Sohn et al.'s p(z|y) reduced to
N(0, I), as in Kingma et al.'s M2), so `vgm sample RUN --label c` draws z ~ N(0, I) and decodes it with y = c.
Which labels: the data's integer labels (digits, MNIST, labelled image folders: K = the number of classes);
on dSprites, whose labels are the five factor indices, one factor chosen by --factor (default shape, K = 3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Normal

from ..base import Model
from ..errors import VgmError
from ..registry import register_model
from .likelihood import LIKELIHOODS, PARAMS_PER_VALUE, Likelihood
from .nets import Decoder, Encoder


@dataclass
class CVAEConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = field(default=4, metadata={"help": "few, so that the decoder takes the class from y and not "
                                                        "from z (docs/disentanglement.md: 16 dims gave 63-80%% of "
                                                        "samples in the asked-for class, 4 dims 93-97%%)"})
    arch: str = field(default="mlp", metadata={"choices": ("mlp", "conv"), "help": "backbone"})
    hidden: tuple[int, ...] = field(default=(512, 256), metadata={"help": "encoder widths; the decoder mirrors them"})
    likelihood: str = field(default="bernoulli", metadata={"choices": LIKELIHOODS, "help": "p(x|z, y)"})
    sigma: float = field(default=0.1, metadata={"help": "gaussian σ (its initial value when learned)"})
    learn_sigma: bool = field(default=False, metadata={"help": "learn one σ shared by all values"})
    beta: float = field(default=1.0, metadata={"help": "weight of the KL term"})
    levels: int = field(default=0, metadata={"help": "grey levels of the data; set from the dataset (0: continuous)"})
    num_classes: int = field(default=10, metadata={"help": "K, for data that do not name their classes (digits, "
                                                           "MNIST: 10)"})
    factor: str = field(default="shape", metadata={"help": "on dSprites: the factor whose index is the label"})
    classes: tuple[str, ...] = field(default=(), metadata={"help": "class names (set from a labelled folder)"})
    factor_names: tuple[str, ...] = field(default=(), metadata={"help": "set from the data (dSprites)"})
    factor_sizes: tuple[int, ...] = field(default=(), metadata={"help": "set from the data (dSprites)"})


class Given:
    """The model with its labels fixed: encode / decode / prior for vgm.elbo and vgm.log_px."""

    def __init__(self, model: "CVAE", y: torch.Tensor):
        self.model, self.onehot = model, model.one_hot(y)
        self.prior = model.prior

    def encode(self, x: torch.Tensor) -> Distribution:
        return self.model.encode(x, self.onehot)

    def decode(self, z: torch.Tensor) -> Distribution:
        return self.model.decode(z, self.onehot.expand(*z.shape[:-1], -1))


@register_model("cvae", data=("images", "vectors"), default_data="digits")
class CVAE(Model):
    """Gaussian-posterior VAE with encoder and decoder conditioned on a one-hot label."""

    Config = CVAEConfig
    conditional = True

    def __init__(self, config: CVAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        c.input_shape, c.hidden = tuple(c.input_shape), tuple(c.hidden)
        c.classes, c.factor_names, c.factor_sizes = tuple(c.classes), tuple(c.factor_names), tuple(c.factor_sizes)
        if c.latent_dim < 1 or c.beta < 0:
            raise ValueError(f"latent_dim must be >= 1 and beta >= 0, got {c.latent_dim} and {c.beta}")
        self.column = None                      # which column of (N, F) factor labels is the class
        if c.factor_sizes:
            if c.factor not in c.factor_names:
                raise ValueError(f"unknown factor {c.factor!r} (choose {', '.join(c.factor_names)})")
            self.column = c.factor_names.index(c.factor)
            k = c.factor_sizes[self.column]
        else:
            k = len(c.classes) or c.num_classes
        if k < 2:
            raise ValueError(f"a conditional model needs at least 2 classes, got {k}")
        self.n_classes = k
        if c.arch == "mlp":
            self.encoder = Encoder("mlp", (math.prod(c.input_shape) + k,), c.hidden, 2 * c.latent_dim)
        else:
            self.encoder = Encoder(c.arch, (c.input_shape[0] + k, *c.input_shape[1:]), c.hidden, 2 * c.latent_dim)
        self.decoder = Decoder(c.arch, c.input_shape, c.hidden, c.latent_dim + k,
                               PARAMS_PER_VALUE.get(c.likelihood, 1))
        self.likelihood = Likelihood(c.likelihood, len(c.input_shape), c.sigma, c.learn_sigma, c.levels)
        self.register_buffer("prior_loc", torch.zeros(c.latent_dim), persistent=False)
        self.register_buffer("prior_scale", torch.ones(c.latent_dim), persistent=False)

    @property
    def prior(self) -> Distribution:
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1)

    def class_of(self, y: torch.Tensor) -> torch.Tensor:
        """The class index of each label: y itself, or its factor's column for (N, F) factor labels."""
        if y.dim() == 2 and self.column is not None:
            return y[:, self.column]
        if y.dim() != 1:
            raise VgmError(f"{self.kind} takes one integer label per example, got labels of shape {tuple(y.shape)}")
        return y

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """(N, K) one-hot of the labels. Labels outside 0..K−1 are refused: at once on a CPU, by an asynchronous
        device assert on a GPU (no host sync in the training step)."""
        y = self.class_of(y)
        k = self.n_classes
        if y.device.type == "cpu":
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
                raise VgmError(f"label {int(y.min()) if int(y.min()) < 0 else int(y.max())} is outside the "
                               f"{k} classes of this {self.kind} (0..{k - 1})")
        else:
            torch._assert_async(((y >= 0) & (y < k)).all(), f"labels must lie in 0..{k - 1}")
        return F.one_hot(y.long(), k).to(self.prior_loc.dtype)

    def encode(self, x: torch.Tensor, onehot: torch.Tensor) -> Distribution:
        c = self.config
        if c.arch == "mlp":
            h = torch.cat([x.flatten(-len(c.input_shape)), onehot], dim=-1)
        else:
            maps = onehot[..., None, None].expand(*onehot.shape, *c.input_shape[1:])
            h = torch.cat([x, maps], dim=-3)
        mu, s = self.encoder(h).chunk(2, dim=-1)
        return Independent(Normal(mu, F.softplus(s) + 1e-6, validate_args=False), 1)

    def decode(self, z: torch.Tensor, onehot: torch.Tensor) -> Distribution:
        return self.likelihood(self.decoder(torch.cat([z, onehot], dim=-1)))

    def given(self, y: torch.Tensor) -> Given:
        return Given(self, y)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example: recon = −log p(x|z, y), kl = KL(q(z|x, y) ‖ p(z)), elbo = −(recon + kl), loss = recon + β·kl."""
        m = self.given(y)
        q = m.encode(x)
        z = q.rsample()
        recon = -m.decode(z).log_prob(x)
        kl = torch.distributions.kl_divergence(q, self.prior)
        return {"recon": recon, "kl": kl, "elbo": -(recon + kl), "loss": recon + self.config.beta * kl}

    def labels_for(self, n: int, label: int | None) -> torch.Tensor:
        """n class indices: all `label`, or 0, 1, ..., K−1, 0, 1, ... when none is given."""
        if label is None:
            return torch.arange(n, device=self.prior_loc.device) % self.n_classes
        if not 0 <= label < self.n_classes:
            names = f" ({', '.join(self.config.classes)})" if self.config.classes else ""
            raise VgmError(f"label {label} is outside the {self.n_classes} classes of this {self.kind} "
                           f"(0..{self.n_classes - 1}){names}")
        return torch.full((n,), label, dtype=torch.long, device=self.prior_loc.device)

    @torch.no_grad()
    def sample(self, n: int, label: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n draws z ~ T·N(0, I) decoded with the label (or labels cycling through the classes) to p(x|z, y)'s mean."""
        onehot = F.one_hot(self.labels_for(n, label), self.n_classes).to(self.prior_loc.dtype)
        z = temperature * self.prior.sample((n,))
        return self.decode(z, onehot).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x | z = mean of q(z|x, y), y); without labels, y = the classes in turn (as sample)."""
        y = self.labels_for(x.shape[0], None) if y is None else y
        m = self.given(y)
        return m.decode(m.encode(x).mean).mean
