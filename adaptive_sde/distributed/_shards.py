"""Shards: the unit of work, storage and resumption of a distributed run.

A run of ``n_samples`` is cut into shards of ``shard_size`` consecutive sample ids, whatever the
number of processes; rank ``r`` of ``w`` takes shards ``r, r + w, r + 2w, ...``. Because a
sample's noise depends only on the global seed and its id (counter-based random numbers, see
:mod:`adaptive_sde._random`) and every shard is solved as the same batch in any run, the result
of a run does not depend on how many processes computed it.

A :class:`ShardStore` keeps one file per finished shard. A shard is written to a temporary file
and renamed into place, so a process killed part-way leaves either a whole shard or none; a
rerun finds the finished shards and computes only the others. Each file records the settings of
the run that wrote it, and a rerun with other settings is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

Config = Mapping[str, Any]  # JSON-like: str, int, float, bool, None, and lists of them


@dataclass(frozen=True)
class Shard:
    """Samples ``start`` to ``stop - 1`` (their global ids), the ``index``-th shard of a run."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.arange(self.start, self.stop, dtype=torch.int64, device=device)


def plan_shards(n_samples: int, shard_size: int) -> list[Shard]:
    """The shards of a run of ``n_samples``, each of ``shard_size`` samples (the last may have
    fewer)."""
    for name, value in (("n_samples", n_samples), ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return [
        Shard(i, start, min(start + shard_size, n_samples))
        for i, start in enumerate(range(0, n_samples, shard_size))
    ]


def assigned_shards(shards: list[Shard], rank: int, world_size: int) -> list[Shard]:
    """The shards rank ``rank`` of ``world_size`` computes: every ``world_size``-th one."""
    return shards[rank::world_size]


@dataclass
class ShardRecord:
    """What a shard produced: per-sample tensors (first dimension = the shard's samples) and
    statistics to be summed over the run."""

    outputs: dict[str, torch.Tensor]
    stats: dict[str, float]


class ShardStore:
    """One ``.pt`` file per finished shard under ``directory``, and the run's ``manifest.json``.

    **Arguments:** ``directory`` (created if missing), ``config`` (the settings of the run; a
    shard file written under other settings is refused with a ``ValueError``).
    """

    MANIFEST = "manifest.json"

    def __init__(self, directory: str | os.PathLike[str], config: Config) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = _plain(config)

    def path(self, shard: Shard) -> Path:
        return self.directory / f"shard-{shard.index:06d}.pt"

    def load(self, shard: Shard) -> ShardRecord | None:
        """The record of a finished shard, or ``None`` if it has not been written."""
        path = self.path(shard)
        if not path.exists():
            return None
        data = torch.load(path, map_location="cpu", weights_only=True)
        written = json.loads(data["config"])
        if written != self.config or data["start"] != shard.start or data["stop"] != shard.stop:
            raise ValueError(
                f"{path} was written by a run with other settings ({written}, samples "
                f"{data['start']}..{data['stop'] - 1}); this run has {self.config}, samples "
                f"{shard.start}..{shard.stop - 1}. Use another output directory, or delete it "
                "to start over"
            )
        return ShardRecord(dict(data["outputs"]), dict(data["stats"]))

    def save(self, shard: Shard, record: ShardRecord) -> None:
        """Write atomically: a temporary file, then a rename."""
        path = self.path(shard)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        payload = {
            "config": json.dumps(self.config, sort_keys=True),
            "start": shard.start,
            "stop": shard.stop,
            "outputs": {k: v.detach().cpu() for k, v in record.outputs.items()},
            "stats": record.stats,
        }
        torch.save(payload, temporary)
        os.replace(temporary, path)

    def write_manifest(self, shards: list[Shard], stats: Mapping[str, float]) -> Path:
        """The list of shard files and the run's summed statistics, for readers of the run."""
        manifest = {
            "config": self.config,
            "shards": [
                {"index": s.index, "start": s.start, "stop": s.stop, "file": self.path(s).name}
                for s in shards
            ],
            "stats": dict(stats),
        }
        path = self.directory / self.MANIFEST
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)
        return path


def _plain(config: Config) -> dict[str, Any]:
    """``config`` as it reads back from JSON (tuples become lists), so comparisons hold."""
    try:
        plain: dict[str, Any] = json.loads(json.dumps(dict(config), sort_keys=True))
    except TypeError as error:
        raise TypeError(
            f"config must hold JSON values (numbers, strings, lists), {error}"
        ) from None
    return plain
