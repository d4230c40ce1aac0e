"""What a solve returns: the states at the requested times, statistics and result codes."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

RUNNING = -1  # the status of a sample still being solved (every Result code is >= 0)


class Result(enum.IntEnum):
    """Why a sample's solve ended. Everything but ``SUCCESS`` is a failure.

    ``MAX_STEPS_REACHED``: the step budget ran out. ``DT_MIN_REACHED``: after a rejection the
    step fell below ``dt_min`` or the time's resolution. ``NONFINITE``: the drift or diffusion
    was not finite, and no smaller step helped. ``NO_PROGRESS``: a step could not move the time
    (``t + h`` rounds to ``t``), so no step of that size ever would. ``BATCH_STOPPED``: on a
    shared time grid (``per_sample=False``), the sample met its tolerance but stopped with the
    grid when another sample failed.
    """

    SUCCESS = 0
    MAX_STEPS_REACHED = 1
    DT_MIN_REACHED = 2
    NONFINITE = 3
    NO_PROGRESS = 4
    BATCH_STOPPED = 5

    @property
    def advice(self) -> str:
        return _ADVICE[self]


# The order failures are listed in: a sample's own failure before the samples it stopped with it
# on a shared time grid (per_sample=False).
_ROOT_CAUSE_FIRST = {
    Result.NONFINITE: 0,
    Result.NO_PROGRESS: 1,
    Result.DT_MIN_REACHED: 2,
    Result.MAX_STEPS_REACHED: 3,
    Result.BATCH_STOPPED: 4,
}


_ADVICE = {
    Result.SUCCESS: "",
    Result.MAX_STEPS_REACHED: "the step budget max_steps ran out before the last output time; "
    "raise max_steps or loosen rtol/atol",
    Result.DT_MIN_REACHED: "the step size fell below dt_min (or below what the time's precision "
    "resolves) after a rejection; loosen rtol/atol, lower dt_min, or check the SDE for a "
    "singularity",
    Result.NONFINITE: "the drift or diffusion produced NaN or infinity that no smaller step "
    "avoided; check the SDE near this time and state",
    Result.NO_PROGRESS: "the step was too small to move the time: t + h rounds to t in the "
    "dtype of ts; pass a larger first step (dt0), ts in float64, or times shifted to start near 0",
    Result.BATCH_STOPPED: "stopped with the shared time grid (per_sample=False) when another "
    "sample failed (listed first); fix that sample, or pass per_sample=True if rows are "
    "independent",
}


@dataclass
class SolveStats:
    """Statistics per sample (tensors of shape (batch,)), with totals as properties.

    ``nfe`` counts evaluations of the SDE at a point (one drift and one diffusion each); every
    attempted step costs two. ``dt_smallest`` / ``dt_largest`` are over accepted steps, clipped
    steps included. ``num_forced`` counts steps accepted at ``dt_min`` without meeting the
    tolerance (only with ``accept_at_dt_min``, torchsde's meaning of ``dt_min``). ``result``
    holds :class:`Result` codes; ``t_final`` the time each sample reached (the last output time
    on success, where it stopped otherwise).
    """

    nfe: torch.Tensor
    num_accepted: torch.Tensor
    num_rejected: torch.Tensor
    num_forced: torch.Tensor
    dt_smallest: torch.Tensor
    dt_largest: torch.Tensor
    result: torch.Tensor
    t_final: torch.Tensor

    @property
    def num_steps(self) -> torch.Tensor:
        """Attempted steps per sample."""
        return self.num_accepted + self.num_rejected

    @property
    def total_nfe(self) -> int:
        return int(self.nfe.sum())

    @property
    def total_accepted(self) -> int:
        return int(self.num_accepted.sum())

    @property
    def total_rejected(self) -> int:
        return int(self.num_rejected.sum())

    @property
    def success(self) -> bool:
        return bool((self.result == Result.SUCCESS).all())

    def summary(self) -> dict[str, float]:
        """Totals and extremes as plain numbers, for printing and JSON."""
        return {
            "samples": int(self.nfe.numel()),
            "nfe_total": self.total_nfe,
            "nfe_mean": float(self.nfe.double().mean()),
            "nfe_max": int(self.nfe.max()),
            "accepted": self.total_accepted,
            "rejected": self.total_rejected,
            "forced": int(self.num_forced.sum()),
            "dt_smallest": float(self.dt_smallest.min()),
            "dt_largest": float(self.dt_largest.max()),
            "failed": int((self.result != Result.SUCCESS).sum()),
        }


@dataclass
class Solution:
    """The result of :func:`adaptive_sde.solve`: ``ys[i]`` is the state at ``ts[i]``, shape
    ``(len(ts), batch, d)``. Rows of failed samples hold NaN from the first output time they did
    not reach. ``dt_next`` is each sample's next proposed step, shape (batch,): pass it as ``dt0``
    to continue a solve where this one stopped."""

    ts: torch.Tensor
    ys: torch.Tensor
    stats: SolveStats
    dt_next: torch.Tensor


class SolveError(RuntimeError):
    """A solve ended with failed samples and ``throw=True``. ``solution`` holds what was
    computed, with the result codes in ``solution.stats.result`` (``None`` from the fixed-step
    baseline samplers, which have no per-sample results)."""

    def __init__(self, message: str, solution: Solution | None) -> None:
        super().__init__(message)
        self.solution = solution


def failure_message(
    stats: SolveStats,
    shown: int = 5,
    *,
    header: str = "failed to reach the last time",
    to_time: Callable[[float], float] = float,
    advice: Mapping[Result, str] | None = None,
    hint: str | None = "Pass throw=False to get the partial solution with per-sample result codes.",
    span: tuple[float, float] | None = None,
) -> str:
    """A message naming the failed samples, where they stopped and what to change.

    Samples are listed root cause first: a sample's own failure (non-finite values first)
    before the samples that a shared time grid stopped with it; each code's advice is given
    once. ``to_time`` maps the solver's time to the one the caller's users know (the diffusion
    sampler's forward time, for one); ``advice`` overrides the advice of some result codes;
    ``span`` is the solve's ``(start, end)`` in the solver's time, to say how far each sample
    got."""
    codes = stats.result.tolist()
    failed = [i for i, code in enumerate(codes) if code != Result.SUCCESS]
    failed.sort(key=lambda i: _ROOT_CAUSE_FIRST.get(Result(codes[i]), len(_ROOT_CAUSE_FIRST)))
    lines = [f"{len(failed)} of {len(codes)} samples {header}:"]
    explained: set[Result] = set()
    for i in failed[:shown]:
        code = Result(codes[i])
        what = "" if code in explained else f" ({(advice or {}).get(code, code.advice)})"
        explained.add(code)
        t = float(stats.t_final[i])
        lines.append(
            f"  sample {i}: {code.name} at t={to_time(t):.6g}{_progress(t, span, to_time)} "
            f"after {int(stats.num_steps[i])} steps{what}"
        )
    if len(failed) > shown:
        lines.append(f"  ... and {len(failed) - shown} more (see solution.stats.result)")
    if hint:
        lines.append(hint)
    return "\n".join(lines)


def _progress(t: float, span: tuple[float, float] | None, to_time: Callable[[float], float]) -> str:
    """How far a sample got, as `` (42% of the way from 0 to 1)``; empty without a span."""
    if span is None:
        return ""
    start, end = span
    done = 100.0 * (t - start) / (end - start) if end != start else 100.0
    # Two digits, but never rounded up to 100% short of the end.
    share = f"{math.floor(done * 10) / 10:g}" if done >= 99 else f"{done:.2g}"
    return f" ({share}% of the way from {to_time(start):.8g} to {to_time(end):.8g})"
