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
from adaptive_sde.distributed._fingerprint import Fingerprint, check_fingerprint, digest
from adaptive_sde.distributed._run import OnShard, ShardedResult, rank_and_size, run_shards
from adaptive_sde.distributed._shards import Shard, ShardRecord, check_count, check_out


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
    fingerprint: Fingerprint | None = None,
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
    - ``fingerprint``: a ``str``, ``bytes`` or ``int`` for what determines the result but cannot
      be hashed (see below), e.g. the values a closure in ``sde`` captures, or a data version.

    **Resuming.** With ``out``, the shard files record a digest of ``y0``'s values, ``ts``, the
    SDE (class, code of its methods, parameters, buffers and attributes), the options, the
    seed, the sizes and ``fingerprint``. A rerun that differs in any of them is refused with an
    error naming what differs, never joined to the old shards.

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
    _check_job(n_samples, shard_size, seed, out, gather, on_shard, fingerprint)
    for name, tensor in (("y0", y0), ("ts", ts)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
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

    config: dict[str, Any] = {"job": "solve_ensemble"}
    if _needs_fingerprint(out, group):
        config.update(
            {
                "n_samples": n_samples,
                "shard_size": shard_size,
                "seed": seed,
                "sde_class": type(sde).__qualname__,
                "sde": digest(sde),
                "y0_shape": list(y0.shape),
                "y0_dtype": str(y0.dtype),
                "y0": digest(y0),
                "ts": digest(ts),
                "options": _options(solve_options),
                "fingerprint": None if fingerprint is None else digest(fingerprint),
            }
        )
    per_path = (len(ts), y0.shape[-1]) if ts.dim() == 1 else None
    outputs = {"ys": per_path, "result": (), "nfe": (), "num_steps": ()}
    result = run_shards(
        work,
        n_samples,
        shard_size,
        config,
        out=out,
        group=group,
        gather=gather,
        on_shard=on_shard,
        outputs=outputs,
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
    fingerprint: Fingerprint | None = None,
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
    process samples; ``fingerprint`` (a ``str``, ``bytes`` or ``int``) for what determines the
    samples but cannot be hashed, such as the values a closure ``score_fn`` captures when they
    are not tensors, modules or plain values, or a checkpoint's name.

    **Resuming.** With ``out``, the shard files record a digest of ``score_fn`` (a function's
    qualified name, code, defaults, captured values and the module-level values it reads; a
    module's class, parameters and buffers), of the forward SDE (its class and attributes:
    ``beta_min``, ``beta_max``, ``sigma_min``, ...), the options, shape, seed, sizes and
    ``fingerprint``. A rerun that differs in any of them is refused with an error naming what
    differs, never joined to the old shards.

    **Returns:** a :class:`~adaptive_sde.distributed.ShardedResult` whose ``outputs`` (rank 0)
    hold ``x`` (n_samples, *sample_shape) and ``score_evals`` per sample; ``stats`` sums
    ``samples``, ``score_evals``, ``model_calls``, ``rows_evaluated``, ``accepted``,
    ``rejected`` and ``seconds``.
    """
    for name in ("seed", "generator", "sample_ids", "x_T", "device"):
        if name in sample_options:
            raise ValueError(f"sample_distributed sets {name} per shard: it cannot be given")
    _check_job(n_samples, shard_size, seed, out, gather, on_shard, fingerprint)
    shape = _check_shape(sample_shape)

    def work(shard: Shard) -> ShardRecord:
        x, stats = sample(
            score_fn,
            sde,
            (shard.size, *shape),
            seed=seed,
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

    config: dict[str, Any] = {"job": "sample_distributed"}
    if _needs_fingerprint(out, group):
        config.update(
            {
                "sample_shape": list(shape),
                "n_samples": n_samples,
                "shard_size": shard_size,
                "seed": seed,
                "sde_class": type(sde).__qualname__,
                "sde": digest(sde),
                "score_fn": digest(score_fn),
                "options": _options(sample_options),
                "fingerprint": None if fingerprint is None else digest(fingerprint),
            }
        )
    return run_shards(
        work,
        n_samples,
        shard_size,
        config,
        out=out,
        group=group,
        gather=gather,
        on_shard=on_shard,
        outputs={"x": shape, "score_evals": ()},
    )


def _check_job(
    n_samples: object,
    shard_size: object,
    seed: object,
    out: object,
    gather: object,
    on_shard: object,
    fingerprint: object,
) -> None:
    """The arguments both jobs share, checked before any work or hashing."""
    check_count("n_samples", n_samples)
    check_count("shard_size", shard_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, the same on every process, got {seed!r:.80}")
    if out is not None:
        check_out(out)
    if not isinstance(gather, bool):
        raise TypeError(f"gather must be True or False, got {gather!r:.80}")
    if on_shard is not None and not callable(on_shard):
        raise TypeError(
            f"on_shard must be a function (shard, computed) or None, got {on_shard!r:.80}"
        )
    check_fingerprint(fingerprint)


def _check_shape(sample_shape: object) -> tuple[int, ...]:
    """``sample_shape`` as a tuple of positive ints."""
    if isinstance(sample_shape, (str, bytes)) or not isinstance(sample_shape, Sequence):
        raise TypeError(f"sample_shape must be a sequence of ints, got {sample_shape!r:.80}")
    for size in sample_shape:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f"sample_shape must hold positive ints (the shape of one sample), got "
                f"{sample_shape!r:.80}"
            )
    return tuple(sample_shape)


def _needs_fingerprint(out: object, group: dist.ProcessGroup | None) -> bool:
    """Hash the problem where it matters: for a store, and for the ranks to check that they
    were all given the same problem."""
    return out is not None or rank_and_size(group)[1] > 1


def _options(options: dict[str, Any]) -> dict[str, Any]:
    """The options as a store compares them: numbers, strings and dtypes as they are, anything
    else (tensors, callables) by digest; ``progress`` is left out: it does not change results."""
    plain: dict[str, Any] = {}
    for name, value in sorted(options.items()):
        if name == "progress":
            continue
        if isinstance(value, (bool, int, float, str)) or value is None:
            plain[name] = value
        elif isinstance(value, torch.dtype):
            plain[name] = str(value)
        else:
            plain[name] = digest(value)
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
