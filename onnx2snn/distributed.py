"""Data parallelism over processes: a thin layer on :mod:`torch.distributed`.

Calibration, ``calibrate``, ``finetune`` and ``verify`` run on one process, or on N
processes that each take a share of the data and combine what they measured so that the
result equals the one-process result:

- the process group comes from ``torchrun`` (its ``RANK`` / ``WORLD_SIZE`` /
  ``MASTER_ADDR`` environment) or from ``distributed=True``; gloo on the CPU, NCCL when the
  model is on a CUDA device;
- data are dealt out by batch: the batches are the ones one process would make, batch
  ``k`` goes to rank ``k % world_size`` (no sample twice, no padding), so each batch is
  computed exactly as one process computes it;
- sums that must come out exactly as one process adds them are gathered per batch and
  added in batch order (:func:`ordered_sum`); counts and integer-valued sums are
  all-reduced (exact in any order).

``distributed=None`` (the default everywhere) means: use the process group if one is
running or ``torchrun`` started this process, else run alone; ``False`` runs alone even
under ``torchrun`` (every rank does all the work).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch

from .errors import ConfigError, DataError


@dataclass(frozen=True)
class Shard:
    """This process's place: batch ``k`` of a stream belongs to it when ``k % world == rank``."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    def owns(self, k: int) -> bool:
        return k % self.world == self.rank

    def batches(self, n_batches: int) -> range:
        return range(self.rank, n_batches, self.world)

    def samples(self, n: int, batch_size: int) -> int:
        """Samples in this rank's batches of a stream of ``n`` samples in batches of ``batch_size``."""
        return sum(min(batch_size, n - k * batch_size) for k in self.batches(-(-n // batch_size)))


ALONE = Shard()


def _torchrun_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def available() -> bool:
    return torch.distributed.is_available()


def initialized() -> bool:
    return available() and torch.distributed.is_initialized()


def init(distributed: "bool | None" = None, device: "torch.device | str | None" = None) -> Shard:
    """This process's :class:`Shard`, joining the process group first when asked.

    ``distributed``: None = the running group, or ``torchrun``'s when it started this
    process; True = the same but an error when there is no group to join; False = alone.
    The backend is NCCL for a CUDA ``device`` and gloo otherwise.
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise ConfigError(f"distributed={distributed!r} is not valid: expected True, False or None", "distributed")
    if distributed is False:
        return ALONE
    if not initialized():
        if _torchrun_world() > 1 and "MASTER_ADDR" in os.environ and available():
            dev = torch.device(device) if device is not None else torch.device("cpu")
            backend = "nccl" if dev.type == "cuda" and torch.distributed.is_nccl_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            torch.distributed.init_process_group(backend=backend)
        elif distributed:
            raise ConfigError("distributed=True needs a process group: start the program with torchrun "
                              "(torchrun --nproc_per_node N ...) or call torch.distributed.init_process_group first",
                              "distributed")
    if not initialized():
        return ALONE
    return Shard(torch.distributed.get_rank(), torch.distributed.get_world_size())


def current() -> Shard:
    """The running group's shard (alone when there is none); joins nothing."""
    if not initialized():
        return ALONE
    return Shard(torch.distributed.get_rank(), torch.distributed.get_world_size())


def is_main() -> bool:
    """True on rank 0 (and when alone): the process that prints, shows progress and writes files."""
    return current().rank == 0


def _comm_device() -> torch.device:
    if initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(t: torch.Tensor, op: str = "sum", shard: Shard = ALONE) -> torch.Tensor:
    """``t`` reduced over the ranks (``op``: sum / max / min), as a new tensor on ``t``'s device."""
    if not shard.active:
        return t.clone()
    ops = {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX,
           "min": torch.distributed.ReduceOp.MIN}
    buf = t.detach().to(_comm_device(), copy=True)
    torch.distributed.all_reduce(buf, op=ops[op])
    return buf.to(t.device)


def all_gather(obj: Any, shard: Shard = ALONE) -> list:
    """Every rank's ``obj`` (any picklable value), in rank order, on every rank."""
    if not shard.active:
        return [obj]
    out: list = [None] * shard.world
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, shard: Shard = ALONE, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not shard.active:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier(shard: Shard = ALONE) -> None:
    if shard.active:
        torch.distributed.barrier()


def gather_batches(items: Sequence[tuple[int, Any]], shard: Shard = ALONE) -> list[Any]:
    """``(batch index, value)`` pairs from every rank -> the values in batch order (all ranks)."""
    if not shard.active:
        return [v for _, v in sorted(items, key=lambda kv: kv[0])]
    merged = [kv for part in all_gather(list(items), shard) for kv in part]
    return [v for _, v in sorted(merged, key=lambda kv: kv[0])]


def ordered_sum(items: Sequence[tuple[int, Any]], shard: Shard = ALONE, start: Any = 0.0) -> Any:
    """The sum of per-batch values in batch order over all ranks: exactly what one process
    adding them batch after batch gets (floating-point addition is not associative)."""
    total = start
    for v in gather_batches(items, shard):
        total = total + v
    return total


def shard_batches(batches: Iterable, shard: Shard = ALONE) -> Iterator:
    """The batches of a stream that belong to this rank (batch ``k`` to rank ``k % world``).
    Every rank still reads the whole stream; pass data whose batches can be cut without
    reading (tensors, arrays, datasets, paths) where the API offers it."""
    for k, b in enumerate(batches):
        if shard.owns(k):
            yield b


def data_parallel(twin: torch.nn.Module, dev: torch.device, shard: Shard) -> torch.nn.Module:
    """The twin wrapped in DistributedDataParallel when running on several ranks."""
    if not shard.active:
        return twin
    from torch.nn.parallel import DistributedDataParallel

    ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
    # static graph: the same parameters take part in every step (unused ones are found once)
    return DistributedDataParallel(twin, device_ids=ids, static_graph=True)


def batch_share(xb: torch.Tensor, yb: Any, shard: Shard) -> tuple[torch.Tensor, Any, float]:
    """This rank's part of a batch (the batch split in ``world`` contiguous parts) and the
    weight of its loss, ``world * part / batch``: DDP averages the ranks' gradients, so the
    update is that of the whole batch's mean loss. A rank left with no sample (a batch
    smaller than the world) computes the first sample with weight 0."""
    if not shard.active:
        return xb, yb, 1.0
    n = len(xb)
    lo, hi = n * shard.rank // shard.world, n * (shard.rank + 1) // shard.world
    weight = shard.world * (hi - lo) / n
    if hi == lo:
        lo, hi = 0, 1
    if yb is None:  # inputs alone (distillation)
        y = None
    elif isinstance(yb, torch.Tensor) and yb.dim() > 0 and len(yb) == n:
        y = yb[lo:hi]
    elif isinstance(yb, (list, tuple)) and len(yb) == n:
        y = type(yb)(yb[lo:hi]) if isinstance(yb, list) else tuple(yb[lo:hi])
    else:
        raise DataError(f"cannot split the targets of a batch of {n} over {shard.world} processes: targets must "
                        f"be a tensor or a list with one entry per sample, got {type(yb).__name__}")
    return xb[lo:hi], y, weight


__all__ = ["Shard", "ALONE", "init", "current", "is_main", "initialized", "all_reduce", "all_gather", "broadcast",
           "barrier", "gather_batches", "ordered_sum", "shard_batches",
           "data_parallel", "batch_share"]
