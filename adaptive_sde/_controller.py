"""Step-size controllers: accept or reject each attempted step and choose the next step size.

A controller owns its decisions and its per-sample state (the diffrax design, where
``stepsize_controller=`` is an object): the integration loop hands it each attempt as an
:class:`Attempt` and gets back a :class:`Decision` (accept, forced, the next step, the samples
the controller ends and why) and the controller's new state. Two controllers:

- :class:`StepController`: the Gotta-Go-Fast controller (Jolicoeur-Martineau et al. 2021, §3),
  with an optional proportional term (Gustafsson 1991's PI control)::

      delta  = tolerance scale, elementwise              (three forms, below)
      E      = || error / delta ||                        (per-sample RMS by default)
      accept = E <= 1
      h_next = clamp(safety * E**(-exponent) * (E_prev / E)**pcoeff, factor_min, factor_max) * h

  with ``E_prev`` the error ratio of the sample's last accepted step.
- :class:`ConstantStepSize`: fixed steps of the first step size (order studies, ablations):
  every finite step is accepted, no error ratio is computed.

Three tolerance forms:

- ``"paper"``: ``max(atol, rtol * max(|y_em_prev|, |y_em|))``, with ``y_em_prev`` the
  Euler-Maruyama proposal of the sample's last accepted step. The paper's choice, the default of
  :func:`adaptive_sde.solve`.
- ``"conventional"``: ``atol + rtol * max(|y|, |y_next|)``, as in torchsde, torchdiffeq and
  diffrax (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4).
- ``"isotropic"``: the paper's form with ``|.|`` the RMS of the state over the sample's
  elements, one scale for all of them: decisions that do not depend on the coordinates' axes
  (the diffusion sampler's default in signal-to-noise time, where elementwise scales made the
  diagonal modes of a 2-D ring heavier).

Norms: ``"rms"`` (the paper's "L2 scaled": root mean square over the sample's elements, so the
tolerance means the same whatever the dimension), ``"max"`` (L-infinity) and ``"l2"`` (the plain
Euclidean norm, which tightens as the dimension grows). On a shared time grid the rows' ratios
combine by ``batch_error``: ``"max"`` (every sample must pass) or ``"rms"`` (one RMS over the
whole batch, torchsde's own adaptive rule).

A proposal with a NaN or infinity anywhere is rejected and the step shrinks by
``nonfinite_factor``. ``E = 0`` (no noise and exact drift) gives the largest growth, never an
infinite step. The growth clamp follows diffrax's ``PIDController`` defaults ([0.2, 10]). The
defaults of every option live in one table, :mod:`adaptive_sde._options`.

No decision here can bias the solution's distribution: a rejected step's Brownian increment is
kept and bridged by the Brownian source (Rackauckas & Nie 2017), whatever rule chose the steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from adaptive_sde import _options
from adaptive_sde._solution import RUNNING, Result

TOLERANCES = _options.TOLERANCES
NORMS = _options.NORMS

ControllerState = dict[str, torch.Tensor]  # per-sample tensors, the batch first


@dataclass(frozen=True)
class Attempt:
    """One attempted step of the rows being stepped, as the controller sees it.

    ``h`` is the proposed step, ``h_taken`` the step attempted (shorter when ``clipped`` to land
    on an output time or a Brownian breakpoint); ``live`` is false for rows that finished
    earlier in a block of passes (frozen: their attempt is discarded) and ``veto`` true for rows
    that cannot be accepted whatever their error (the loop's reasons: the drift or diffusion
    was not finite at the start, or the step could not advance the time).
    """

    t: torch.Tensor
    h: torch.Tensor
    h_taken: torch.Tensor
    clipped: torch.Tensor
    y: torch.Tensor
    y_next: torch.Tensor
    y_em: torch.Tensor
    error: torch.Tensor
    live: torch.Tensor
    veto: torch.Tensor


@dataclass(frozen=True)
class Decision:
    """What the controller decided for each row: ``accept``; ``forced`` (accepted without
    meeting the tolerance, at ``dt_min`` with ``accept_at_dt_min``); ``h_next``, the next
    proposed step; ``ended``, ``RUNNING`` (-1) or the :class:`~adaptive_sde.Result` with which
    the controller ends the row; the controller's new ``state``; and ``finite``, false where
    the proposal was not finite."""

    accept: torch.Tensor
    forced: torch.Tensor
    h_next: torch.Tensor
    ended: torch.Tensor
    state: ControllerState
    finite: torch.Tensor


class Controller(Protocol):
    """What the integration loop needs of a step-size controller."""

    shared: bool

    def start(self, y0: torch.Tensor) -> ControllerState:
        """The state of every row before the first step."""
        ...

    def adapt(self, attempt: Attempt, state: ControllerState) -> Decision:
        """Decide on one attempt (called under ``torch.no_grad()``)."""
        ...

    def first_step(self, h: torch.Tensor) -> torch.Tensor:
        """The first proposed step, within the controller's bounds."""
        ...

    def for_grid(self, shared: bool) -> Controller:
        """This controller for per-sample steps (``shared=False``) or one shared grid."""
        ...


class StepController:
    """The Gotta-Go-Fast step-size controller (see the module docstring).

    **Arguments** (defaults in :mod:`adaptive_sde._options`): ``rtol`` (1e-2), ``atol`` (1e-3),
    ``tolerance`` (``"paper"``), ``norm`` (``"rms"``), ``batch_error`` (``"max"``: on a shared
    grid every sample must pass; ``"rms"``: one RMS over the batch), ``safety`` (θ, 0.9),
    ``exponent`` (the integral gain r, 0.7), ``pcoeff`` (the proportional gain, 0.2; 0 with
    ``exponent=0.9`` is the paper's I control), ``factor_min`` / ``factor_max`` (the clamp on
    ``h_next / h``, 0.2 and 10),
    ``factor_max_after_reject`` (the clamp's upper end for a step accepted right after a
    rejection, 10), ``nonfinite_factor`` (the shrink after a non-finite proposal, 0.1),
    ``dt_min`` (0), ``dt_max`` (inf): bounds on the step; a rejected step that would go below
    ``dt_min`` ends the solve of that sample with ``DT_MIN_REACHED``; ``accept_at_dt_min``
    (torchsde's meaning of ``dt_min``: steps never shrink below it, and a step of ``dt_min`` is
    accepted whatever its error, instead of ending the solve); ``shared`` (one decision for the
    whole batch; set by the solve from its ``per_sample``).
    """

    def __init__(
        self,
        rtol: float | None = None,
        atol: float | None = None,
        *,
        tolerance: str | None = None,
        norm: str | None = None,
        batch_error: str | None = None,
        safety: float | None = None,
        exponent: float | None = None,
        pcoeff: float | None = None,
        factor_min: float | None = None,
        factor_max: float | None = None,
        factor_max_after_reject: float | None = None,
        nonfinite_factor: float | None = None,
        dt_min: float | None = None,
        dt_max: float | None = None,
        accept_at_dt_min: bool | None = None,
        shared: bool = False,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        given = dict(locals())
        o = _options.resolve(given, names=_options.CONTROLLER, defaults=defaults)
        if o["rtol"] == 0 and o["atol"] == 0:
            raise ValueError("rtol and atol cannot both be zero: no step would ever be accepted")
        if not o["dt_max"] > o["dt_min"]:
            raise ValueError(
                f"dt_max must be a number above dt_min={o['dt_min']}, got {o['dt_max']!r}"
            )
        self.rtol, self.atol = o["rtol"], o["atol"]
        self.tolerance, self.norm, self.batch_error = o["tolerance"], o["norm"], o["batch_error"]
        self.safety, self.exponent, self.pcoeff = o["safety"], o["exponent"], o["pcoeff"]
        self.factor_min, self.factor_max = o["factor_min"], o["factor_max"]
        self.factor_max_after_reject = min(o["factor_max_after_reject"], self.factor_max)
        self.nonfinite_factor = o["nonfinite_factor"]
        self.dt_min, self.dt_max = o["dt_min"], o["dt_max"]
        self.accept_at_dt_min = bool(o["accept_at_dt_min"]) and self.dt_min > 0
        self.shared = bool(shared)

    def __repr__(self) -> str:
        names = [n for n in _options.CONTROLLER if n not in ("accept_at_dt_min",)]
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"StepController({inner}, accept_at_dt_min={self.accept_at_dt_min})"

    def for_grid(self, shared: bool) -> StepController:
        if shared == self.shared:
            return self
        other = copy.copy(self)
        other.shared = shared
        return other

    def first_step(self, h: torch.Tensor) -> torch.Tensor:
        low = self.dt_min if self.accept_at_dt_min else None
        return torch.clamp(h, min=low, max=self.dt_max)

    # -- the state ---------------------------------------------------------------------------

    def start(self, y0: torch.Tensor) -> ControllerState:
        state: ControllerState = {}
        if self._history:  # the PI term and the post-rejection cap remember the last steps
            n = y0.shape[0]
            state["e_prev"] = torch.ones(n, dtype=torch.float64, device=y0.device)
            state["rejected_last"] = torch.zeros(n, dtype=torch.bool, device=y0.device)
        if self.tolerance != "conventional":  # the paper's forms need the last EM proposal
            state["y_em_prev"] = y0.detach()
        return state

    @property
    def _history(self) -> bool:
        return self.pcoeff > 0 or self.factor_max_after_reject < self.factor_max

    # -- the decision ------------------------------------------------------------------------

    def adapt(self, attempt: Attempt, state: ControllerState) -> Decision:
        a = attempt
        e = self.error_ratio(a.y, a.y_next, a.y_em, state.get("y_em_prev", a.y_em), a.error)
        e_row = e.masked_fill(~a.live, 0.0)  # a frozen row never rejects a grid
        e, accept, factor = self._decide(
            e_row, a.live, state.get("e_prev"), state.get("rejected_last")
        )
        finite = torch.isfinite(e)
        forced = None
        if self.accept_at_dt_min:
            forced = finite & (a.h <= self.dt_min * (1 + 1e-9)) & ~accept
            accept = accept | forced
        accept = accept & ~(a.veto | ~a.live)
        if forced is not None:
            forced = forced & accept
        h_next = self.next_step(a.h_taken, a.h, a.clipped, accept, factor)
        too_small = (h_next < self.step_floor(a.t)) & ~accept
        if self.accept_at_dt_min:
            # A step at dt_min is accepted whatever its error, but not when it is not finite:
            # then nothing smaller is allowed, and the sample ends (NONFINITE, below).
            too_small |= ~accept & ~finite & (a.h <= self.dt_min * (1 + 1e-9))
        row_finite = torch.isfinite(e_row)
        ended = torch.where(too_small, Result.DT_MIN_REACHED, RUNNING)
        if self.shared:  # rows that met the tolerance were stopped by the others
            ended = torch.where(too_small & (e_row <= 1), Result.BATCH_STOPPED, ended)
        ended = torch.where(too_small & ~row_finite, Result.NONFINITE, ended)
        new: ControllerState = {}
        if "e_prev" in state:
            new["e_prev"] = torch.where(accept, e.to(torch.float64), state["e_prev"])
            new["rejected_last"] = torch.where(a.live, ~accept, state["rejected_last"])
        if "y_em_prev" in state:
            new["y_em_prev"] = torch.where(accept[:, None], a.y_em.detach(), state["y_em_prev"])
        return Decision(
            accept=accept,
            forced=torch.zeros_like(accept) if forced is None else forced,
            h_next=h_next,
            ended=ended,
            state=new,
            finite=row_finite,
        )

    def error_ratio(
        self,
        y: torch.Tensor,
        y_next: torch.Tensor,
        y_em: torch.Tensor,
        y_em_prev: torch.Tensor,
        error: torch.Tensor,
    ) -> torch.Tensor:
        """The scaled error norm ``E`` of each row (n,); not finite (NaN or infinity) where the
        proposal is not: the stepper's ``error`` is not finite wherever ``y_next`` or ``y_em``
        is not (see :class:`~adaptive_sde.StepResult`), and neither is the scale's ratio."""
        if self.tolerance == "paper":
            scale = torch.maximum(y_em_prev.abs(), y_em.abs()).mul_(self.rtol).clamp_(min=self.atol)
        elif self.tolerance == "isotropic":
            # The paper's form with each state's size measured by its RMS over the sample's
            # elements: the same scale for every element, so a rotation of the coordinates
            # does not change the decisions (elementwise scales favour some directions).
            size = torch.maximum(_rms(y_em_prev), _rms(y_em))
            scale = torch.clamp(self.rtol * size, min=self.atol)
        else:
            scale = torch.maximum(y.abs(), y_next.abs()).mul_(self.rtol).add_(self.atol)
        ratio = error / scale
        if self.norm == "rms":
            return ratio.square_().mean(dim=1).sqrt_()
        if self.norm == "max":
            return ratio.abs_().amax(dim=1)
        return ratio.square_().sum(dim=1).sqrt_()

    def _batch(self, e: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """One error ratio (0-d) for a shared grid. NaN propagates: one bad row rejects the
        shared step."""
        if self.batch_error == "max":
            return e.max()
        count = torch.clamp(live.sum(), min=1).to(e.dtype)
        return torch.sqrt(e.square().sum() / count)

    def growth(
        self,
        e: torch.Tensor,
        e_prev: torch.Tensor | None = None,
        rejected_last: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``h_next / h`` of each row from its error ratio ``e`` (NaN: not finite)."""
        clamped = torch.clamp(e, min=1e-30)
        growth = self.safety * torch.pow(clamped, -self.exponent)
        if self.pcoeff and e_prev is not None:
            previous = torch.clamp(e_prev.to(e.dtype), min=1e-30)
            growth = growth * torch.pow(previous / clamped, self.pcoeff)
        growth = torch.clamp(growth, self.factor_min, self.factor_max)
        if rejected_last is not None and self.factor_max_after_reject < self.factor_max:
            cap = torch.where(rejected_last, self.factor_max_after_reject, self.factor_max)
            growth = torch.minimum(growth, cap.to(growth.dtype))
        return growth.masked_fill(~torch.isfinite(e), self.nonfinite_factor)

    def decide(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(accept, factor)`` per row from the error ratios ``e`` of a first step (no
        history), as :meth:`adapt` decides."""
        _, accept, factor = self._decide(e, torch.ones_like(e, dtype=torch.bool), None, None)
        return accept, factor

    def _decide(
        self,
        e: torch.Tensor,
        live: torch.Tensor,
        e_prev: torch.Tensor | None,
        rejected_last: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(E, accept, factor)`` per row, from the rows' ratios ``e`` and their history. On a
        shared grid one decision, computed once on 0-d tensors and broadcast: computed per
        row, the power could differ in the last bit between vectorised and scalar kernels, and
        split the grid (the rows' histories are equal)."""
        rows = e
        if self.shared:
            e = self._batch(e, live)
            if e_prev is not None and rejected_last is not None:
                e_prev, rejected_last = e_prev[0], rejected_last[0]
        accept = e <= 1  # false for NaN
        factor = self.growth(e, e_prev, rejected_last)
        return e.expand_as(rows), accept.expand_as(rows), factor.expand_as(rows)

    def next_step(
        self,
        h_taken: torch.Tensor,
        h_proposed: torch.Tensor,
        clipped: torch.Tensor,
        accept: torch.Tensor,
        factor: torch.Tensor,
    ) -> torch.Tensor:
        """The next proposed step. An accepted step that was clipped short (to land on an output
        time or a pending Brownian breakpoint) keeps at least the proposal it was clipped from."""
        h_next = h_taken * factor.to(h_taken.dtype)
        h_next = torch.where(accept & clipped, torch.maximum(h_next, h_proposed), h_next)
        if self.accept_at_dt_min:
            h_next = torch.clamp(h_next, min=self.dt_min)
        return torch.clamp(h_next, max=self.dt_max)

    def step_floor(self, t: torch.Tensor) -> torch.Tensor:
        """The smallest usable step at ``t``: ``dt_min``, and never below what the time's
        floating-point spacing can resolve (so a shrinking step cannot loop forever)."""
        eps = torch.finfo(t.dtype).eps
        resolution = 64 * eps * torch.clamp(t.abs(), min=1.0)
        return resolution if self.accept_at_dt_min else torch.clamp(resolution, min=self.dt_min)


class ConstantStepSize:
    """Fixed steps: every step is the first step (``dt0``), accepted when its proposal is
    finite; a proposal that is not finite ends the sample with ``NONFINITE`` (a smaller step is
    not allowed). No error ratio is computed. diffrax's ``ConstantStepSize``."""

    def __init__(self, shared: bool = False) -> None:
        self.shared = bool(shared)

    def __repr__(self) -> str:
        return "ConstantStepSize()"

    def for_grid(self, shared: bool) -> ConstantStepSize:
        return self if shared == self.shared else ConstantStepSize(shared)

    def first_step(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def start(self, y0: torch.Tensor) -> ControllerState:
        return {}

    def adapt(self, attempt: Attempt, state: ControllerState) -> Decision:
        a = attempt
        finite = torch.isfinite(a.error).all(dim=1)  # not finite where a proposal is not
        if self.shared:
            finite = (finite | ~a.live).all().expand_as(finite)
        accept = finite & ~a.veto & a.live
        ended = torch.where(
            a.live & ~finite & ~a.veto,
            torch.full_like(a.h, Result.NONFINITE, dtype=torch.int64),
            torch.full_like(a.h, RUNNING, dtype=torch.int64),
        )
        return Decision(
            accept=accept,
            forced=torch.zeros_like(accept),
            h_next=a.h,
            ended=ended,
            state=state,
            finite=finite,
        )


def given_controller(controller: Any, kinds: tuple[type, ...], options: dict[str, Any]) -> Any:
    """``controller`` as an entry point received it (``None``: build one from ``options``),
    checked: one of ``kinds``, and not beside any of the options it would be built from."""
    if controller is None:
        return None
    if not isinstance(controller, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise TypeError(
            f"controller must be an adaptive_sde.{names}, got {type(controller).__name__}"
        )
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        raise ValueError(
            "pass the controller's options to the controller, not beside it: got controller= "
            f"and {', '.join(given)}"
        )
    return controller


def _rms(y: torch.Tensor) -> torch.Tensor:
    return y.square().mean(dim=1, keepdim=True).sqrt()
