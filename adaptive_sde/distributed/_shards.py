"""Shards: the unit of work, storage and resumption of a distributed run.

A run of ``n_samples`` is cut into shards of ``shard_size`` consecutive sample ids, whatever the
number of processes; rank ``r`` of ``w`` takes shards ``r, r + w, r + 2w, ...``. Because a
sample's noise depends only on the global seed and its id (counter-based random numbers, see
:mod:`adaptive_sde._random`) and every shard is solved as the same batch in any run, the result
of a run does not depend on how many processes computed it.

A :class:`ShardStore` keeps one file per finished shard. A shard is written to a temporary file
in the same directory, flushed to disk (``fsync``) and renamed into place, so a process killed
part-way leaves either a whole shard or none (and a temporary file, removed by the next run); a
rerun finds the finished shards and computes only the others. Each file records the settings of
the run that wrote it (with digests of its data, see :mod:`._fingerprint`): a rerun with other
settings or data is refused, naming what differs, rather than mixed in. A file that cannot be
read back whole (empty, truncated, other contents) is reported and computed again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

Config = Mapping[str, Any]  # JSON-like: str, int, float, bool, None, and lists of them
OutputShapes = Mapping[str, "tuple[int, ...] | None"]  # output name -> one sample's shape


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
    check_count("n_samples", n_samples)
    check_count("shard_size", shard_size)
    return [
        Shard(i, start, min(start + shard_size, n_samples))
        for i, start in enumerate(range(0, n_samples, shard_size))
    ]


def check_count(name: str, value: object) -> int:
    """``value`` if it is a positive ``int``; a ValueError naming argument ``name`` if not."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r:.80}")
    return value


def assigned_shards(shards: list[Shard], rank: int, world_size: int) -> list[Shard]:
    """The shards rank ``rank`` of ``world_size`` computes: every ``world_size``-th one."""
    return shards[rank::world_size]


@dataclass
class ShardRecord:
    """What a shard produced: per-sample tensors (first dimension = the shard's samples) and
    statistics to be summed over the run."""

    outputs: dict[str, torch.Tensor]
    stats: dict[str, float]


class DamagedFileWarning(RuntimeWarning):
    """A shard file or manifest could not be read back whole; it is computed or written again."""


class ShardStore:
    """One ``.pt`` file per finished shard under ``directory``, and the run's ``manifest.json``.

    **Arguments:** ``directory`` (created if missing), ``config`` (the settings of the run, JSON
    values; a shard file or manifest written under other settings is refused with a
    ``ValueError`` that names what differs), ``outputs`` (optional: the names of a record's
    outputs, each with the shape of one sample's output, or ``None`` to check its name only; a
    file with other outputs counts as damaged).
    """

    MANIFEST = "manifest.json"
    # what _write_atomically names its temporary files: "<file>.<pid>-<random>.tmp"
    TEMPORARY = re.compile(r"^(shard-\d{6}\.pt|manifest\.json)\.\d+(-[0-9a-f]+)?\.tmp$")

    def __init__(
        self,
        directory: str | os.PathLike[str],
        config: Config,
        outputs: OutputShapes | None = None,
    ) -> None:
        self.directory = check_out(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = _plain(config)
        self.outputs = outputs

    def path(self, shard: Shard) -> Path:
        return self.directory / f"shard-{shard.index:06d}.pt"

    @property
    def manifest_path(self) -> Path:
        return self.directory / self.MANIFEST

    def remove_temporary(self) -> list[Path]:
        """Remove the temporary files of writes a killed run left half-done; returns them.

        Call it before any process of this run writes (a process's own temporary file is
        renamed or removed before its write returns)."""
        stale = sorted(p for p in self.directory.iterdir() if self.TEMPORARY.match(p.name))
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def check_manifest(self) -> None:
        """Refuse a manifest of a run with other settings; report a damaged one (the end of
        this run writes it again)."""
        path = self.manifest_path
        if not path.exists():
            return
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
                raise ValueError("no 'config' object")
        except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
            _warn_damaged(path, error, "it is ignored, and written again at the end of this run")
            return
        self._refuse_other_settings(path, manifest["config"])

    def remove_manifest(self) -> None:
        """Remove the manifest: the run is about to change the shards it lists."""
        self.manifest_path.unlink(missing_ok=True)

    def load(self, shard: Shard) -> ShardRecord | None:
        """The record of a finished shard, or ``None`` if it has not been written or its file is
        damaged (with a :class:`DamagedFileWarning`: the shard is computed again)."""
        path = self.path(shard)
        if not path.exists():
            return None
        try:
            data = _read_shard(path)
            written = _written_config(data)
        except _Damaged as error:
            _warn_damaged(path, error, f"shard {shard.index} is computed again")
            return None
        self._refuse_other_settings(path, written)
        try:
            return _record(data, shard, self.outputs)
        except _Damaged as error:
            _warn_damaged(path, error, f"shard {shard.index} is computed again")
            return None

    def save(self, shard: Shard, record: ShardRecord) -> None:
        """Write atomically and durably: a temporary file, fsync, then a rename. A record that
        would not load back (other outputs than declared, wrong numbers of samples) is refused:
        a rerun would take its file for damaged and compute it again each time."""
        payload = {
            "config": json.dumps(self.config, sort_keys=True),
            "start": shard.start,
            "stop": shard.stop,
            "outputs": {k: v.detach().cpu() for k, v in record.outputs.items()},
            "stats": record.stats,
        }
        try:
            _record(payload, shard, self.outputs)
        except _Damaged as error:
            message = f"the record of shard {shard.index} is not one to store: {error}"
            raise ValueError(message) from None
        _write_atomically(self.path(shard), lambda file: torch.save(payload, file))

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
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        _write_atomically(self.manifest_path, lambda file: file.write(text.encode("utf-8")))
        return self.manifest_path

    def _refuse_other_settings(self, path: Path, written: Mapping[str, Any]) -> None:
        if written == self.config:
            return
        raise ValueError(
            f"{path} was written by a run with other settings: "
            f"{'; '.join(differences(written, self.config))}. Its results would not join this "
            f"run's. Use another out directory, delete {self.directory} to start over, or run "
            "again with the same arguments and data as the run that wrote it (pass the same "
            "fingerprint= for what the job cannot hash itself, such as values a closure captures)"
        )


def check_out(out: object) -> Path:
    """``out`` as a directory path: a ``str`` or ``os.PathLike`` that is not a file."""
    if isinstance(out, bool) or not isinstance(out, (str, os.PathLike)):
        raise TypeError(
            f"out must be a directory path (str or os.PathLike) or None, got "
            f"{type(out).__name__} {out!r:.80}"
        )
    text = os.fspath(out)
    if not isinstance(text, str) or not text:
        raise ValueError(f"out must name a directory, got {out!r}")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out must be a directory, but {path} exists and is not one")
    return path


# what a digest field means, for the error that names what differs between two runs
_MEANING = {
    "y0": "its values differ",
    "ts": "the time points differ",
    "sde": "its class, parameters, buffers or attributes differ",
    "score_fn": "its code, the values it captures or a model's parameters differ",
    "fingerprint": "the fingerprint= values differ",
}
_MISSING = object()


def differences(
    theirs: Mapping[str, Any],
    ours: Mapping[str, Any],
    there: str = "there",
    here: str = "in this run",
    prefix: str = "",
) -> list[str]:
    """What differs between two configs, one phrase per setting: ``"seed (11 there, 12 in
    this run)"``, ``"y0 (its values differ)"``."""
    found: list[str] = []
    for key in sorted(set(theirs) | set(ours)):
        name = f"{prefix}{key}"
        a, b = theirs.get(key, _MISSING), ours.get(key, _MISSING)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += differences(a, b, there, here, f"{name}.")
        elif _is_digest(a) and _is_digest(b):
            found.append(f"{name} ({_MEANING.get(key, 'its contents differ')})")
        else:
            found.append(f"{name} ({_show(a)} {there}, {_show(b)} {here})")
    return found


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and value.startswith("sha256:")


def _show(value: object) -> str:
    if value is _MISSING:
        return "not recorded"
    if _is_digest(value):
        return "given"
    return f"{value!r:.60}"


class _Damaged(Exception):
    """A file that cannot be read back as what it should hold; the message says why."""


def _read_shard(path: Path) -> dict[str, Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as error:  # empty, truncated, not a torch file: unpickling fails variously
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise _Damaged(f"cannot be loaded: {detail}"[:300]) from None
    if not isinstance(data, dict):
        raise _Damaged(f"holds a {type(data).__name__}, not a shard's dict")
    return data


def _written_config(data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        written = json.loads(data["config"])
    except (KeyError, TypeError, ValueError):
        raise _Damaged("no readable 'config'") from None
    if not isinstance(written, dict):
        raise _Damaged("its 'config' is not an object")
    return written


def _record(data: Mapping[str, Any], shard: Shard, expected: OutputShapes | None) -> ShardRecord:
    """The shard's record, if ``data`` holds ``shard``'s samples (the ``expected`` outputs, if
    given) and numbers."""
    missing = {"start", "stop", "outputs", "stats"} - data.keys()
    if missing:
        raise _Damaged(f"no {', '.join(sorted(missing))}")
    if (data["start"], data["stop"]) != (shard.start, shard.stop):
        raise _Damaged(
            f"samples {data['start']!r}..{data['stop']!r} instead of {shard.start}..{shard.stop}"
        )
    outputs, stats = data["outputs"], data["stats"]
    if not isinstance(outputs, dict):
        raise _Damaged("'outputs' is not a dict of tensors")
    if expected is not None and set(outputs) != set(expected):
        raise _Damaged(f"outputs {sorted(outputs)} instead of {sorted(expected)}")
    for name, value in outputs.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise _Damaged(f"outputs[{name!r}] is not a tensor of samples")
        if value.shape[0] != shard.size:
            raise _Damaged(
                f"outputs[{name!r}] has {value.shape[0]} samples instead of {shard.size}"
            )
        shape = expected.get(name) if expected is not None else None
        if shape is not None and tuple(value.shape[1:]) != tuple(shape):
            raise _Damaged(
                f"outputs[{name!r}] has samples of shape {tuple(value.shape[1:])} instead of "
                f"{tuple(shape)}"
            )
    if not isinstance(stats, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in stats.values()
    ):
        raise _Damaged("'stats' is not a dict of numbers")
    return ShardRecord(dict(outputs), {str(k): float(v) for k, v in stats.items()})


def _warn_damaged(path: Path, error: Exception, action: str) -> None:
    warnings.warn(
        f"{path} is damaged ({error}): {action}. (Was the run killed while writing, or the file "
        "changed?)",
        DamagedFileWarning,
        stacklevel=4,
    )


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` so that readers and a rerun after a crash see the whole file or none: a
    temporary file in the same directory, flushed and fsync'ed, then renamed over ``path``."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); where directories cannot be opened, there is no need."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _plain(config: Config) -> dict[str, Any]:
    """``config`` as it reads back from JSON (tuples become lists), so comparisons hold."""
    try:
        plain: dict[str, Any] = json.loads(json.dumps(dict(config), sort_keys=True))
    except TypeError as error:
        raise TypeError(
            f"config must hold JSON values (numbers, strings, lists), {error}"
        ) from None
    return plain
