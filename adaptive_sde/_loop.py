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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from adaptive_sde._brownian import BrownianSource
from adaptive_sde._controller import StepController
from adaptive_sde._progress import ProgressMeter
from adaptive_sde._solution import Result, Solution, SolveStats
from adaptive_sde._step import GottaGoFastStep, RobertsSigns

RUNNING = -1
# A step that would end within this fraction of itself short of an output time or a pending
# Brownian breakpoint is stretched to land on it, rather than leaving a sliver of a step.
_LANDING_SLACK = 0.01


@dataclass
class SampleState:
    """Everything the loop keeps per sample; every field has the batch as its first dimension."""

    t: torch.Tensor
    h: torch.Tensor  # the next proposed step
    y: torch.Tensor
    y_em_prev: torch.Tensor  # Euler-Maruyama proposal of the last accepted step (paper tolerance)
    out_index: torch.Tensor  # index into ts of the next output time
    status: torch.Tensor
    nfe: torch.Tensor
    accepted: torch.Tensor
    rejected: torch.Tensor
    forced: torch.Tensor
    dt_smallest: torch.Tensor
    dt_largest: torch.Tensor

    @classmethod
    def start(cls, y0: torch.Tensor, ts: torch.Tensor, h0: torch.Tensor) -> SampleState:
        batch = y0.shape[0]

        def counter() -> torch.Tensor:
            return torch.zeros(batch, dtype=torch.int64, device=y0.device)

        return cls(
            t=ts[0].expand(batch).clone(),
            h=h0,
            y=y0,
            y_em_prev=y0.detach(),
            out_index=torch.ones(batch, dtype=torch.int64, device=y0.device),
            status=torch.full((batch,), RUNNING, dtype=torch.int64, device=y0.device),
            nfe=counter(),
            accepted=counter(),
            rejected=counter(),
            forced=counter(),
            dt_smallest=torch.full_like(h0, math.inf),
            dt_largest=torch.zeros_like(h0),
        )

    def take(self, rows: torch.Tensor | None) -> SampleState:
        """The state of ``rows`` (all rows for ``None``)."""
        if rows is None:
            return self
        return SampleState(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def put(self, rows: torch.Tensor | None, part: SampleState) -> None:
        """Write back the state of ``rows``; out of place, so that earlier states of ``y`` stay
        valid for autograd."""
        for f in fields(self):
            value = getattr(part, f.name)
            if rows is not None:
                value = getattr(self, f.name).index_put((rows,), value)
            setattr(self, f.name, value)

    def stats(self) -> SolveStats:
        return SolveStats(
            nfe=self.nfe,
            num_accepted=self.accepted,
            num_rejected=self.rejected,
            num_forced=self.forced,
            dt_smallest=self.dt_smallest,
            dt_largest=self.dt_largest,
            result=self.status,
            t_final=self.t,
        )


class Integration:
    """One solve: the pieces it is made of, and the loop that drives them."""

    def __init__(
        self,
        stepper: GottaGoFastStep,
        controller: StepController,
        brownian: BrownianSource,
        signs: RobertsSigns | None,
        ts: torch.Tensor,
        *,
        max_steps: int,
        adaptive: bool,
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
        self.max_steps, self.adaptive, self.per_sample = max_steps, adaptive, per_sample
        self.progress = progress
        self.sync_every = sync_every

    def run(
        self,
        y0: torch.Tensor,
        h0: torch.Tensor,
        start: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> Solution:
        """Integrate from ``ts[0]``; ``start`` is ``(f, g)`` at ``(ts[0], y0)`` if already known."""
        batch, ts = y0.shape[0], self.ts
        state = SampleState.start(y0, ts, h0)
        ys = torch.full((len(ts), *y0.shape), math.nan, dtype=y0.dtype, device=y0.device)
        ys[0] = y0
        meter = ProgressMeter(float(ts[0]), float(ts[-1]), self.progress)
        evaluations = 0
        try:
            while True:
                # The one host read of a block of passes: how many rows are still running (and
                # what the Brownian source needs to know). The running rows are gathered by a
                # stable sort on the device, since nonzero would be a second read.
                running = state.status == RUNNING
                probe = self.brownian.depth_probe()
                counts = [running.sum()] + ([] if probe is None else [probe])
                read = torch.stack(counts).tolist()
                n = int(read[0])
                if n == 0:
                    break
                self.brownian.reserve(self.sync_every, None if probe is None else int(read[1]))
                rows: torch.Tensor | None = None
                if n < batch:
                    rows = torch.argsort((~running).to(torch.uint8), stable=True)[:n]
                part = state.take(rows)
                for _ in range(self.sync_every):
                    self._attempt(part, rows, ys, start)
                    start = None
                    evaluations += self.stepper.evaluations_per_step * n
                state.put(rows, part)
                meter.update(state.t, evaluations)
        finally:
            meter.close()
        return Solution(ts=ts, ys=ys, stats=state.stats(), dt_next=state.h)

    def _attempt(
        self,
        s: SampleState,
        rows: torch.Tensor | None,
        ys: torch.Tensor,
        start: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        """Attempt one step for the samples of ``s`` (updated in place) and record outputs."""
        controller = self.controller
        # Rows that finished earlier in this block are frozen: they step from t to t (their
        # target is the last output time, which they have reached) and nothing is kept.
        live = s.status == RUNNING
        out_index = torch.clamp(s.out_index, max=len(self.ts) - 1)
        target = self.ts[out_index]
        limit = torch.minimum(target, self.brownian.horizon(rows, s.t))
        clipped = s.t + (1 + _LANDING_SLACK) * s.h >= limit
        t_next = torch.where(clipped, limit, s.t + s.h)
        dw = self.brownian.increment(rows, s.t, t_next)
        signs = kept = None
        if self.signs is not None:
            signs, kept = self.signs.draw(rows, s.accepted, s.accepted + s.rejected)
        result = self.stepper.step(s.t, t_next, s.y, dw, signs, start, kept)

        with torch.no_grad():
            e = controller.error_ratio(
                s.y.detach(),
                result.y_next.detach(),
                result.y_em.detach(),
                s.y_em_prev,
                result.error.detach(),
            )
            e = torch.where(live, e, torch.zeros_like(e))  # a frozen row never rejects a grid
            if self.adaptive:
                accept, factor = controller.decide(e)
                forced = controller.forced(s.h, e) & ~accept
                accept = accept | forced
            else:
                accept, factor = ~torch.isnan(e), torch.ones_like(e)
                forced = torch.zeros_like(accept)
            # A drift or diffusion that is not finite where the step starts: no step can help.
            stuck = ~result.start_finite & live
            if not self.per_sample:
                stuck = stuck.any().expand_as(stuck)
            accept = accept & ~stuck & live
            forced = forced & live
        self.brownian.commit(rows, accept)

        y_kept = torch.where(accept[:, None], result.y_next, s.y)
        hit = accept & clipped & (t_next == target)
        out_rows = torch.arange(ys.shape[1], device=ys.device) if rows is None else rows
        # In place is safe for autograd: nothing reads the overwritten entries of ys.
        ys[out_index, out_rows] = torch.where(hit[:, None], y_kept, ys[out_index, out_rows])
        s.y = y_kept
        with torch.no_grad():
            s.y_em_prev = torch.where(accept[:, None], result.y_em.detach(), s.y_em_prev)
            self._bookkeep(s, live, t_next, clipped, accept, factor, forced, stuck, hit, e)

    def _bookkeep(
        self,
        s: SampleState,
        live: torch.Tensor,
        t_next: torch.Tensor,
        clipped: torch.Tensor,
        accept: torch.Tensor,
        factor: torch.Tensor,
        forced: torch.Tensor,
        stuck: torch.Tensor,
        hit: torch.Tensor,
        e: torch.Tensor,
    ) -> None:
        """Times, step sizes, statistics and result codes after a decision; frozen rows (not
        ``live``) keep theirs."""
        h_taken = t_next - s.t
        s.t = torch.where(accept, t_next, s.t)
        s.out_index = s.out_index + hit.to(torch.int64)
        s.nfe = s.nfe + self.stepper.evaluations_per_step * live.to(torch.int64)
        s.accepted = s.accepted + accept.to(torch.int64)
        s.rejected = s.rejected + (~accept & live).to(torch.int64)
        s.forced = s.forced + forced.to(torch.int64)
        s.dt_smallest = torch.where(accept, torch.minimum(s.dt_smallest, h_taken), s.dt_smallest)
        s.dt_largest = torch.where(accept, torch.maximum(s.dt_largest, h_taken), s.dt_largest)
        if self.adaptive:
            h_new = self.controller.next_step(h_taken, s.h, clipped, accept, factor)
        else:
            h_new = s.h
        too_small = ~accept & (h_new < self.controller.step_floor(s.t))
        if self.controller.accept_at_dt_min:
            # A step at dt_min is accepted whatever its error, but not when it is not finite:
            # then nothing smaller is allowed, and the sample ends (NONFINITE, below).
            too_small |= ~accept & torch.isnan(e) & (s.h <= self.controller.dt_min * (1 + 1e-9))
        s.h = torch.where(live, h_new, s.h)
        code = torch.full_like(s.status, RUNNING)
        code = torch.where(
            s.accepted + s.rejected >= self.max_steps, Result.MAX_STEPS_REACHED, code
        )
        code = torch.where(too_small, Result.DT_MIN_REACHED, code)
        code = torch.where(too_small & torch.isnan(e), Result.NONFINITE, code)
        code = torch.where(stuck, Result.NONFINITE, code)
        code = torch.where(s.out_index >= len(self.ts), Result.SUCCESS, code)
        s.status = torch.where(live, code, s.status)
