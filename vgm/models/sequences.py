"""What sequence models share: the token convention, masks, input/output layers, KL schedules, evaluation, rendering.

A batch of sequences is one padded tensor, so the trainer can shuffle and slice it like images:
    tokens (categorical data):  long (N, T), characters are ids >= FIRST, each sequence ends with EOS, then PAD (0).
    real values (gaussian data): float (N, T, D); steps past a sequence's end are NaN.
mask(x) gives the (N, T) bool mask of real steps; trim(x) cuts a batch to its longest sequence.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal
import torch.nn.functional as F

from ..base import Model
from ..checkpoint import atomic_write
from ..plots import pyplot, save_figure
from ..data.tokens import BOS, EOS, FIRST, PAD, UNK, to_text

LIKELIHOODS = ("categorical", "gaussian")
NOT_SYMBOLS = (PAD, BOS, UNK)     # ids that are never an output: the model is a distribution over alphabet + EOS
ANNEAL = ("none", "linear", "cyclical")


def mask(x: torch.Tensor) -> torch.Tensor:
    """(N, T) bool: True at the steps that belong to a sequence (tokens != PAD; real values not NaN)."""
    return x != PAD if x.dtype == torch.long else ~torch.isnan(x[..., 0])


def lengths(x: torch.Tensor) -> torch.Tensor:
    return mask(x).sum(1)


def trim(x: torch.Tensor) -> torch.Tensor:
    """The batch cut to its longest sequence (one sync), so extra padding costs no compute."""
    return x[:, :max(1, int(lengths(x).max()))]


def clean(x: torch.Tensor) -> torch.Tensor:
    """Real-valued steps with the NaN padding replaced by 0 (NaN would poison gradients even where masked)."""
    return x if x.dtype == torch.long else torch.nan_to_num(x, nan=0.0)


def check_input(x: torch.Tensor, config) -> None:
    """A one-line error for data that do not fit the model: tokens (N, T) long, or real values (N, T, input_dim)."""
    from ..errors import VgmError
    if config.likelihood == "categorical":
        if x.dtype != torch.long or x.dim() != 2:
            raise VgmError(f"this {config.likelihood} model needs token sequences (N, T) of integer ids, "
                           f"got {x.dtype} data of shape {tuple(x.shape)} (train it on text data)")
        if int(x.max()) >= vocab_size(config.alphabet) or int(x.min()) < 0:
            raise VgmError(f"token ids outside the model's vocabulary of {vocab_size(config.alphabet)}")
        bad = int(((x == UNK) | (x == BOS)).any(1).sum())
        if bad:
            raise VgmError(f"{bad} sequences hold characters outside the model's alphabet {config.alphabet!r} "
                           "(UNK), which the model gives probability 0")
    elif x.dtype == torch.long or x.dim() != 3 or x.shape[-1] != config.input_dim:
        raise VgmError(f"this gaussian model needs real-valued sequences (N, T, {config.input_dim}), "
                       f"got {x.dtype} data of shape {tuple(x.shape)}")


def vocab_size(alphabet: str) -> int:
    return FIRST + len(alphabet)


class StepInput(nn.Module):
    """x_t -> a feature vector: an embedding of the token, or a linear map of the real values."""

    def __init__(self, likelihood: str, vocab: int, input_dim: int, dim: int):
        super().__init__()
        self.categorical = likelihood == "categorical"
        self.net = nn.Embedding(vocab, dim, padding_idx=PAD) if self.categorical else nn.Linear(input_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x if self.categorical else clean(x))


class StepOutput(nn.Module):
    """A hidden vector -> p(x_t | ·): a Categorical over the symbols of the data (the alphabet and EOS; PAD, BOS
    and UNK get probability 0, so scoring and generation use one distribution), or a diagonal Normal with
    learned σ >= min_sigma."""

    def __init__(self, likelihood: str, in_dim: int, vocab: int, input_dim: int, min_sigma: float):
        super().__init__()
        self.categorical = likelihood == "categorical"
        self.min_sigma = min_sigma
        self.net = nn.Linear(in_dim, vocab if self.categorical else 2 * input_dim)
        if self.categorical:
            blocked = torch.zeros(vocab, dtype=torch.bool)
            blocked[list(NOT_SYMBOLS)] = True
            self.register_buffer("blocked", blocked, persistent=False)

    def forward(self, h: torch.Tensor) -> Distribution:
        out = self.net(h)
        if self.categorical:
            return Categorical(logits=out.masked_fill(self.blocked, -torch.inf))
        mu, s = out.chunk(2, dim=-1)
        return Independent(Normal(mu, F.softplus(s) + self.min_sigma), 1)

    def first_input(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """The decoder's input before the first step: BOS, or a zero vector."""
        if self.categorical:
            return torch.full((n, 1), BOS, dtype=torch.long, device=like.device)
        return torch.zeros(n, 1, like.shape[-1], device=like.device)

    def draw(self, h: torch.Tensor, greedy: bool = False) -> torch.Tensor:
        """One generated step from p(x_t | ·): a sampled symbol (its mode if greedy), or the mean of the real
        values (noise-free curves)."""
        p = self(h)
        if not self.categorical:
            return p.mean
        return p.logits.argmax(-1) if greedy else p.sample()


def step_target(x: torch.Tensor) -> torch.Tensor:
    """Values ready for log_prob: PAD ids (probability 0) and NaN padding replaced; they are masked out anyway."""
    return torch.where(x == PAD, EOS, x) if x.dtype == torch.long else clean(x)


def masked_log_prob(p: Distribution, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Σ_t m_t log p(x_t): per sequence, padding steps contribute nothing."""
    target = step_target(x)
    return torch.where(m, p.log_prob(target), 0.0).sum(-1)


def kl_weight(step: int | torch.Tensor, schedule: str, steps: int) -> torch.Tensor | float:
    """β_t of KL annealing. linear (Bowman et al., 2016): min(1, t/steps).
    cyclical (Fu et al., 2019): period `steps`; within each period β rises linearly over the first half, then 1."""
    if schedule == "none":
        return 1.0
    t = torch.as_tensor(step, dtype=torch.float32)
    if schedule == "linear":
        return (t / steps).clamp(max=1.0)
    return ((t % steps) / (0.5 * steps)).clamp(max=1.0)


def free_bits_kl(kl_units: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Per example, Σ_d of KL_d, where a unit whose batch-mean KL is below λ = free_bits counts λ instead
    (Kingma et al., 2016): the batch mean of the result is Σ_d max(λ, mean_batch KL_d), with no gradient
    pushing a unit's KL below λ."""
    if free_bits <= 0:
        return kl_units.sum(-1)
    below = kl_units.mean(0) < free_bits
    return torch.where(below, torch.full_like(kl_units, free_bits), kl_units).sum(-1)


def logmeanexp(a: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


ACTIVE_THRESHOLD = 0.01   # Burda et al. (2016)


@torch.no_grad()
def evaluate_sequences(model, x: torch.Tensor, iw_samples: int = 1000, batch_size: int = 500) -> dict:
    """Sequence scores for `vgm evaluate`. The model provides
        model.terms(x)       -> dict: recon, kl, elbo (N,), kl_units (N, d), activity (M, d) statistic rows
        model.log_px(x, K)   -> (N,) importance-weighted bound L_K
    and this returns means per sequence (nats), per token (nats / token, EOS included), perplexity
    exp(−Σ log p / Σ tokens) for text, KL per latent unit, and active units: units whose activity statistic
    has variance > 0.01 across the data (Burda et al., 2016)."""
    model.eval()
    n = x.shape[0]
    if n == 0:
        from ..errors import VgmError
        raise VgmError("the split is empty")
    check_input(x, model.config)
    tokens = lengths(x).sum().item()
    sums = {"elbo": 0.0, "recon": 0.0, "kl": 0.0, "log_px": 0.0}
    kl_units, activity = 0.0, []
    for i in range(0, n, batch_size):
        xb = trim(x[i:i + batch_size])
        t = model.terms(xb)
        for k in ("elbo", "recon", "kl"):
            sums[k] += t[k].sum().item()
        kl_units = kl_units + t["kl_units"].sum(0)
        activity.append(t["activity"])
        if iw_samples:
            sums["log_px"] += model.log_px(xb, iw_samples).sum().item()
    a = torch.cat(activity)
    var = a.var(0) if a.shape[0] > 1 else torch.zeros(a.shape[1])
    out = {"n_examples": n, "dims": round(tokens / n, 3), "tokens": int(tokens), "iw_samples": iw_samples}
    out.update({k: v / n for k, v in sums.items()})
    if not iw_samples:
        out["log_px"] = None
    out["elbo_per_token"] = sums["elbo"] / tokens
    out["log_px_per_token"] = None if out["log_px"] is None else sums["log_px"] / tokens
    best = out["log_px"] if iw_samples else out["elbo"]
    if model.config.likelihood == "categorical":
        out["perplexity"] = math.exp(-best * n / tokens)
        out["bits_per_token"] = -best * n / tokens / math.log(2)
    out["elbo_gap"] = None if out["log_px"] is None else out["log_px"] - out["elbo"]
    out["kl_per_unit"] = (kl_units / n).tolist()
    out["activity_var"] = var.tolist()
    out["active_units"] = int((var > ACTIVE_THRESHOLD).sum())
    out["latent_dim"] = int(a.shape[1])
    step = "token" if model.config.likelihood == "categorical" else "step"       # real values: per time step
    out["units"] = {"tokens": f"{step}s", "elbo_per_token": f"nats/{step}", "log_px_per_token": f"nats/{step}",
                    "perplexity": "per token", "bits_per_token": "bits/token", "active_units": "units",
                    "latent_dim": "units", "elbo": "nats/sequence", "recon": "nats/sequence",
                    "kl": "nats/sequence", "log_px": "nats/sequence", "elbo_gap": "nats/sequence"}
    return out


# ----- text and plots ---------------------------------------------------------------------------------------

def is_row_image(x: torch.Tensor) -> bool:
    """Digits read row by row, (N, rows, values) with as many rows as values (8 or 28): drawn as images."""
    return x.dim() == 3 and x.shape[1] == x.shape[2] and x.shape[1] in (8, 28)


def row_images(x: torch.Tensor) -> torch.Tensor:
    """(N, rows, values) -> (N, 1, rows, values) images, NaN padding shown as 0."""
    return x.detach().cpu().float().nan_to_num(0.0)[:, None]


def write_text(path: Path, lines: list[str], title: str = "", width: float = 4) -> None:
    """Text lines: printed, written to PATH.txt, and drawn as a PNG list into PATH (only the text for a .txt path)."""
    print("\n".join(lines))
    atomic_write(path.with_suffix(".txt"), ("\n".join(lines) + "\n").encode())
    if path.suffix.lower() == ".txt":
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(width, 0.22 * len(lines) + 0.6))
    ax.axis("off")
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=9, transform=ax.transAxes)
    if title:
        ax.set_title(title)
    save_figure(fig, path, tight=True)


def series_figure(path: Path, panels: list[tuple[str, list[tuple[torch.Tensor, str, str]]]], title: str = "") -> None:
    """One small plot per panel (its title, and curves (values (T, D), line style, legend label)) of the first
    value per step; every panel is drawn, 4 to a row (8 beyond 16 panels)."""
    plt = pyplot()
    n = len(panels)
    cols = min(n, 4 if n <= 16 else 8)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 1.8 * rows + 0.4), squeeze=False, sharey=True,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, curves) in zip(axes.flat, panels):
        for values, style, label in curves:
            ax.plot(values.detach().cpu().float()[:, 0].numpy(), style, lw=1.2, label=label or None)
        if name:
            ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    if any(label for _, curves in panels[:1] for _, _, label in curves):
        axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    save_figure(fig, path, tight=True)


def render(model, x: torch.Tensor, path: str | Path, title: str = "", recon: torch.Tensor | None = None) -> None:
    """Any number of sequences (and their reconstructions). Text: printed, written to PATH.txt, and drawn as a
    PNG list. Series: one line plot each (dashed: recon). Row-by-row digits: an image grid."""
    path = Path(path)
    c = model.config
    if c.likelihood == "categorical":
        texts = to_text(x.cpu(), c.alphabet)
        if recon is not None:
            texts = [f"{a}  ->  {b}" for a, b in zip(texts, to_text(recon.cpu(), c.alphabet))]
        write_text(path, texts, title, width=4 if recon is None else 6)
        return
    if is_row_image(x):
        from ..plots import save_reconstructions, save_samples
        if recon is None:
            save_samples(path, row_images(x))
        else:
            save_reconstructions(path, row_images(x), row_images(recon))
        return
    if recon is None:
        panels = [("", [(s, "-", "")]) for s in x]
    else:
        panels = [("", [(s, "-", "data"), (r, "--", "reconstruction")]) for s, r in zip(x, recon)]
    series_figure(path, panels, title)


class SequenceModel(Model):
    """What seqvae and vrnn share: `vgm evaluate` scores and `vgm sample` / `vgm reconstruct` output for sequences."""

    def evaluate(self, x: torch.Tensor, iw_samples: int = 1000, batch_size: int = 500) -> dict:
        return evaluate_sequences(self, x, iw_samples, batch_size)

    def render_samples(self, samples: torch.Tensor, path) -> None:
        render(self, samples, path, title=f"{self.kind}: samples from the prior")

    def render_reconstructions(self, x: torch.Tensor, recon: torch.Tensor, path) -> None:
        render(self, x, path, title=f"{self.kind}: data -> reconstruction", recon=recon)
