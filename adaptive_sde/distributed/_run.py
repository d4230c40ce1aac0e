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
from typing import Any

import torch
import torch.distributed as dist

from adaptive_sde.distributed._shards import (
    Config,
    OutputShapes,
    Shard,
    ShardRecord,
    ShardStore,
    _plain,
    assigned_shards,
    differences,
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
    outputs: OutputShapes | None = None,
) -> ShardedResult:
    """Compute the shards of a run of ``n_samples`` on this process's share of them.

    **Arguments:**

    - ``work(shard)``: computes a shard, returning a :class:`ShardRecord` whose outputs have the
      shard's samples as first dimension and whose stats are numbers to be summed.
    - ``config``: the run's settings (JSON values; digests of its data, see
      :func:`~adaptive_sde.distributed.digest`). Every process must pass the same, and a store
      written under other settings is refused, with an error that names what differs.
    - ``out``: a directory for shard files and the manifest (resumable); ``None`` keeps
      everything in memory.
    - ``group``: the torch.distributed group (default: the default group, if initialised).
    - ``gather``: concatenate every shard's outputs on rank 0.
    - ``on_shard(shard, computed)``: called after each of this process's shards.
    - ``outputs``: optional, the names of ``work``'s outputs with the shape of one sample's
      output (``None``: any shape); a shard file with others is taken for damaged.

    A run first reads what the store holds (rank 0 removes the temporary files of killed
    runs and checks the manifest; each rank loads its shards; damaged files are reported with
    a :class:`~adaptive_sde.distributed.DamagedFileWarning` and computed again), then the ranks
    agree (one error for all of them, rather than some ranks waiting on the others for ever),
    then each computes its missing shards.
    """
    rank, world = rank_and_size(group)
    shards = plan_shards(n_samples, shard_size)
    mine = assigned_shards(shards, rank, world)
    store = ShardStore(out, config, outputs) if out is not None else None
    found, error = _scan(store, mine, rank, world)
    settings = store.config if store is not None else _comparable(config)
    missing = _agree(error, settings, len(mine) - len(found), group, rank, world)
    if store is not None and rank == 0 and missing:
        store.remove_manifest()  # it lists shards that are about to change

    result = ShardedResult(outputs=None, stats={})
    records: dict[int, ShardRecord] = {}
    for shard in mine:
        record = found.get(shard.index)
        computed = record is None
        if record is None:
            start = time.perf_counter()
            record = work(shard)
            record.stats["seconds"] = time.perf_counter() - start
            if store is not None:
                store.save(shard, record)
            result.computed.append(shard.index)
        else:
            result.reused.append(shard.index)
        records[shard.index] = record
        if on_shard is not None:
            on_shard(shard, computed)

    result.stats = _sum_stats([r.stats for r in records.values()], group, world)
    if store is not None and world > 1:
        dist.barrier(group)  # every shard file is in place before rank 0 reads them
    if rank == 0 and store is not None:
        result.manifest = store.write_manifest(shards, result.stats)
    if gather:
        everything = _gather(records, shards, store, group, rank, world)
        if rank == 0:
            result.outputs = _concatenate([everything[s.index] for s in shards])
    return result


def _scan(
    store: ShardStore | None, mine: list[Shard], rank: int, world: int
) -> tuple[dict[int, ShardRecord], BaseException | None]:
    """What the store already holds of this rank's shards, after rank 0 has removed stale
    temporary files and checked the manifest. With other processes, an error is returned
    rather than raised, so that every rank learns of it (see :func:`_agree`)."""
    found: dict[int, ShardRecord] = {}
    if store is None:
        return found, None
    try:
        if rank == 0:
            store.remove_temporary()
            store.check_manifest()
        for shard in mine:
            record = store.load(shard)
            if record is not None:
                found[shard.index] = record
    except Exception as error:
        if world == 1:
            raise
        return {}, error
    return found, None


def _comparable(config: Config) -> dict[str, Any]:
    """``config`` as the ranks compare it: JSON values, or nothing where it holds others."""
    try:
        return _plain(config)
    except TypeError:
        return {}


def _agree(
    error: BaseException | None,
    config: Config,
    missing: int,
    group: dist.ProcessGroup | None,
    rank: int,
    world: int,
) -> int:
    """Raise on every rank if any rank found an error, or if the ranks were given different
    settings; otherwise the number of shards still to compute, over all ranks. The collective
    also orders rank 0's removal of stale temporary files before anyone writes."""
    if world == 1:
        return missing
    views: list[tuple[str | None, str, dict[str, Any], int] | None] = [None] * world
    mine = (None if error is None else type(error).__name__, str(error), dict(config), missing)
    dist.all_gather_object(views, mine, group)
    if error is not None:
        raise error
    for other, view in enumerate(views):
        assert view is not None
        kind, message, _, _ = view
        if kind is not None:
            raise (ValueError if kind == "ValueError" else RuntimeError)(
                f"rank {other} of the group stopped the run: {kind}: {message}"
            )
    reference = views[0][2] if views[0] is not None else {}
    for other, view in enumerate(views):
        assert view is not None
        if view[2] != reference:
            found = "; ".join(differences(reference, view[2], "on rank 0", f"on rank {other}"))
            raise ValueError(
                f"the processes of the group were given different problems: {found}. Every "
                "rank must pass the same arguments and data (only device may differ), or its "
                "shards would not belong to one result"
            )
    return sum(view[3] for view in views if view is not None)


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
