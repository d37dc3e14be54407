"""The training loop: Adam on model.loss(x).mean() over in-memory tensors, with checkpoints and resume.

What it adds to a bare PyTorch loop is kept off the per-step path: the data sit on the device and are
shuffled once per epoch with one gather; per-step terms go into a preallocated device buffer, read back
(one sync) only every `log_every` steps for the progress bar and the NaN/inf check, and at epoch end.
Once per epoch, before anything is written, the weights, the optimizer state and the validation terms are
checked to be finite (one more sync), so no checkpoint, best model or metrics line ever holds a NaN.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_write, load_checkpoint, read_safetensors, save_checkpoint
from .data import Splits
from .errors import VgmError


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"       # auto | cpu | cuda[:i]
    eval_batch_size: int = 1000
    log_every: int = 25        # steps between progress-bar updates and NaN checks

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise VgmError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2 ** 63:
            raise VgmError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise VgmError(f"lr must be a positive number, got {self.lr}")


def derived_seed(seed: int, purpose: str) -> int:
    """A seed in [0, 2**63) for one use of `seed` (e.g. "init", "train", "shuffle"), so that each use draws its
    own stream: seeding the weight initialisation and the training noise with the same number would make
    training's first draws repeat the initialisation's. Deterministic across runs, platforms and versions."""
    digest = hashlib.blake2b(f"vgm:{int(seed)}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise VgmError(f"unknown device {name!r} (choose auto, cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VgmError("device 'cuda' asked for, but no CUDA GPU is available")
    if dev.type not in ("cpu", "cuda"):
        raise VgmError(f"unsupported device {name!r} (choose auto, cpu or cuda)")
    return dev


@torch.no_grad()
def evaluate_terms(model, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Mean of each per-example term of model.loss over x, in eval mode (the mode is restored, also on error)."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    try:
        for i in range(0, x.shape[0], batch_size):
            for k, v in model.loss(x[i:i + batch_size]).items():
                sums[k] = sums.get(k, 0) + v.sum()
    finally:
        model.train(was_training)
    return {k: v.item() / x.shape[0] for k, v in sums.items()}


def all_finite(model, opt: torch.optim.Optimizer) -> bool:
    """Whether every floating weight, buffer and optimizer-state tensor is finite (one device sync)."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    tensors += [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t) and t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "shuffle": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], gen: torch.Generator, device: torch.device) -> None:
    if ("cuda" in state) != (device.type == "cuda"):
        raise VgmError(f"the checkpoint was written on another kind of device than {device}; "
                       "resume it on the device it was trained on")
    torch.set_rng_state(state["torch"])
    gen.set_state(state["shuffle"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def selection_score(terms: dict[str, float]) -> float:
    """Higher is better: the validation ELBO where the model has one, else minus the loss."""
    return terms["elbo"] if "elbo" in terms else -terms["loss"]


def fit(model, data: Splits, cfg: TrainConfig, run_dir: str | Path | None = None, resume: bool = False,
        progress: bool = True) -> list[dict]:
    """Train `model` on data.train, select on data.val; return the per-epoch metrics.

    With a run_dir: metrics.jsonl gets a line per epoch, checkpoint.safetensors is rewritten atomically
    each epoch, and model.safetensors/model.json hold the weights of the best validation epoch.
    On return the model holds the best validation epoch's weights (with or without a run_dir).
    resume=True continues from the checkpoint and ends with the numbers an uninterrupted run would give;
    cfg.lr replaces the checkpoint's learning rate (the way out of a run that went NaN).
    A NaN or infinite loss, weight or validation term stops training with a VgmError before the epoch is
    written, so the files hold the last finite epoch. Training noise and shuffling draw from seeds derived
    from cfg.seed (derived_seed), never from cfg.seed itself, which the caller may use for the initialisation.
    progress: a per-epoch line on stderr, and a progress bar within each epoch when stderr is a terminal.
    """
    if resume and run_dir is None:
        raise VgmError("resume needs the run folder that holds the checkpoint")
    device = resolve_device(cfg.device)
    model.to(device).train()
    data = data.to(device)
    train = data.train
    n = train.shape[0]
    if n == 0:
        raise VgmError("the training split is empty")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(derived_seed(cfg.seed, "shuffle"))
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt = run_dir / "checkpoint.safetensors" if run_dir else None
    start, best, best_epoch, history, best_state = 0, -math.inf, -1, [], None
    if resume:
        rng, info = load_checkpoint(ckpt, model, opt)
        for group in opt.param_groups:
            group["lr"] = cfg.lr
        set_rng_state(rng, gen, device)
        start, best, best_epoch, history = info["epoch"], info["best"], info["best_epoch"], info["history"]
        write_metrics(run_dir, history)     # drop lines of an epoch that never reached its checkpoint
    else:
        torch.manual_seed(derived_seed(cfg.seed, "train"))
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_metrics(run_dir, [])
    bars = progress and sys.stderr.isatty()
    steps = math.ceil(n / cfg.batch_size)
    names: list[str] | None = None
    buf = None
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        xs = train[torch.randperm(n, generator=gen, device=device)]
        if data.binarize == "dynamic":
            xs = torch.bernoulli(xs, generator=gen)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not bars,
                   dynamic_ncols=True, file=sys.stderr)
        checked = 0
        for i in range(steps):
            terms = model.loss(xs[i * cfg.batch_size:(i + 1) * cfg.batch_size])
            loss = terms["loss"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if buf is None:
                names = list(terms)
                buf = torch.zeros(steps, len(names), device=device)
            buf[i] = torch.stack([v.detach().sum() for v in terms.values()])
            if (i + 1) % cfg.log_every == 0 or i + 1 == steps:
                window = buf[checked:i + 1]
                finite = torch.isfinite(window).all(dim=1)
                if not bool(finite.all()):
                    bar.close()
                    bad = checked + int((~finite).nonzero()[0, 0])
                    restore_best(model, best_state, run_dir, best_epoch)
                    raise nan_error(f"loss became NaN or infinite at epoch {epoch + 1}, step {bad + 1}",
                                    run_dir, history)
                seen = min(n, (i + 1) * cfg.batch_size) - checked * cfg.batch_size
                per_ex = window[:, names.index("loss")].sum().item() / seen
                bar.set_postfix(loss=f"{per_ex:.3f}", refresh=False)
                bar.update(i + 1 - checked)
                checked = i + 1
        bar.close()
        if not all_finite(model, opt):
            restore_best(model, best_state, run_dir, best_epoch)
            raise nan_error(f"the weights became NaN or infinite in epoch {epoch + 1} (a NaN or infinite "
                            "gradient)", run_dir, history)
        val = evaluate_terms(model, data.val, cfg.eval_batch_size)
        if not all(math.isfinite(v) for v in val.values()):
            restore_best(model, best_state, run_dir, best_epoch)
            raise nan_error(f"the validation terms became NaN or infinite at epoch {epoch + 1}", run_dir, history)
        sums = buf.sum(0).tolist()
        row = {"epoch": epoch + 1,
               "train": {k: s / n for k, s in zip(names, sums)},
               "val": val,
               "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        score = selection_score(row["val"])
        improved = score > best
        if improved:
            best, best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if progress:
            line = format_row(row, cfg.epochs) + ("  *" if improved else "")
            if bars:
                tqdm.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)
        if run_dir:
            if improved:
                model.save(run_dir)
            append_metrics(run_dir, row)
            save_checkpoint(ckpt, model, opt, rng_state(gen, device),
                            {"epoch": epoch + 1, "best": best, "best_epoch": best_epoch, "history": history})
    restore_best(model, best_state, run_dir, best_epoch)
    return history


def restore_best(model, best_state: dict[str, torch.Tensor] | None, run_dir: Path | None, best_epoch: int) -> None:
    """Load the best validation epoch's weights into the model: kept in memory, or model.safetensors after a resume."""
    if best_state is None and run_dir is not None and best_epoch > 0:   # resumed after the best epoch
        best_state = load_model_state(run_dir)
    if best_state is not None:
        model.load_state_dict(best_state)


class NonFiniteError(VgmError):
    """Training stopped on a NaN or infinite value; `reason` is the message without what the run folder keeps
    (for a caller that changes the folder afterwards, e.g. restoring the run that --force was replacing)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def nan_error(what: str, run_dir: Path | None, history: list[dict]) -> NonFiniteError:
    """The NaN stop's error, saying truly which checkpoint is kept (the last epoch in history, or none)."""
    if run_dir is None:
        kept = ""
    elif history:
        kept = (f"; {run_dir} keeps the checkpoint of epoch {history[-1]['epoch']}: resume it with a smaller "
                "learning rate")
    else:
        kept = f"; no epoch had finished, so {run_dir} holds no checkpoint"
    return NonFiniteError(what + kept, what)


def format_row(row: dict, epochs: int) -> str:
    def terms(d):
        keys = [k for k in ("elbo", "recon", "kl") if k in d] or ["loss"]
        return " ".join(f"{k} {d[k]:.3f}" for k in keys)
    return f"epoch {row['epoch']:>3}/{epochs}  train {terms(row['train'])}  |  val {terms(row['val'])}  ({row['seconds']:.1f}s)"


def load_model_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(Path(run_dir) / "model.safetensors")[0]


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    atomic_write(Path(run_dir) / "metrics.jsonl",
                 "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows).encode())


def append_metrics(run_dir: Path, row: dict) -> None:
    with open(Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row, allow_nan=False) + "\n")
        f.flush()

