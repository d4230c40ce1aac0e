"""The integration loop: attempt steps for the running samples until every sample is done.

Each pass takes the samples still running, proposes each a step that ends no later than its next
output time and its nearest pending Brownian breakpoint (landing on them exactly), attempts it,
lets the controller accept or reject it, and records what happened. With a shared time grid every
sample runs until the last.

Finished samples leave the evaluated batch, but finding them is a host synchronisation (the
number of running rows decides the shape of the next batch), which stalls a GPU's queue. So the
loop reads the device only every ``sync_every`` passes: in between, it runs the same rows, and a
row that finished inside the block is *frozen*: it takes zero-length steps whose results are
discarded, and its statistics do not count them. Every decision stays on the device, so a solve
makes about ``passes / sync_every`` host reads, not one per step (torchsde's adaptive mode reads
the error on the host every step).

Two watches ride on the same read. A step whose end rounds to its start (``t + h == t`` in the
time's dtype) cannot advance: the sample ends at once with ``NO_PROGRESS`` rather than taking
zero-length steps until ``max_steps``. And for an SDE declared with additive noise, the
diffusion at a step's second stage and at the next step's start (the same time, another state)
must agree: a ``g`` that depends on ``y`` would silently get the Stratonovich answer of an Itô
SDE, so the solve raises instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from adaptive_sde._brownian import BrownianSource
from adaptive_sde._controller import Attempt, Controller, ControllerState
from adaptive_sde._progress import ProgressMeter
from adaptive_sde._solution import RUNNING, Result, Solution, SolveStats
from adaptive_sde._step import GottaGoFastStep, RobertsSigns, StepResult

# A step that would end within this fraction of itself short of an output time or a pending
# Brownian breakpoint is stretched to land on it, rather than leaving a sliver of a step.
_LANDING_SLACK = 0.01
# Two evaluations of an additive g at one time and two states agree to rounding; a relative
# difference above this many machine epsilons means that g depends on y.
_ADDITIVE_TOLERANCE_EPS = 1000


@dataclass
class SampleState:
    """Everything the loop keeps per sample; every field has the batch as its first dimension."""

    t: torch.Tensor
    h: torch.Tensor  # the next proposed step
    y: torch.Tensor
    control: ControllerState  # the controller's per-sample state
    out_index: torch.Tensor  # index into ts of the next output time
    status: torch.Tensor
    nfe: torch.Tensor  # evaluations of the first stage alone (the others: per attempt, below)
    accepted: torch.Tensor
    attempts: torch.Tensor
    forced: torch.Tensor
    dt_smallest: torch.Tensor
    dt_largest: torch.Tensor
    # The first stage, (f, g) at (t, y), kept across a rejection (the state did not move, so a
    # retry needs only its second stage); ``stale`` rows moved since and need it evaluated.
    f1: torch.Tensor | None = None
    g1: torch.Tensor | None = None
    stale: torch.Tensor | None = None

    @classmethod
    def start(
        cls, y0: torch.Tensor, ts: torch.Tensor, h0: torch.Tensor, control: ControllerState
    ) -> SampleState:
        batch = y0.shape[0]

        def counter() -> torch.Tensor:
            return torch.zeros(batch, dtype=torch.int64, device=y0.device)

        return cls(
            t=ts[0].expand(batch).clone(),
            h=h0,
            y=y0,
            control=control,
            out_index=torch.ones(batch, dtype=torch.int64, device=y0.device),
            status=torch.full((batch,), RUNNING, dtype=torch.int64, device=y0.device),
            nfe=counter(),
            accepted=counter(),
            attempts=counter(),
            forced=counter(),
            dt_smallest=torch.full_like(h0, math.inf),
            dt_largest=torch.zeros_like(h0),
        )

    def take(self, rows: torch.Tensor | None) -> SampleState:
        """The state of ``rows`` (all rows for ``None``)."""
        if rows is None:
            return self
        return SampleState(**{f.name: take_rows(getattr(self, f.name), rows) for f in fields(self)})

    def put(self, rows: torch.Tensor | None, part: SampleState) -> None:
        """Write back the state of ``rows``; out of place, so that earlier states of ``y`` stay
        valid for autograd."""
        for f in fields(self):
            value = getattr(part, f.name)
            if rows is not None:
                value = put_rows(getattr(self, f.name), rows, value)
            setattr(self, f.name, value)

    def stats(self, per_attempt: int) -> SolveStats:
        """The statistics, with ``per_attempt`` evaluations counted for every attempt besides
        the first stages counted in ``nfe``."""
        return SolveStats(
            nfe=self.nfe + per_attempt * self.attempts,
            num_accepted=self.accepted,
            num_rejected=self.attempts - self.accepted,
            num_forced=self.forced,
            dt_smallest=self.dt_smallest,
            dt_largest=self.dt_largest,
            result=self.status,
            t_final=self.t,
        )


def take_rows(value: Any, rows: torch.Tensor) -> Any:
    """The ``rows`` of a per-sample field: a tensor, a dict of them (a controller's state), or
    ``None``."""
    if isinstance(value, dict):
        return {k: v[rows] for k, v in value.items()}
    return None if value is None else value[rows]


def put_rows(whole: Any, rows: torch.Tensor, part: Any) -> Any:
    """``whole`` with its ``rows`` replaced by ``part``, out of place (earlier states stay valid
    for autograd); the same kinds of field as :func:`take_rows`."""
    if isinstance(whole, dict):
        return {k: v.index_put((rows,), part[k]) for k, v in whole.items()}
    return None if whole is None else whole.index_put((rows,), part)


class Integration:
    """One solve: the pieces it is made of, and the loop that drives them.

    The stepper makes the attempt, the controller decides on it (it owns its state and its
    failure codes), the Brownian source gives and keeps the increments; the loop owns what is
    left: the rows still running, output times, the step's landing, the first stage kept
    across rejections, and the reasons no controller can fix (the drift or diffusion not
    finite at the start, a step that cannot advance the time, the step budget).
    """

    def __init__(
        self,
        stepper: GottaGoFastStep,
        controller: Controller,
        brownian: BrownianSource,
        signs: RobertsSigns | None,
        ts: torch.Tensor,
        *,
        max_steps: int,
        per_sample: bool,
        progress: bool,
        sync_every: int = 1,
    ) -> None:
        self.stepper, self.controller, self.brownian, self.signs = (
            stepper,
            controller,
            brownian,
            signs,
        )
        self.ts = ts
        self.max_steps, self.per_sample = max_steps, per_sample
        self.progress = progress
        self.sync_every = sync_every
        self._additive = _AdditiveWatch(stepper.sde.is_additive and stepper.sde.has_g, ts.device)
        # A retry after a rejection reuses the first stage when the SDE gives f and g (with only
        # g_prod the first stage's product depends on the increment, which the retry changes).
        self._keeps_start = stepper.sde.has_g
        # With one output time after the start, the output is the final state: written once at
        # the end instead of at every attempt.
        self._final_only = len(ts) == 2
        self._forces = bool(getattr(controller, "accept_at_dt_min", False))
        self._host_times = bool(getattr(brownian, "host_times", False)) and not per_sample
        self._rows: torch.Tensor | None = None

    def _all_rows(self, ys: torch.Tensor) -> torch.Tensor:
        if self._rows is None:
            self._rows = torch.arange(ys.shape[1], device=ys.device)
        return self._rows

    def run(
        self,
        y0: torch.Tensor,
        h0: torch.Tensor,
        start: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> Solution:
        """Integrate from ``ts[0]``; ``start`` is ``(f, g)`` at ``(ts[0], y0)`` if already known."""
        batch, ts = y0.shape[0], self.ts
        state = SampleState.start(y0, ts, h0, self.controller.start(y0))
        keeps = self._keeps_start
        if keeps:
            state.stale = torch.full((batch,), start is None, dtype=torch.bool, device=y0.device)
            if start is not None:  # evaluated by the solve up front: one evaluation per row
                state.f1, state.g1 = start
                state.nfe = state.nfe + 1
            else:
                state.f1 = torch.zeros_like(y0)  # placeholders, evaluated before the first step
                state.g1 = None
        ys = torch.full((len(ts), *y0.shape), math.nan, dtype=y0.dtype, device=y0.device)
        ys[0] = y0
        meter = ProgressMeter(float(ts[0]), float(ts[-1]), self.progress)
        evaluations = 0
        try:
            while True:
                # The one host read of a block of passes: how many rows are still running, how
                # many of them need their first stage evaluated, what the Brownian source needs
                # to know. The rows are gathered by stable sorts on the device, since nonzero
                # would be another read.
                running = state.status == RUNNING
                probe = self.brownian.depth_probe()
                counts = [running.sum()]
                if keeps:
                    assert state.stale is not None
                    counts.append((state.stale & running).sum())
                counts += [] if probe is None else [probe]
                counts += self._additive.flags()
                proposal = None
                if self._host_times:
                    # A source that takes its times on the host (torchsde's Brownian objects,
                    # one grid for the batch) gets them from this read: the step is proposed
                    # first, on the whole batch.
                    proposal = self._propose(state, None)
                    counts += [state.t[0], proposal.t_next[0]]
                read = torch.stack([c.to(torch.float64) for c in counts]).tolist()
                if self._host_times:
                    *read, ta, tb = read
                if self._additive.active and read[-1]:
                    raise ValueError(self._additive.message())
                n = int(read[0])
                if n == 0:
                    break
                stale = int(read[1]) if keeps else n
                depth = None if probe is None else int(read[1 + keeps])
                self.brownian.reserve(self.sync_every, depth)
                rows: torch.Tensor | None = None
                if n < batch:
                    rows = torch.argsort((~running).to(torch.uint8), stable=True)[:n]
                    proposal = None  # proposed for the whole batch
                elif proposal is not None:
                    self.brownian.times = (ta, tb)  # type: ignore[attr-defined]
                part = state.take(rows)
                for k in range(self.sync_every):
                    if keeps:
                        # Inside a block the rows that moved are not known on the host: the
                        # first stage of every row is evaluated again.
                        evaluations += self._refresh_start(part, rows, stale if k == 0 else n)
                    evaluations += self._attempt(part, rows, ys, proposal if k == 0 else None)
                state.put(rows, part)
                meter.update(state.t, evaluations)
        finally:
            meter.close()
        if self._final_only:  # every output is the last: the state of the rows that got there
            done = (state.out_index >= len(ts))[:, None]
            ys[-1] = torch.where(done, state.y, ys[-1])
        stages = self.stepper.evaluations_per_step - self._keeps_start
        return Solution(ts=ts, ys=ys, stats=state.stats(stages), dt_next=state.h)

    def _refresh_start(self, s: SampleState, rows: torch.Tensor | None, count: int) -> int:
        """Evaluate the first stage of the ``count`` stale rows of ``s`` (the rows whose state
        moved since it was evaluated); returns the evaluations made."""
        assert s.stale is not None and s.f1 is not None
        n = s.y.shape[0]
        if count == 0:
            return 0
        sde = self.stepper.sde
        live = s.status == RUNNING
        if count >= n or not self.per_sample:  # a shared grid's rows move together
            _tell_rows(self.brownian, rows)
            s.f1, s.g1 = sde.drift_and_diffusion(s.t, s.y)
            s.nfe = s.nfe + live.to(torch.int64)
            s.stale = torch.zeros_like(s.stale)
            return n
        which = torch.argsort((~s.stale).to(torch.uint8), stable=True)[:count]
        _tell_rows(self.brownian, which if rows is None else rows[which])
        f1, g1 = sde.drift_and_diffusion(s.t[which], s.y[which])
        s.f1 = s.f1.index_put((which,), f1)
        assert s.g1 is not None
        s.g1 = s.g1.index_put((which,), g1)
        s.nfe = s.nfe.index_add(0, which, torch.ones_like(which))
        s.stale = torch.zeros_like(s.stale)
        return count

    def _propose(self, s: SampleState, rows: torch.Tensor | None) -> _Proposal:
        """Where each row's next step ends: its proposal, clipped to land exactly on its next
        output time and its nearest pending Brownian breakpoint (stretched by up to
        ``_LANDING_SLACK`` to land there rather than leave a sliver)."""
        # Rows that finished earlier in this block are frozen: they step from t to t (their
        # target is the last output time, which they have reached) and nothing is kept.
        live = s.status == RUNNING
        out_index = torch.clamp(s.out_index, max=len(self.ts) - 1)
        target = self.ts[out_index]
        limit = torch.minimum(target, self.brownian.horizon(rows, s.t))
        clipped = s.t + (1 + _LANDING_SLACK) * s.h >= limit
        t_next = torch.where(clipped, limit, s.t + s.h)
        return _Proposal(live, out_index, target, clipped, t_next)

    def _attempt(
        self,
        s: SampleState,
        rows: torch.Tensor | None,
        ys: torch.Tensor,
        proposal: _Proposal | None = None,
    ) -> int:
        """Attempt one step for the samples of ``s`` (updated in place) and record outputs;
        returns the evaluations made. ``proposal``: the step's end, if already proposed."""
        p = self._propose(s, rows) if proposal is None else proposal
        live, out_index, target, clipped, t_next = (
            p.live,
            p.out_index,
            p.target,
            p.clipped,
            p.t_next,
        )
        stalled = live & (t_next <= s.t)  # t + h rounds to t: no step of this size can advance
        dw = self.brownian.increment(rows, s.t, t_next)
        signs = kept = None
        if self.signs is not None:
            signs, kept = self.signs.draw(rows, s.accepted, s.attempts)
        start = None if s.g1 is None or s.f1 is None else (s.f1, s.g1)
        result = self.stepper.step(s.t, t_next, s.y, dw, signs, start, kept)
        stages = self.stepper.evaluations_per_step - (start is not None)
        assert start is not None or not self._keeps_start

        with torch.no_grad():
            # A drift or diffusion that is not finite where the step starts: no step can help.
            own_stuck = ~result.start_finite & live
            stuck = own_stuck if self.per_sample else own_stuck.any().expand_as(own_stuck)
            h_taken = t_next - s.t
            decision = self.controller.adapt(
                Attempt(
                    t=s.t,
                    h=s.h,
                    h_taken=h_taken,
                    clipped=clipped,
                    y=_detached(s.y),
                    y_next=_detached(result.y_next),
                    y_em=_detached(result.y_em),
                    error=_detached(result.error),
                    live=live,
                    veto=stuck | stalled,
                ),
                s.control,
            )
            accept = decision.accept
            self._additive.compare(rows, live, accept, result)
        self.brownian.commit(rows, accept)

        y_kept = torch.where(accept[:, None], result.y_next, s.y)
        hit = accept & clipped & (t_next == target)
        if not self._final_only:
            out_rows = self._all_rows(ys) if rows is None else rows
            # In place is safe for autograd: nothing reads the overwritten entries of ys.
            ys[out_index, out_rows] = torch.where(hit[:, None], y_kept, ys[out_index, out_rows])
        s.y = y_kept
        with torch.no_grad():
            s.control = decision.state
            if s.stale is not None:
                s.stale = accept
            s.t = torch.where(accept, t_next, s.t)
            s.out_index = s.out_index + hit.to(torch.int64)
            s.accepted = s.accepted + accept.to(torch.int64)
            s.attempts = s.attempts + live.to(torch.int64)
            if self._forces:
                s.forced = s.forced + decision.forced.to(torch.int64)
            s.dt_smallest = torch.where(
                accept, torch.minimum(s.dt_smallest, h_taken), s.dt_smallest
            )
            s.dt_largest = torch.where(accept, torch.maximum(s.dt_largest, h_taken), s.dt_largest)
            h_new = torch.where(stalled, s.h, decision.h_next)  # keep the proposal, not 0 * factor
            s.h = torch.where(live, h_new, s.h)
            code = self._result_codes(s, decision.ended, stalled, stuck, own_stuck)
            s.status = torch.where(live, code, s.status)
        return stages * s.y.shape[0]

    def _result_codes(
        self,
        s: SampleState,
        ended: torch.Tensor,
        stalled: torch.Tensor,
        stuck: torch.Tensor,
        own_stuck: torch.Tensor,
    ) -> torch.Tensor:
        """The status of each row after a step: ``RUNNING`` or why it ended (the controller's
        reasons in ``ended``, then the loop's). On a shared grid, a row that ends only because
        another row failed is ``BATCH_STOPPED``, so that the failure message can name the row
        that caused it."""
        code = torch.where(s.attempts >= self.max_steps, Result.MAX_STEPS_REACHED, RUNNING)
        code = torch.where(ended != RUNNING, ended, code)
        code = torch.where(stalled, Result.NO_PROGRESS, code)
        if not self.per_sample:
            code = torch.where(stuck & ~own_stuck, Result.BATCH_STOPPED, code)
        code = torch.where(own_stuck, Result.NONFINITE, code)
        return torch.where(s.out_index >= len(self.ts), Result.SUCCESS, code)


@dataclass(frozen=True)
class _Proposal:
    """The next step of each row: ``live`` (false for rows frozen inside a block), the index
    and time of its next output, whether the step was ``clipped`` to land, and its end."""

    live: torch.Tensor
    out_index: torch.Tensor
    target: torch.Tensor
    clipped: torch.Tensor
    t_next: torch.Tensor


def _detached(x: torch.Tensor) -> torch.Tensor:
    return x.detach() if x.requires_grad else x


def _tell_rows(brownian: BrownianSource, rows: torch.Tensor | None) -> None:
    """A Brownian source that tracks which rows the SDE is evaluated on (the diffusion
    sampler's ``RowTracker``, which restricts ``model_kwargs`` to them) learns it from each
    increment; an evaluation of the first stage alone tells it here."""
    if hasattr(brownian, "rows"):
        brownian.rows = rows


class _AdditiveWatch:
    """Checks that the ``g`` of an SDE declared additive does not depend on ``y``.

    An accepted step evaluates ``g`` at ``(t_next, y + K1)``, and the next step at
    ``(t_next, y_next)``: the same time, another state. For additive noise the two agree to
    rounding. The comparison runs on the device and sets a flag that the loop reads along with
    its own read, so it costs no synchronisation. Steps are compared while the same rows are
    stepped (inside a block of passes, and while no sample has finished).
    """

    def __init__(self, active: bool, device: torch.device) -> None:
        self.active, self.device = active, device
        self._previous: tuple[torch.Tensor | None, torch.Tensor, torch.Tensor] | None = None
        self._mismatch: torch.Tensor | None = None
        self._worst: torch.Tensor | None = None

    def flags(self) -> list[torch.Tensor]:
        """The device flag for the loop's read: ``[mismatch]`` while active, else ``[]``."""
        if not self.active:
            return []
        if self._mismatch is None:
            return [torch.zeros((), dtype=torch.int64, device=self.device)]
        return [self._mismatch.to(torch.int64)]

    def compare(
        self,
        rows: torch.Tensor | None,
        live: torch.Tensor,
        accept: torch.Tensor,
        result: StepResult,
    ) -> None:
        """Compare this step's ``g_start`` with the last step's ``g_end`` where that step was
        accepted, then remember this step's ``g_end``."""
        if not self.active or result.g_start is None or result.g_end is None:
            return
        previous = self._previous
        if previous is not None and previous[0] is rows:
            _, g_end, accepted = previous
            g_start = result.g_start
            diff = (g_start - g_end).abs().flatten(1).amax(1)
            scale = torch.maximum(g_start.abs(), g_end.abs()).flatten(1).amax(1)
            tolerance = _ADDITIVE_TOLERANCE_EPS * torch.finfo(g_start.dtype).eps
            bad = accepted & live & (diff > tolerance * scale)
            relative = torch.where(bad, diff / torch.clamp(scale, min=1e-300), 0.0).amax()
            mismatch = bad.any()
            if self._mismatch is None or self._worst is None:
                self._mismatch, self._worst = mismatch, relative
            else:
                self._mismatch = self._mismatch | mismatch
                self._worst = torch.maximum(self._worst, relative)
        self._previous = (rows, result.g_end, accept)

    def message(self) -> str:
        worst = float(self._worst) if self._worst is not None else math.nan
        return (
            "sde.noise_type is 'additive', but its diffusion g(t, y) depends on y: two "
            f"evaluations at the same time and different states differ by {worst:.3g} "
            "(relative). Additive noise means g depends on t only; solving it as additive would "
            "give the Stratonovich solution of an Itô SDE. Declare noise_type='general' (g of "
            "shape (batch, d, m)), 'diagonal' or 'scalar' as g's shape fits, or make g "
            "independent of y"
        )
