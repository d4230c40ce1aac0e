"""What a solve returns: the states at the requested times, statistics and result codes."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


class Result(enum.IntEnum):
    """Why a sample's solve ended. Everything but ``SUCCESS`` is a failure."""

    SUCCESS = 0
    MAX_STEPS_REACHED = 1
    DT_MIN_REACHED = 2
    NONFINITE = 3

    @property
    def advice(self) -> str:
        return _ADVICE[self]


_ADVICE = {
    Result.SUCCESS: "",
    Result.MAX_STEPS_REACHED: "the step budget max_steps ran out before the last output time; "
    "raise max_steps or loosen rtol/atol",
    Result.DT_MIN_REACHED: "the step size fell below dt_min (or below what the time's precision "
    "resolves) after a rejection; loosen rtol/atol, lower dt_min, or check the SDE for a "
    "singularity",
    Result.NONFINITE: "the drift or diffusion produced NaN or infinity that no smaller step "
    "avoided; check the SDE near this time and state",
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
    computed, with the result codes in ``solution.stats.result``."""

    def __init__(self, message: str, solution: Solution) -> None:
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
) -> str:
    """A message naming the failed samples, where they stopped and what to change.

    ``to_time`` maps the solver's time to the one the caller's users know (the diffusion
    sampler's forward time, for one); ``advice`` overrides the advice of some result codes."""
    failed = torch.nonzero(stats.result != Result.SUCCESS).flatten().tolist()
    lines = [f"{len(failed)} of {stats.result.numel()} samples {header}:"]
    for i in failed[:shown]:
        code = Result(int(stats.result[i]))
        what = (advice or {}).get(code, code.advice)
        lines.append(
            f"  sample {i}: {code.name} at t={to_time(float(stats.t_final[i])):.6g} after "
            f"{int(stats.num_steps[i])} steps ({what})"
        )
    if len(failed) > shown:
        lines.append(f"  ... and {len(failed) - shown} more (see solution.stats.result)")
    if hint:
        lines.append(hint)
    return "\n".join(lines)
