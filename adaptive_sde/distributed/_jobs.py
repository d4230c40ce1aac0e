"""The two jobs users distribute: a Monte-Carlo ensemble solve and a large ``sample`` call."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from adaptive_sde._integrate import solve
from adaptive_sde._solution import Result
from adaptive_sde.diffusion._forward import ForwardSDE
from adaptive_sde.diffusion._reverse import ScoreFn
from adaptive_sde.diffusion._sample import sample
from adaptive_sde.distributed._run import OnShard, ShardedResult, run_shards
from adaptive_sde.distributed._shards import Shard, ShardRecord


def solve_ensemble(
    sde: Any,
    y0: torch.Tensor,
    ts: torch.Tensor,
    n_samples: int,
    *,
    seed: int,
    shard_size: int = 4096,
    out: str | os.PathLike[str] | None = None,
    group: dist.ProcessGroup | None = None,
    gather: bool = True,
    device: torch.device | str | None = None,
    on_shard: OnShard | None = None,
    **solve_options: Any,
) -> ShardedResult:
    """Solve ``n_samples`` paths of ``sde`` with :func:`adaptive_sde.solve`, shard by shard,
    across the processes of a torch.distributed group (or in this process without one).

    Sample ``i`` is driven by the Brownian path and signs of ``(seed, i)``, so the result is the
    same for any number of processes, and equal to one process computing the same shards.

    **Arguments:**

    - ``sde``, ``ts``, ``solve_options``: as for :func:`adaptive_sde.solve` (per-sample steps;
      ``bm`` cannot be given: each shard uses the default register with its global sample ids).
    - ``y0``: the initial state, shape (d,) for every sample or (n_samples, d).
    - ``seed``: an ``int``, the same on every process.
    - ``shard_size``, ``out``, ``group``, ``gather``, ``on_shard``: see
      :func:`~adaptive_sde.distributed.run_shards`.
    - ``device``: where this process solves (e.g. ``cuda:<local rank>``); default ``y0``'s.

    **Returns:** a :class:`~adaptive_sde.distributed.ShardedResult` whose ``outputs`` (rank 0)
    hold ``ys`` of shape (len(ts), n_samples, d), and per sample ``result`` (the result codes),
    ``nfe``, ``num_steps``; ``stats`` sums ``samples``, ``nfe``, ``accepted``, ``rejected``,
    ``failed`` and ``seconds`` over the run. Failed samples do not stop the run: they are
    counted in ``stats["failed"]`` (with a warning on rank 0) and marked in ``result``.
    """
    if "bm" in solve_options or "sample_ids" in solve_options:
        raise ValueError(
            "solve_ensemble draws each sample's noise from (seed, sample id): bm and sample_ids "
            "cannot be given"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, the same on every process, got {seed!r}")
    if y0.dim() not in (1, 2) or (y0.dim() == 2 and y0.shape[0] != n_samples):
        raise ValueError(
            f"y0 must have shape (d,) or (n_samples, d) = ({n_samples}, d), got {tuple(y0.shape)}"
        )
    device = torch.device(device) if device is not None else y0.device
    solve_options = {"throw": False, **solve_options}

    def work(shard: Shard) -> ShardRecord:
        if y0.dim() == 1:
            start = y0.to(device).expand(shard.size, -1).clone()
        else:
            start = y0[shard.start : shard.stop].to(device)
        solution = solve(
            sde,
            start,
            ts.to(device),
            seed=seed,
            sample_ids=shard.ids(device),
            **solve_options,
        )
        stats = solution.stats
        outputs = {
            "ys": solution.ys.detach().transpose(0, 1),  # samples first, for concatenation
            "result": stats.result,
            "nfe": stats.nfe,
            "num_steps": stats.num_steps,
        }
        return ShardRecord(
            outputs,
            {
                "samples": float(shard.size),
                "nfe": float(stats.total_nfe),
                "accepted": float(stats.total_accepted),
                "rejected": float(stats.total_rejected),
                "failed": float((stats.result != Result.SUCCESS).sum()),
            },
        )

    config = {
        "job": "solve_ensemble",
        "sde": type(sde).__name__,
        "n_samples": n_samples,
        "shard_size": shard_size,
        "seed": seed,
        "ts": ts.tolist(),
        "y0_shape": list(y0.shape),
        **_plain_options(solve_options),
    }
    result = run_shards(
        work, n_samples, shard_size, config, out=out, group=group, gather=gather, on_shard=on_shard
    )
    if result.outputs is not None:
        result.outputs["ys"] = result.outputs["ys"].transpose(0, 1)
    _warn_failed(result, "paths")
    return result


def sample_distributed(
    score_fn: ScoreFn,
    sde: ForwardSDE,
    sample_shape: Sequence[int],
    n_samples: int,
    *,
    seed: int,
    shard_size: int = 1024,
    out: str | os.PathLike[str] | None = None,
    group: dist.ProcessGroup | None = None,
    gather: bool = True,
    device: torch.device | str | None = None,
    on_shard: OnShard | None = None,
    **sample_options: Any,
) -> ShardedResult:
    """Draw ``n_samples`` samples with :func:`adaptive_sde.diffusion.sample`, shard by shard,
    across the processes of a torch.distributed group (or in this process without one).

    Sample ``i`` is drawn from the prior noise and Brownian path of ``(seed, i)``, so the
    samples are the same for any number of processes.

    **Arguments:** ``score_fn``, ``sde`` and ``sample_options`` as for
    :func:`~adaptive_sde.diffusion.sample` (``generator``, ``sample_ids``, ``x_T`` and
    ``device`` are set per shard); ``sample_shape`` (the shape of one sample); ``seed`` (an
    ``int``, the same on every process); ``shard_size``, ``out``, ``group``, ``gather``,
    ``on_shard`` as for :func:`~adaptive_sde.distributed.run_shards`; ``device`` where this
    process samples.

    **Returns:** a :class:`~adaptive_sde.distributed.ShardedResult` whose ``outputs`` (rank 0)
    hold ``x`` (n_samples, *sample_shape) and ``score_evals`` per sample; ``stats`` sums
    ``samples``, ``score_evals``, ``model_calls``, ``rows_evaluated``, ``accepted``,
    ``rejected`` and ``seconds``.
    """
    for name in ("generator", "sample_ids", "x_T", "device"):
        if name in sample_options:
            raise ValueError(f"sample_distributed sets {name} per shard: it cannot be given")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, the same on every process, got {seed!r}")
    shape = tuple(int(s) for s in sample_shape)

    def work(shard: Shard) -> ShardRecord:
        x, stats = sample(
            score_fn,
            sde,
            (shard.size, *shape),
            generator=seed,
            sample_ids=shard.ids(device),
            device=device,
            **sample_options,
        )
        return ShardRecord(
            {"x": x, "score_evals": stats.score_evals},
            {
                "samples": float(shard.size),
                "score_evals": float(stats.score_evals.sum()),
                "model_calls": float(stats.model_calls),
                "rows_evaluated": float(stats.rows_evaluated),
                "accepted": float(stats.accepted),
                "rejected": float(stats.rejected),
            },
        )

    config = {
        "job": "sample_distributed",
        "sde": type(sde).__name__,
        "sample_shape": list(shape),
        "n_samples": n_samples,
        "shard_size": shard_size,
        "seed": seed,
        **_plain_options(sample_options),
    }
    return run_shards(
        work, n_samples, shard_size, config, out=out, group=group, gather=gather, on_shard=on_shard
    )


def _plain_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options a store can compare: numbers, strings, dtypes; callables are left out."""
    plain: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            plain[name] = value
        elif isinstance(value, torch.dtype):
            plain[name] = str(value)
    return plain


def _warn_failed(result: ShardedResult, what: str) -> None:
    failed = int(result.stats.get("failed", 0))
    if failed and result.outputs is not None:
        warnings.warn(
            f"{failed} of {int(result.stats['samples'])} {what} did not finish; their result "
            "codes are in outputs['result'] (adaptive_sde.Result)",
            RuntimeWarning,
            stacklevel=3,
        )
