"""VQ-VAE (van den Oord et al., 2017): a grid of discrete codes from a learned codebook, and a learned prior over it.

    z_e = E(x) (D, h, w);  c = argmin_k ‖z_e − e_k‖² at each position;  z_q = e_c;  x ~ p(x | D(z_q))
    loss = −log p(x|z_q) + ‖sg[z_e] − z_q‖² + β ‖z_e − sg[z_q]‖²        (sums over positions and code dims)
The decoder's gradient is copied straight through the quantisation to the encoder (z_e + sg[z_q − z_e]).
With --ema the codebook term is dropped and the codebook follows exponential moving averages instead (the paper's
appendix, with Sonnet's Laplace smoothing), updated in every training step:
    N_k ← γ N_k + (1 − γ) n_k,   m_k ← γ m_k + (1 − γ) Σ_{i: c_i = k} z_e,i,   e_k = m_k / Ñ_k,
    Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j     (n_k: the batch's positions assigned to code k; ε = 1e-5)
N starts at 1 and m at the initial codebook, so a code no batch has chosen yet stays where it was.
The codebook starts as K encoder outputs of the first training batch (drawn at random among its positions; the
trainer's data-dependent initialisation), not as tiny random vectors that the encoder's outputs all sit beside:
with those, one code takes every position at once and the others never move (measured: perplexity 1).

The prior p(c) over the code grid (vgm.models.code_prior, a small causal transformer) is trained in the same run,
on each batch's detached code indices: its NLL is terms["aux_loss"], stepped by an optimizer of its own
(auxiliary_parameters, lr = --aux-lr), so it never reaches the autoencoder. `vgm sample` draws codes from it and
decodes them. With q(c|x) a point mass, KL(q ‖ p) = −log p(c): the terms kl and elbo = −(recon + kl) are a true
lower bound on log p(x) of the joint model p(c) p(x|c). Evaluation (model.evaluate) adds the reconstruction MSE,
the codebook's perplexity (exp of the entropy of code usage) and its dead codes (used by no example).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import Distribution

from ..base import Model
from ..registry import register_model
from .ae import PointMass
from .code_prior import CodePrior
from .likelihood import LIKELIHOODS, PARAMS_PER_VALUE, Likelihood

EMA_EPS = 1e-5


@dataclass
class VQVAEConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)
    codebook_size: int = field(default=128, metadata={"help": "K, the number of codes"})
    code_dim: int = field(default=16, metadata={"help": "D, the dimension of each code"})
    width: int = field(default=64, metadata={"help": "channels of the convolutional encoder and decoder"})
    downsample: int = field(default=2, metadata={"help": "stride-2 convolutions: a 28x28 image gives a 7x7 grid"})
    commitment: float = field(default=0.25, metadata={"help": "β, weight of the commitment loss"})
    ema: bool = field(default=False, metadata={"help": "update the codebook by exponential moving averages"})
    decay: float = field(default=0.99, metadata={"help": "γ of the EMA codebook updates"})
    likelihood: str = field(default="bernoulli", metadata={"choices": LIKELIHOODS, "help": "p(x|z_q)"})
    sigma: float = field(default=0.1, metadata={"help": "gaussian σ"})
    levels: int = field(default=0, metadata={"help": "grey levels of the data; set from the dataset"})
    prior_width: int = field(default=128, metadata={"help": "width of the code prior's transformer"})
    prior_layers: int = field(default=2, metadata={"help": "layers of the code prior's transformer"})
    aux_lr: float = field(default=1e-3, metadata={"help": "the code prior's Adam learning rate"})


def codebook_stats(counts: torch.Tensor) -> tuple[float, int]:
    """(perplexity exp(−Σ p_k log p_k) of code usage p = counts / Σ counts, number of codes never used)."""
    p = counts.double() / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(entropy.exp()), int((counts == 0).sum())


def ema_update(count: torch.Tensor, total: torch.Tensor, codebook: torch.Tensor, z: torch.Tensor,
               idx: torch.Tensor, decay: float) -> None:
    """One EMA step in place: count (K,), total (K, D) and codebook (K, D) from vectors z (M, D) assigned idx (M,)."""
    k = count.shape[0]
    n = torch.zeros_like(count).index_add_(0, idx, torch.ones_like(idx, dtype=count.dtype))
    s = torch.zeros_like(total).index_add_(0, idx, z.to(total.dtype))
    count.mul_(decay).add_(n, alpha=1 - decay)
    total.mul_(decay).add_(s, alpha=1 - decay)
    mass = count.sum()
    smoothed = (count + EMA_EPS) / (mass + k * EMA_EPS) * mass
    codebook.copy_(total / smoothed[:, None])


@register_model("vqvae", data=("images",), default_data="digits")
class VQVAE(Model):
    """Convolutional VQ-VAE with straight-through gradients, an optional EMA codebook, and a transformer code prior."""

    Config = VQVAEConfig

    @property
    def per_rank_statistics(self) -> str:
        """--ema's codebook averages are buffers: under torchrun each process would average only its share."""
        return "with --ema the codebook follows averages of each process's share of the batch" if self.config.ema \
            else ""
    default_iw_samples = 0

    def __init__(self, config: VQVAEConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        c.input_shape = tuple(c.input_shape)
        if c.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2 (one code carries no information), got {c.codebook_size}")
        if c.code_dim < 1 or c.width < 1 or c.downsample < 1 or c.commitment < 0 or not 0 < c.decay < 1:
            raise ValueError("code_dim, width and downsample must be >= 1, commitment >= 0, 0 < decay < 1")
        if len(c.input_shape) != 3 or any(s % 2 ** c.downsample for s in c.input_shape[1:]):
            raise ValueError(f"{self.kind} needs images (C, H, W) with H and W divisible by 2^downsample = "
                             f"{2 ** c.downsample}, got {c.input_shape}")
        ch, k, d = c.width, c.codebook_size, c.code_dim
        enc: list[nn.Module] = []
        for i in range(c.downsample):
            enc += [nn.Conv2d(c.input_shape[0] if i == 0 else ch, ch, 4, 2, 1), nn.ReLU()]
        self.encoder = nn.Sequential(*enc, nn.Conv2d(ch, ch, 3, 1, 1), nn.ReLU(), nn.Conv2d(ch, d, 1))
        dec: list[nn.Module] = [nn.Conv2d(d, ch, 3, 1, 1), nn.ReLU()]
        out = c.input_shape[0] * PARAMS_PER_VALUE.get(c.likelihood, 1)
        for i in range(c.downsample):
            last = i == c.downsample - 1
            dec += [nn.ConvTranspose2d(ch, out if last else ch, 4, 2, 1)] + ([] if last else [nn.ReLU()])
        self.decoder = nn.Sequential(*dec)
        self.likelihood = Likelihood(c.likelihood, 3, c.sigma, False, c.levels)
        init = torch.empty(k, d).uniform_(-1 / k, 1 / k)
        if c.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_total", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))   # codebook set from data yet?
        self._unchecked = True        # whether `initialized` still needs a look (one host sync per process)
        self.grid = tuple(s // 2 ** c.downsample for s in c.input_shape[1:])
        self.code_prior = CodePrior(k, math.prod(self.grid), c.prior_width, c.prior_layers)
        self.register_buffer("prior_loc", torch.zeros(d * math.prod(self.grid)), persistent=False)

    def auxiliary_parameters(self):
        return self.code_prior.parameters()

    @torch.no_grad()
    def init_codebook(self, z_e: torch.Tensor) -> None:
        """Set the codebook (and the EMA statistics) to K of the batch's encoder outputs, drawn without replacement
        where the batch has enough positions."""
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.config.code_dim).float()
        k = self.config.codebook_size
        pick = torch.randperm(len(flat), device=flat.device)[:k] if len(flat) >= k else \
            torch.randint(len(flat), (k,), device=flat.device)
        self.codebook.copy_(flat[pick])
        if self.config.ema:
            self.ema_total.copy_(self.codebook)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(1)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_e (N, D, h, w) -> (codes (N, h·w), z_q (N, D, h, w)) by the nearest code in squared distance."""
        n, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        e = self.codebook
        dist = (flat ** 2).sum(1, keepdim=True) - 2 * flat @ e.T + (e ** 2).sum(1)
        idx = dist.argmin(1)
        z_q = e[idx].reshape(n, h, w, d).permute(0, 3, 1, 2)
        return idx.reshape(n, h * w), z_q

    def decode_codes(self, codes: torch.Tensor) -> Distribution:
        """codes (N, h·w) -> p(x | z_q)."""
        n = codes.shape[0]
        z_q = self.codebook[codes].reshape(n, *self.grid, -1).permute(0, 3, 1, 2)
        return self.likelihood(self.decoder(z_q))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(N, h·w) code indices of x."""
        return self.quantize(self.encoder(x))[0]

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example: recon = −log p(x|z_q), vq (codebook term, 0 with EMA), commit (β‖z_e − sg z_q‖²),
        loss = recon + vq + commit; kl = −log p(c) under the code prior, elbo = −(recon + kl);
        aux_loss = kl from the detached codes (trains the prior only)."""
        c = self.config
        z_e = self.encoder(x)
        if self._unchecked and self.training:
            self._unchecked = False
            if not self.initialized:
                self.init_codebook(z_e)
        idx, z_q = self.quantize(z_e)
        if c.ema and self.training and torch.is_grad_enabled():
            with torch.no_grad():
                flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, c.code_dim).float()
                ema_update(self.ema_count, self.ema_total, self.codebook, flat, idx.flatten(), c.decay)
        z_st = z_e + (z_q - z_e).detach()
        recon = -self.likelihood(self.decoder(z_st)).log_prob(x)
        commit = c.commitment * ((z_e - z_q.detach()) ** 2).flatten(1).sum(1)
        vq = torch.zeros_like(commit) if c.ema else ((z_e.detach() - z_q) ** 2).flatten(1).sum(1)
        nll = self.code_prior.nll(idx.detach())
        return {"recon": recon, "vq": vq, "commit": commit, "loss": recon + vq + commit,
                "kl": nll.detach(), "elbo": -(recon + nll).detach(), "aux_loss": nll}

    # the model interface: q(z|x) is a point mass on the flattened z_q; p(x|z) decodes a flattened z_q
    @property
    def prior(self) -> Distribution:
        raise NotImplementedError("a VQ-VAE's prior is over codes: use model.code_prior")

    def encode(self, x: torch.Tensor) -> Distribution:
        return PointMass(self.quantize(self.encoder(x))[1].flatten(1))

    def decode(self, z: torch.Tensor) -> Distribution:
        return self.likelihood(self.decoder(z.reshape(-1, self.config.code_dim, *self.grid)))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n code grids drawn from the learned prior (softmax(logits / T) per position), decoded to p(x|z_q)'s mean."""
        return self.decode_codes(self.code_prior.sample(n, temperature)).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_codes(self.codes(x)).mean

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, iw_samples: int = 0, batch_size: int = 500) -> dict:
        """Means over x: recon, kl (−log p(c) under the prior), elbo = −(recon + kl), mse of the reconstruction
        per value; codebook perplexity and dead codes over all of x's positions. iw_samples is not used: with a
        deterministic encoder every importance sample is the same, so L_K = ELBO."""
        k = self.config.codebook_size
        counts = torch.zeros(k, dtype=torch.long, device=x.device)
        sums = {"recon": 0.0, "kl": 0.0, "sq": 0.0}
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            idx = self.codes(xb)
            px = self.decode_codes(idx)
            sums["recon"] -= px.log_prob(xb).sum().item()
            sums["kl"] += self.code_prior.nll(idx).sum().item()
            sums["sq"] += ((px.mean - xb) ** 2).sum().item()
            counts += torch.bincount(idx.flatten(), minlength=k)
        n = len(x)
        perplexity, dead = codebook_stats(counts)
        recon, kl = sums["recon"] / n, sums["kl"] / n
        return {"n_examples": n, "dims": x[0].numel(), "recon": recon, "kl": kl, "elbo": -(recon + kl),
                "mse": sums["sq"] / (n * x[0].numel()), "perplexity": perplexity, "dead_codes": dead,
                "codebook_size": k, "grid": list(self.grid),
                "units": {"recon": "nats", "kl": "nats (−log p(codes) under the learned prior)",
                          "elbo": "nats (−(recon + kl), a lower bound on log p(x))", "mse": "per value",
                          "perplexity": "codes (exp of the entropy of code usage)", "dead_codes": "codes",
                          "codebook_size": "codes", "grid": "positions"}}
