"""Run the shards of a job across the processes of a torch.distributed group.

Every process computes its own shards (:func:`~adaptive_sde.distributed.assigned_shards`),
skipping those already in the store; statistics are summed across processes with an
all-reduce; the per-sample outputs are gathered to rank 0, from the store when there is one
(so nothing large crosses the process group) and by ``gather_object`` otherwise. The same code
runs on the gloo backend (CPU) and NCCL (GPUs), and in a single process without any group.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from adaptive_sde.distributed._shards import (
    Config,
    Shard,
    ShardRecord,
    ShardStore,
    assigned_shards,
    plan_shards,
)

Work = Callable[[Shard], ShardRecord]
OnShard = Callable[[Shard, bool], None]


@dataclass
class ShardedResult:
    """The outcome of a sharded run, as one process sees it.

    - ``outputs``: the per-sample outputs of all shards, concatenated in sample order, on rank 0
      (``None`` on the other ranks, or with ``gather=False``).
    - ``stats``: statistics summed over every shard of the run (on every rank).
    - ``computed`` / ``reused``: the shards this process computed now / found in the store.
    - ``manifest``: the store's manifest file, if there is a store.
    """

    outputs: dict[str, torch.Tensor] | None
    stats: dict[str, float]
    computed: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    manifest: Path | None = None


def rank_and_size(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """This process's rank and the group's size; ``(0, 1)`` without torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def run_shards(
    work: Work,
    n_samples: int,
    shard_size: int,
    config: Config,
    *,
    out: str | os.PathLike[str] | None = None,
    group: dist.ProcessGroup | None = None,
    gather: bool = True,
    on_shard: OnShard | None = None,
) -> ShardedResult:
    """Compute the shards of a run of ``n_samples`` on this process's share of them.

    **Arguments:**

    - ``work(shard)``: computes a shard, returning a :class:`ShardRecord` whose outputs have the
      shard's samples as first dimension and whose stats are numbers to be summed.
    - ``config``: the run's settings (JSON values); a store written under others is refused.
    - ``out``: a directory for shard files and the manifest (resumable); ``None`` keeps
      everything in memory.
    - ``group``: the torch.distributed group (default: the default group, if initialised).
    - ``gather``: concatenate every shard's outputs on rank 0.
    - ``on_shard(shard, computed)``: called after each of this process's shards.
    """
    rank, world = rank_and_size(group)
    shards = plan_shards(n_samples, shard_size)
    store = ShardStore(out, config) if out is not None else None
    result = ShardedResult(outputs=None, stats={})
    mine: dict[int, ShardRecord] = {}
    for shard in assigned_shards(shards, rank, world):
        record = store.load(shard) if store is not None else None
        if record is None:
            start = time.perf_counter()
            record = work(shard)
            record.stats["seconds"] = time.perf_counter() - start
            if store is not None:
                store.save(shard, record)
            result.computed.append(shard.index)
        else:
            result.reused.append(shard.index)
        mine[shard.index] = record
        if on_shard is not None:
            on_shard(shard, shard.index in result.computed)

    result.stats = _sum_stats([r.stats for r in mine.values()], group, world)
    if store is not None and world > 1:
        dist.barrier(group)  # every shard file is in place before rank 0 reads them
    if rank == 0 and store is not None:
        result.manifest = store.write_manifest(shards, result.stats)
    if gather:
        records = _gather(mine, shards, store, group, rank, world)
        if rank == 0:
            result.outputs = _concatenate([records[s.index] for s in shards])
    return result


def _sum_stats(
    stats: list[dict[str, float]], group: dist.ProcessGroup | None, world: int
) -> dict[str, float]:
    names = sorted({name for s in stats for name in s})
    if world > 1:  # every rank must agree on the names before the all-reduce
        everyone: list[list[str] | None] = [None] * world
        dist.all_gather_object(everyone, names, group)
        names = sorted({name for part in everyone for name in part or []})
    total = torch.tensor(
        [sum(s.get(name, 0.0) for s in stats) for name in names], dtype=torch.float64
    )
    if world > 1:
        device = _collective_device(group)
        reduced = total.to(device)
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
        total = reduced.cpu()
    return dict(zip(names, total.tolist(), strict=True))


def _gather(
    mine: dict[int, ShardRecord],
    shards: list[Shard],
    store: ShardStore | None,
    group: dist.ProcessGroup | None,
    rank: int,
    world: int,
) -> dict[int, ShardRecord]:
    if world == 1:
        return mine
    if store is not None:  # rank 0 reads the others' files; nothing large crosses the group
        if rank != 0:
            return {}
        loaded = dict(mine)
        for shard in shards:
            if shard.index in loaded:
                continue
            record = store.load(shard)
            if record is None:
                raise RuntimeError(f"shard {shard.index} is missing from {store.directory}")
            loaded[shard.index] = record
        return loaded
    parts: list[dict[int, ShardRecord] | None] | None = [None] * world if rank == 0 else None
    cpu = {
        i: ShardRecord({k: v.cpu() for k, v in r.outputs.items()}, r.stats) for i, r in mine.items()
    }
    dist.gather_object(cpu, parts, dst=0, group=group)
    if rank != 0:
        return {}
    return {i: r for part in parts or [] for i, r in (part or {}).items()}


def _concatenate(records: list[ShardRecord]) -> dict[str, torch.Tensor]:
    names = records[0].outputs.keys()
    return {name: torch.cat([r.outputs[name].cpu() for r in records]) for name in names}


def _collective_device(group: dist.ProcessGroup | None) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo reduces CPU tensors."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
