"""Several processes with torchrun: which process this is, and the few collective steps training needs.

vgm does not launch processes itself: `torchrun --nproc-per-node N -m vgm train ...` (or `vgm train --nproc N`,
which runs exactly that) starts N copies, and each reads its rank from the environment torchrun sets (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). The process group uses gloo on CPU and NCCL on CUDA.
Semantics (stated in the README): --batch-size is the global batch; rank r of W takes its contiguous share of
every global batch; gradients are averaged by DistributedDataParallel with each rank's loss weighted by its share,
so a step's gradient is the global batch mean whatever W is; validation sums and counts are all-reduced.
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import VgmError

TIMEOUT = datetime.timedelta(minutes=10)     # a collective that waits longer than this fails instead of hanging


@dataclass(frozen=True)
class World:
    """This process's place among the W processes of a run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def env_world() -> World:
    """The World that torchrun's environment describes (a single process without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise VgmError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if size < 1 or not 0 <= rank < size:
        raise VgmError(f"bad torchrun environment: RANK {rank}, WORLD_SIZE {size}")
    return World(rank, size, local)


def setup(device: torch.device) -> World:
    """Join the process group of a torchrun launch (once); a single process needs none."""
    world = env_world()
    if not world.distributed or dist.is_initialized():
        return world
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    try:
        # torchrun --max-restarts reuses its agent's store for the restarted group, so the first attempt's gloo
        # addresses are still there and a restarted rank may wait forever on a dead peer: give each attempt
        # its own key prefix
        store, _, _ = next(dist.rendezvous("env://", world.rank, world.size, timeout=TIMEOUT))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend, store=dist.PrefixStore(f"vgm/attempt_{attempt}", store),
                                rank=world.rank, world_size=world.size, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VgmError(f"cannot join the torchrun process group ({backend}): {first}") from None
    return world


def device_for(device: torch.device, world: World) -> torch.device:
    """Under torchrun each process drives the GPU of its local rank."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def share(n: int, world: World) -> tuple[int, int]:
    """[start, stop) of rank r's contiguous share of n rows: sizes differ by at most one, lower ranks larger."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return start, start + base + (world.rank < extra)


def all_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """Σ over ranks of t, in place; t itself for one process."""
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_true(flag: bool, device: torch.device, world: World) -> bool:
    """True when flag holds on every rank (so that every rank takes the same branch, and none waits forever)."""
    if not world.distributed:
        return flag
    t = torch.tensor([0 if flag else 1], device=device)
    return int(all_sum(t, world)) == 0


# torch 2.13 renames all_gather_into_tensor (its old name warns); older releases have only that one
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

_BATCH: list[tuple[list[int], int]] = []     # the global batch being computed: every rank's share size, this rank


@contextlib.contextmanager
def global_batch(m: int, world: World):
    """While a rank computes its share of a global batch of m rows, gather_rows can put the whole batch
    together; the trainer opens one per step and per validation batch under torchrun."""
    if not world.distributed:
        yield
        return
    shares = (share(m, World(r, world.size)) for r in range(world.size))
    _BATCH.append(([b - a for a, b in shares], world.rank))
    try:
        yield
    finally:
        _BATCH.pop()


def gather_rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(rows of every rank's t in rank order, where this rank's rows start), for losses that couple the
    examples of a batch (β-TCVAE's estimate of q(z)): the same batch as one process would see, so the numbers do
    not depend on the number of processes. Gradients flow back to the rank that owns each row. Outside a
    global_batch (one process, evaluation), t itself and 0."""
    if not _BATCH:
        return t, 0
    sizes, rank = _BATCH[-1]
    most = max(sizes)
    padded = torch.cat([t, t.new_zeros(most - t.shape[0], *t.shape[1:])]) if t.shape[0] < most else t
    parts = _AllGather.apply(padded, rank, len(sizes)).unflatten(0, (len(sizes), most))
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]), sum(sizes[:rank])


class _AllGather(torch.autograd.Function):
    """(W·B, ...) = every rank's (B, ...) in rank order; the gradient of a rank's rows is the sum of what every
    rank's loss sends them (one all-reduce of the whole gradient, then this rank's slice)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, rank: int, size: int) -> torch.Tensor:
        ctx.rank, ctx.rows = rank, t.shape[0]
        out = t.new_empty(size * t.shape[0], *t.shape[1:])
        _all_gather_single(out, t.contiguous())
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


def ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """module in DistributedDataParallel without a buffer broadcast before each forward (a collective per step):
    every vgm buffer is a constant or changes alike on every rank (ActNorm's init is all-reduced, β-VAE's step
    counter counts the same steps; models with per-rank buffer statistics are refused), and with the gradients
    kept in DDP's buckets (no copy)."""
    from torch.nn.parallel import DistributedDataParallel
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        no_sync = {"forward_sync_buffers": False}       # (buffers are still synced once, at construction)
    else:                                               # older torch: broadcast_buffers=False skips that too
        no_sync = {"broadcast_buffers": False}
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   gradient_as_bucket_view=True, **no_sync)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
