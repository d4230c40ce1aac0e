"""Ensembles and sampling across the processes of a torch.distributed group.

A large job is cut into shards of consecutive sample ids; each process of the group computes
every ``world_size``-th shard, statistics are summed across processes and the samples gathered
to rank 0. Every sample's noise is keyed by a global seed and its id, so the result does not
depend on the number of processes; with an output directory, finished shards are files and a
rerun after a failure computes only the missing ones (a rerun with other data or settings is
refused: the files record digests of what determines the result). Launch with ``torchrun``
(gloo on CPUs, NCCL on GPUs), e.g. ``torchrun --nproc-per-node 2 -m adaptive_sde sample-gmm
--samples 20000 --out DIR``.
"""

from adaptive_sde.distributed._fingerprint import digest
from adaptive_sde.distributed._jobs import sample_distributed, solve_ensemble
from adaptive_sde.distributed._run import ShardedResult, rank_and_size, run_shards
from adaptive_sde.distributed._shards import (
    DamagedFileWarning,
    Shard,
    ShardRecord,
    ShardStore,
    assigned_shards,
    plan_shards,
)

__all__ = [
    "DamagedFileWarning",
    "Shard",
    "ShardRecord",
    "ShardStore",
    "ShardedResult",
    "assigned_shards",
    "digest",
    "plan_shards",
    "rank_and_size",
    "run_shards",
    "sample_distributed",
    "solve_ensemble",
]
