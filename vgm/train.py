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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import get_total_norm
from tqdm.auto import tqdm

from .checkpoint import atomic_write, load_checkpoint, read_safetensors, save_checkpoint
from .data import Splits
from .distributed import World, all_sum, all_true, ddp, device_for, global_batch, setup, share
from .errors import VgmError


PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("constant", "cosine")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = field(default=128, metadata={"help": "the global batch: under torchrun each of W processes "
                                                           "takes batch/W of it"})
    lr: float = 1e-3
    seed: int = 0
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda[:i]"})
    eval_batch_size: int = 1000
    log_every: int = field(default=25, metadata={"help": "steps between progress-bar updates and NaN checks"})
    precision: str = field(default="fp32", metadata={"choices": PRECISIONS, "help": "training arithmetic: autocast "
                           "to bf16 (CPU or GPU) or fp16 (GPU, with a gradient scaler); evaluation is always fp32"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the training step (its compile time "
                                                           "is reported)"})
    tensorboard: bool = field(default=False, metadata={"help": "write TensorBoard events to RUN_DIR/tensorboard "
                                                               "(pip install vgm[tensorboard])"})
    workers: int = field(default=0, metadata={"help": "processes that decode image files and read data streamed "
                                                      "from the disk cache (0: the training process)"})
    lr_schedule: str = field(default="constant", metadata={"choices": SCHEDULES, "help": "the learning rate after "
                             "the warm-up: constant, or cosine-annealed to 0 over the run's --epochs (a resume that changes --epochs "
                             "stretches what is left of it; vgm.train.lr_factor)"})
    warmup: int = field(default=0, metadata={"help": "steps over which the learning rate rises linearly from 0"})
    clip_grad: float = field(default=0.0, metadata={"help": "clip the gradient of the model's parameters to this "
                             "global norm (0: off); the share of steps clipped is logged as `clipped`"})
    patience: int = field(default=0, metadata={"help": "stop when the validation score has not improved for this "
                          "many epochs (0: train every epoch); the best epoch is kept either way"})

    def __post_init__(self):
        if self.workers < 0:
            raise VgmError(f"workers must be >= 0, got {self.workers}")
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise VgmError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2 ** 63:
            raise VgmError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise VgmError(f"lr must be a positive number, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise VgmError(f"unknown precision {self.precision!r} (choose {', '.join(PRECISIONS)})")
        if self.lr_schedule not in SCHEDULES:
            raise VgmError(f"unknown lr-schedule {self.lr_schedule!r} (choose {', '.join(SCHEDULES)})")
        for name in ("warmup", "patience"):
            if getattr(self, name) < 0:
                raise VgmError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.clip_grad >= 0 and math.isfinite(self.clip_grad)):
            raise VgmError(f"clip-grad must be a norm >= 0 (0: off), got {self.clip_grad}")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """The learning rate of optimizer step `step` (0, 1, ..., total − 1) over --lr: a linear warm-up from 0,
    step / warmup for step < warmup, then 1 (constant) or ½ (1 + cos(π (step − warmup) / (total − warmup)))
    (cosine: it would reach 0 at step `total`, one past the run's last), the closed forms of the usual
    warm-up-then-cosine schedule. A function of the step count alone, so resuming needs only that count."""
    if step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def batch_bounds(n: int, batch_size: int, min_batch: int = 1, ranks: int = 1) -> list[int]:
    """Where each batch of n shuffled rows starts, and n at the end: batches of batch_size in order, except that a
    last batch holding fewer than `min_batch` rows (counted after the cut to a multiple of `ranks` that torchrun's
    shares make) joins the batch before it. So a loss that couples a batch (Model.min_batch = 2) never sees one
    example, and every example is still seen each epoch."""
    bounds = [*range(0, n, batch_size), n]
    last = bounds[-1] - bounds[-2]
    if len(bounds) > 2 and last - last % ranks < max(1, min_batch):
        del bounds[-2]
    return bounds


def merge_tail(batches, steps: int):
    """The batches of an iterator, its batches after the first steps − 1 concatenated into one (the streamed
    form of batch_bounds' merged last batch)."""
    it = iter(batches)
    for _ in range(steps - 1):
        yield next(it)
    rest = list(it)
    yield rest[0] if len(rest) == 1 else torch.cat(rest)


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
def sum_terms(model, x: torch.Tensor, batch_size: int = 1000, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Sum over the examples of x of each per-example term of model.loss (with labels y for a conditional model),
    in eval mode (restored, also on error)."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    device = next(iter(model.parameters()), torch.empty(0)).device
    bounds = batch_bounds(x.shape[0], batch_size, model.min_batch)   # no batch smaller than the loss takes
    try:
        for i, j in zip(bounds[:-1], bounds[1:]):
            xb = x[i:j].to(device, non_blocking=True)     # streamed data: read batch by batch
            terms = model.loss(xb) if y is None else model.loss(xb, y[i:j])
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v.sum()
    finally:
        model.train(was_training)
    return sums


def evaluate_terms(model, x: torch.Tensor, batch_size: int = 1000, y: torch.Tensor | None = None) -> dict[str, float]:
    """Mean of each per-example term of model.loss over x, in eval mode (the mode is restored, also on error)."""
    return {k: v.item() / x.shape[0] for k, v in sum_terms(model, x, batch_size, y).items()}


def validation_terms(model, x: torch.Tensor, batch_size: int, world: World,
                     y: torch.Tensor | None = None) -> dict[str, float]:
    """evaluate_terms over all ranks: each batch of x is the one a single process would see, each rank sums its
    share of it (so losses that couple a batch's examples see the same batch), and the sums are all-reduced
    (not means of means)."""
    if not world.distributed:
        return evaluate_terms(model, x, batch_size, y)
    sums: dict[str, torch.Tensor] = {}
    bounds = batch_bounds(x.shape[0], batch_size, model.min_batch)
    for i, j in zip(bounds[:-1], bounds[1:]):
        m = j - i
        if m >= world.size:
            a, b = share(m, world)
            with global_batch(m, world):
                part = sum_terms(model, x[i + a:i + b], m, None if y is None else y[i + a:i + b])
        else:           # a last batch of fewer rows than ranks: each rank computes all of it, rank 0 counts it
            part = sum_terms(model, x[i:i + m], m, None if y is None else y[i:i + m])
            if not world.main:
                part = {k: torch.zeros_like(v) for k, v in part.items()}
        for k, v in part.items():
            sums[k] = sums.get(k, 0) + v
    names = list(sums)
    total = all_sum(torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=x.device)
                                 for k in names]), world)
    return {k: v / x.shape[0] for k, v in zip(names, total.tolist())}


def data_dependent_init(model, x: torch.Tensor, seed: int, y: torch.Tensor | None = None) -> None:
    """Initialise layers that set themselves from their first training batch (ActNorm) on the first global batch,
    with noise from a seed of their own: the same on every rank and for any number of ranks, and the training
    noise streams are left untouched."""
    if not any(getattr(m, "initialized", 1) == 0 for m in model.modules()):
        return
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(derived_seed(seed, "data-init"))
        model.loss(x) if y is None else model.loss(x, y)


class Objective(nn.Module):
    """model.loss as a module's forward, so that DistributedDataParallel (which hooks forward) can wrap it;
    a conditional model (`conditional = True`) gets the labels too: model.loss(x, y)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.model.loss(x) if y is None else self.model.loss(x, y)


def training_step(model, cfg: TrainConfig, device: torch.device, world: World):
    """The function that maps a batch to its loss terms: model.loss, wrapped in DDP under torchrun, in autocast
    for bf16/fp16, compiled with --compile."""
    step = Objective(model)
    if world.distributed:
        step = ddp(step, device)
    if cfg.compile:
        step = torch.compile(step)
    if cfg.precision == "fp32":
        return step
    if cfg.precision == "fp16" and device.type != "cuda":
        raise VgmError("fp16 training needs a GPU (--device cuda); on a CPU use --precision bf16")
    dtype = AUTOCAST[cfg.precision]

    def autocast_step(x, y=None):
        with torch.autocast(device.type, dtype=dtype):
            terms = step(x, y)
        return {k: v.float() for k, v in terms.items()}
    return autocast_step


def adam(params, lr: float) -> torch.optim.Optimizer:
    """torch's Adam, fused (one kernel over every tensor: 3.6x faster than the default on a CPU for the MNIST VAE's
    1.1M parameters, same numbers to ~1e-8) where the parameters' device has the fused kernel."""
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def optimizers(model, cfg: TrainConfig, world: World) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """Adam on the model's parameters; a model that trains a second network against it (e.g. FactorVAE's
    discriminator) names those parameters in `auxiliary_parameters()` and returns their loss as terms["aux_loss"]
    (computed from detached inputs): they get an Adam of their own (lr = config.aux_lr, else --lr), stepped on
    aux_loss alone, and both optimizers' states are checkpointed."""
    aux = list(model.auxiliary_parameters()) if hasattr(model, "auxiliary_parameters") else []
    if not aux:
        return adam(model.parameters(), cfg.lr), None
    if world.distributed:
        raise VgmError(f"{model.kind} trains a second optimizer and runs in one process (no torchrun)")
    ids = {id(p) for p in aux}
    main = [p for p in model.parameters() if id(p) not in ids]
    lr = getattr(model.config, "aux_lr", None) or cfg.lr
    return adam(main, cfg.lr), adam(aux, lr)


def all_finite(model, opt: torch.optim.Optimizer) -> bool:
    """Whether every floating weight, buffer and optimizer-state tensor is finite: their largest |value| (a NaN
    propagates through it), from the fused per-device kernels of get_total_norm, then one device sync."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    tensors += [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t) and t.is_floating_point()]
    return bool(torch.isfinite(get_total_norm([t for t in tensors if t.numel()], norm_type=math.inf)))


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG states at the end of an epoch, kept in the checkpoint for inspection (training reseeds each epoch
    from the run seed, so resuming does not need them)."""
    state = {"torch": torch.get_rng_state(), "shuffle": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


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
    The batches follow batch_bounds (no batch smaller than model.min_batch); the learning rate of each step is
    cfg.lr · lr_factor(step, ...) (the checkpoint keeps the step count); cfg.clip_grad clips the model's
    gradient by its global norm (the share of steps clipped is the row's "clipped"); cfg.patience stops once
    that many epochs have passed without a better validation score (a resumed run stops where it would have).
    A NaN or infinite loss, weight or validation term stops training with a VgmError before the epoch is
    written, so the files hold the last finite epoch. Each epoch reseeds its shuffle (derived from cfg.seed and
    the epoch, the same on every rank) and its training noise (from cfg.seed, the epoch and the rank), never from
    cfg.seed itself, which the caller may use for the initialisation; so a resumed run needs no saved RNG state.
    Under torchrun (vgm.distributed) each rank trains on its share of every global batch through DDP and only
    rank 0 writes files and prints.
    progress: a per-epoch line on stderr, and a progress bar within each epoch when stderr is a terminal.
    """
    if resume and run_dir is None:
        raise VgmError("resume needs the run folder that holds the checkpoint")
    world = setup(resolve_device(cfg.device))
    device = device_for(resolve_device(cfg.device), world)
    check_world(cfg, data, world, model)
    model.to(device).train()
    data = data.to(device)
    train = data.train
    n = train.shape[0]
    opt, aux_opt = optimizers(model, cfg, world)
    opts = [opt] if aux_opt is None else [opt, aux_opt]
    base_lrs = [o.param_groups[0]["lr"] for o in opts]      # (before a checkpoint's scheduled rates replace them)
    main_params = [p for g in opt.param_groups for p in g["params"]]
    aux_params = [] if aux_opt is None else [p for g in aux_opt.param_groups for p in g["params"]]
    labels = data.train_labels if getattr(model, "conditional", False) else None
    if getattr(model, "conditional", False) and (labels is None or data.val_labels is None):
        raise VgmError(f"{model.kind} is conditioned on labels, and {data.name or 'these data'} have none")
    if data.streamed and labels is not None:
        raise VgmError(f"{model.kind} needs labels, which streamed data do not carry: raise --memory-limit")
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    gen = torch.Generator(device=device)
    run_dir = Path(run_dir) if run_dir is not None else None
    writes = run_dir is not None and world.main
    ckpt = run_dir / "checkpoint.safetensors" if run_dir else None
    start, best, best_epoch, history, best_state = 0, -math.inf, -1, [], None
    B = cfg.batch_size
    check_batches(model, n, B, world)
    bounds = batch_bounds(n, B, model.min_batch, world.size)
    steps = len(bounds) - 1
    step = 0                    # optimizer steps taken: what the learning-rate schedule reads
    if resume:
        _, info = load_checkpoint(ckpt, model, opts)
        for group in opt.param_groups:
            group["lr"] = cfg.lr
        start, best, best_epoch, history = info["epoch"], info["best"], info["best_epoch"], info["history"]
        step = info.get("step", start * steps)
        if info.get("world_size", 1) != world.size and progress and world.main:
            print(f"resuming a run trained by {info.get('world_size', 1)} process(es) with {world.size}: the "
                  "global batch is the same, so the optimisation is too (the sampling noise streams differ)",
                  file=sys.stderr)
        if writes:
            write_metrics(run_dir, history)     # drop lines of an epoch that never reached its checkpoint
    elif writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_metrics(run_dir, [])
    progress = progress and world.main
    bars = progress and sys.stderr.isatty()
    board = tensorboard_writer(run_dir, cfg) if writes else None
    step_fn = None
    scheduled = cfg.warmup > 0 or cfg.lr_schedule != "constant"
    total_steps = cfg.epochs * steps
    names: list[str] | None = None
    buf = None
    stream = None
    if data.streamed:        # batches read from the disk cache by DataLoader workers, shuffled by `gen` each epoch
        from .data import loader
        stream = loader(train, B, generator=torch.Generator().manual_seed(0), workers=cfg.workers,
                        pin_memory=device.type == "cuda", device=device)
    for epoch in range(start, cfg.epochs):
        if cfg.patience and best_epoch > 0 and epoch - best_epoch >= cfg.patience:
            if progress:
                print(f"stopped after epoch {epoch}: no better validation score for {cfg.patience} epochs "
                      f"(--patience); epoch {best_epoch}, the best, is kept", file=sys.stderr, flush=True)
            break
        t0 = time.perf_counter()
        gen.manual_seed(derived_seed(cfg.seed, f"shuffle:{epoch}"))
        torch.manual_seed(derived_seed(cfg.seed, f"train:{epoch}:{world.rank}"))
        if stream is None:
            perm = torch.randperm(n, generator=gen, device=device)
            xs = train[perm]
            ys = None if labels is None else labels[perm]
            if data.binarize == "dynamic" and not world.distributed:
                xs = torch.bernoulli(xs, generator=gen)
            batches = (xs[bounds[i]:bounds[i + 1]] for i in range(steps))
        else:
            stream.order.generator.manual_seed(derived_seed(cfg.seed, f"shuffle:{epoch}"))
            xs, ys, batches = None, None, merge_tail(stream, steps)
        if step_fn is None:
            first = xs[:B] if xs is not None else next(iter(loader(train, B)))
            if data.binarize == "dynamic" and world.distributed:     # (xs is not binarized there); alike on every rank
                init_gen = torch.Generator(device=device).manual_seed(derived_seed(cfg.seed, "init-binarize"))
                first = torch.bernoulli(first, generator=init_gen)
            data_dependent_init(model, first.to(device), cfg.seed, None if ys is None else ys[:B])
            step_fn = training_step(model, cfg, device, world)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not bars,
                   dynamic_ncols=True, file=sys.stderr)
        checked, seen = 0, 0
        clipped = torch.zeros((), device=device)       # steps whose gradient norm exceeded cfg.clip_grad (no sync)
        for i, rows in enumerate(batches):
            y = None if ys is None else ys[bounds[i]:bounds[i + 1]]
            if world.distributed:       # rank r's share of the global batch; its loss weighted by its share
                m = rows.shape[0] - rows.shape[0] % world.size    # (a last batch is cut to a multiple of W)
                a, b = share(m, world)
                rows, y = rows[a:b], None if y is None else y[a:b]
                if data.binarize == "dynamic":  # each rank binarizes only its rows, with its own training noise
                    rows = torch.bernoulli(rows)
                with global_batch(m, world):
                    terms = step_fn(rows, y)
                loss = terms["loss"].sum() * (world.size / m)
            else:
                terms = step_fn(rows, y)
                loss = terms["loss"].mean()
            seen += rows.shape[0]
            if scheduled:                           # (Python floats: no sync)
                f = lr_factor(step, total_steps, cfg.warmup, cfg.lr_schedule)
                for o, lr in zip(opts, base_lrs):
                    o.param_groups[0]["lr"] = lr * f
            opt.zero_grad(set_to_none=True)
            if aux_opt is None:
                scaler.scale(loss).backward()
            else:                       # each loss reaches only its own parameters
                aux_opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward(inputs=main_params)
                scaler.scale(terms["aux_loss"].mean()).backward(inputs=aux_params)
                scaler.step(aux_opt)
            if cfg.clip_grad:
                scaler.unscale_(opt)
                clipped += torch.nn.utils.clip_grad_norm_(main_params, cfg.clip_grad) > cfg.clip_grad
            scaler.step(opt)
            scaler.update()
            step += 1
            if buf is None:
                names = list(terms)
                buf = torch.zeros(steps, len(names), device=device)
            torch.sum(torch.stack(list(terms.values())).detach(), dim=1, out=buf[i])    # one kernel per step
            if (i + 1) % cfg.log_every == 0 or i + 1 == steps:
                window = buf[checked:i + 1]
                finite = torch.isfinite(window).all(dim=1)
                if not all_true(bool(finite.all()), device, world):
                    bar.close()
                    bad = checked + int((~finite).nonzero()[0, 0]) if not bool(finite.all()) else checked
                    restore_best(model, best_state, run_dir, best_epoch)
                    raise nan_error(f"loss became NaN or infinite at epoch {epoch + 1}, step {bad + 1}",
                                    run_dir, history)
                if bars:
                    per_ex = window[:, names.index("loss")].sum().item() / max(1, seen)
                    bar.set_postfix(loss=f"{per_ex:.3f}", refresh=False)
                    bar.update(i + 1 - checked)
                checked, seen = i + 1, 0
        bar.close()
        finite = all(all_finite(model, o) for o in opts)         # (a sync: the epoch's steps are done here)
        train_seconds = time.perf_counter() - t0
        if not finite:
            restore_best(model, best_state, run_dir, best_epoch)
            raise nan_error(f"the weights became NaN or infinite in epoch {epoch + 1} (a NaN or infinite "
                            "gradient)", run_dir, history)
        val = validation_terms(model, data.val, cfg.eval_batch_size, world,
                               None if labels is None else data.val_labels)
        if not all(math.isfinite(v) for v in val.values()):
            restore_best(model, best_state, run_dir, best_epoch)
            raise nan_error(f"the validation terms became NaN or infinite at epoch {epoch + 1}", run_dir, history)
        sums = all_sum(buf.sum(0).double(), world).tolist()
        n_seen = sum(b - a - (b - a) % world.size for a, b in zip(bounds[:-1], bounds[1:]))   # (torchrun's cut)
        row = {"epoch": epoch + 1,
               "train": {k: s / n_seen for k, s in zip(names, sums)},
               "val": val,
               "seconds": round(time.perf_counter() - t0, 4), "train_seconds": round(train_seconds, 4)}
        if cfg.clip_grad:
            row["clipped"] = clipped.item() / steps      # the share of this epoch's steps that were clipped
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
        if writes:
            if improved:
                model.save(run_dir)
            append_metrics(run_dir, row)
            save_checkpoint(ckpt, model, opts, rng_state(gen, device),
                            {"epoch": epoch + 1, "best": best, "best_epoch": best_epoch, "history": history,
                             "world_size": world.size, "step": step})
        if board is not None:
            log_epoch(board, model, row, opt, n_seen / max(row["seconds"], 1e-9), data)
    if board is not None:
        board.close()
    restore_best(model, best_state, run_dir, best_epoch)
    return history


def check_batches(model, n: int, batch_size: int, world: World) -> None:
    """A model whose loss couples a batch (model.min_batch > 1) needs batches, and data, of at least that many."""
    least = model.min_batch
    if batch_size < least:
        raise VgmError(f"{model.kind} needs batches of at least {least} examples: its loss couples the examples of "
                       f"a batch (--batch-size >= {least})")
    if n - n % world.size < least:
        raise VgmError(f"{model.kind} needs at least {least} training examples (a batch of them), got {n}")


def check_world(cfg: TrainConfig, data: Splits, world: World, model=None) -> None:
    """The global batch must split evenly over the ranks, every rank needs training examples, and the model's
    batch statistics must not be per rank (`model.per_rank_statistics`: why a run would depend on the number of
    processes, or empty)."""
    if data.train.shape[0] == 0:
        raise VgmError("the training split is empty")
    if not world.distributed:
        return
    why = getattr(model, "per_rank_statistics", "")
    if why:
        raise VgmError(f"{model.kind} cannot train under torchrun yet: {why}, so the run would depend on the number "
                       "of processes; train it in one process")
    if cfg.batch_size % world.size:
        raise VgmError(f"--batch-size {cfg.batch_size} is the global batch and must divide evenly over the "
                       f"{world.size} processes (e.g. {cfg.batch_size - cfg.batch_size % world.size or world.size})")
    if data.train.shape[0] < world.size:
        raise VgmError(f"{data.train.shape[0]} training examples cannot be shared by {world.size} processes")


def tensorboard_writer(run_dir: Path, cfg: TrainConfig):
    """A TensorBoard SummaryWriter in RUN_DIR/tensorboard (rank 0 only), or None without --tensorboard."""
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VgmError("--tensorboard needs the tensorboard package: pip install 'vgm[tensorboard]'") from None
    return SummaryWriter(str(run_dir / "tensorboard"))


IMAGES_EVERY = 5     # epochs between sample / reconstruction grids in TensorBoard


@torch.no_grad()
def log_epoch(board, model, row: dict, opt, examples_per_s: float, data: Splits) -> None:
    """Per-epoch train/val terms, learning rate and throughput; image grids of samples and reconstructions
    every IMAGES_EVERY epochs for image models."""
    e = row["epoch"]
    for split in ("train", "val"):
        for k, v in row[split].items():
            board.add_scalar(f"{split}/{k}", v, e)
    board.add_scalar("lr", opt.param_groups[0]["lr"], e)
    board.add_scalar("examples_per_s", examples_per_s, e)
    if data.kind == "images" and (e == 1 or e % IMAGES_EVERY == 0):
        was_training = model.training
        model.eval()
        try:
            board.add_images("samples", model.sample(16).clamp(0, 1).float(), e)
            x = data.val[:8]
            board.add_images("reconstructions", torch.cat([x, model.reconstruct(x)]).clamp(0, 1).float(), e)
        except Exception:          # a model without sample/reconstruct for pictures: scalars only  # noqa: BLE001
            pass
        finally:
            model.train(was_training)
    board.flush()


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
        keys = [k for k in ("elbo", "recon", "recon_word_dropout", "kl") if k in d] or ["loss"]
        return " ".join(f"{k} {d[k]:.3f}" for k in keys)
    clipped = f"  clipped {row['clipped']:.0%}" if "clipped" in row else ""
    return (f"epoch {row['epoch']:>3}/{epochs}  train {terms(row['train'])}  |  val {terms(row['val'])}{clipped}  "
            f"({row['seconds']:.1f}s)")


def load_model_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(Path(run_dir) / "model.safetensors")[0]


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    atomic_write(Path(run_dir) / "metrics.jsonl",
                 "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows).encode())


def append_metrics(run_dir: Path, row: dict) -> None:
    with open(Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row, allow_nan=False) + "\n")
        f.flush()

