"""Brownian increments that adaptive steps may query, shrink and re-query without bias.

An adaptive SDE solver asks its Brownian motion for the increment over a proposed step, and may
then reject the step. Drawing fresh noise for the retry biases the solution: acceptance depends on
the noise, so redrawing selects it (Rackauckas & Nie 2017). The solver must instead ask questions
of one fixed path per sample. This module provides two such paths behind one narrow interface:

* :class:`BrownianRegister`: one path per sample, every sample on its own time grid. It keeps, per
  sample, a stack of *pending* intervals whose increments are known but not yet consumed (the
  unused part of rejected steps). A query inside the top interval is answered with a Brownian
  bridge, ``N(q dW, q (1 - q) L)`` for the fraction ``q`` of an interval of length ``L`` with
  increment ``dW``; a query with nothing pending draws fresh noise. Querying never commits: a
  rejected query leaves the path refined, an accepted one pops the consumed interval.
* :class:`TorchsdeBrownian`: wraps a torchsde ``BrownianInterval`` / ``BrownianTree`` /
  ``BrownianPath`` (one time grid shared by the batch), which is consistent under re-queries by
  construction.

Both report a *horizon* per sample: the end of the nearest pending interval. The integration loop
never steps past it, so later steps land exactly on the end times of rejected steps, which Foster
& Jelinčič (2023, arXiv:2311.14201) show is needed for convergence with non-commutative noise.

The register's random numbers are counter-based (:mod:`adaptive_sde._random`): a sample's path is
a function of the seed, its sample id and its own queries, never of the rest of the batch.
"""

from __future__ import annotations

import math
import operator
from typing import Protocol, runtime_checkable

import torch

from adaptive_sde import _random
from adaptive_sde._validation import check_seed

_BROWNIAN_TAG = 0x42524F574E49414E  # "BROWNIAN"
_INITIAL_DEPTH = 8


@runtime_checkable
class BrownianSource(Protocol):
    """What the integration loop needs from a Brownian motion.

    ``rows`` is a LongTensor of the batch rows being stepped, or ``None`` for all of them. Times
    are tensors of shape ``(len(rows),)``; every row's ``t`` is its last committed time.
    """

    batch_size: int
    brownian_size: int
    per_sample: bool

    def horizon(self, rows: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        """End time of each row's nearest pending interval (``+inf`` when none)."""
        ...

    def increment(
        self, rows: torch.Tensor | None, t: torch.Tensor, t_next: torch.Tensor
    ) -> torch.Tensor:
        """W(t_next) - W(t) for each row, shape (n, brownian_size); requires t_next <= horizon."""
        ...

    def commit(self, rows: torch.Tensor | None, accepted: torch.Tensor) -> None:
        """Consume the last queried interval of the rows where ``accepted`` is true."""
        ...

    def depth_probe(self) -> torch.Tensor | None:
        """A 0-d integer tensor the loop reads back with its own host read (so the source needs
        none of its own), or ``None``."""
        ...

    def reserve(self, queries: int, probed: int | None) -> None:
        """Prepare for up to ``queries`` increments before the loop next reads the device;
        ``probed`` is the value of :meth:`depth_probe` at this read."""
        ...


def _take(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return x if rows is None else x[rows]


def _put(x: torch.Tensor, rows: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """``x`` with ``value`` in ``rows`` (in place for a subset, replaced for all rows)."""
    if rows is None:
        return value
    x[rows] = value
    return x


def _replace(x: torch.Tensor, rows: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """A new tensor: ``x`` with ``value`` in ``rows`` (``x`` itself is left alone, so a tensor
    the register handed out is never changed under its holder)."""
    return value if rows is None else x.index_put((rows,), value)


class BrownianRegister:
    """One Brownian path per sample, each on its own adaptive time grid, reusable on rejection.

    **Arguments:**

    - ``batch_size``, ``brownian_size``: the shape ``(batch, m)`` of an increment.
    - ``seed``: an ``int`` or a ``torch.Generator`` (one integer is drawn from it). ``None`` draws
      the seed from PyTorch's global generator, so ``torch.manual_seed`` makes runs repeatable.
    - ``sample_ids``: the id of each row, shape ``(batch,)``; defaults to ``arange(batch)``. A
      sample's path depends only on ``(seed, sample id)`` and the times it is queried at, so
      solving sample ``i`` alone with ``sample_ids=[i]`` reproduces its row of a batch solve.
    - ``dtype``, ``device``: of the increments; times are kept in ``time_dtype``.

    The attribute ``w`` holds each sample's committed value W(t) - W(t0), shape (batch, m).
    An increment returned by :meth:`increment` is also the register's record of that interval:
    read it, do not change it in place.
    """

    per_sample = True

    def __init__(
        self,
        batch_size: int,
        brownian_size: int,
        *,
        seed: int | torch.Generator | None = None,
        sample_ids: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        time_dtype: torch.dtype | None = None,
    ) -> None:
        if batch_size < 1 or brownian_size < 1:
            raise ValueError(
                f"batch_size and brownian_size must be positive, got {batch_size}, {brownian_size}"
            )
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.batch_size = batch_size
        self.brownian_size = brownian_size
        self.dtype = dtype
        self.device = device
        self.time_dtype = time_dtype or dtype
        self.seed = resolve_seed(seed)
        if sample_ids is None:
            sample_ids = torch.arange(batch_size, device=device)
        if tuple(sample_ids.shape) != (batch_size,):
            raise ValueError(
                f"sample_ids must have shape ({batch_size},), got {tuple(sample_ids.shape)}"
            )
        self.sample_ids = sample_ids.to(device=device, dtype=torch.int64)
        self._keys = _random.stream_keys(self.seed, self.sample_ids, _BROWNIAN_TAG)
        self._draws = torch.zeros(batch_size, dtype=torch.int64, device=device)
        self.w = torch.zeros(batch_size, brownian_size, dtype=dtype, device=device)
        # Each sample's stack of pending intervals, ``depth`` of them; they follow one another in
        # time from the top, the interval starting at the sample's t. The top is held densely
        # (its end, +inf for an empty stack, and its increment), the rest in ``_ends``/``_incs``:
        # the interval k places below the top at slot depth - 1 - k (slots 1 .. depth - 1). Slot
        # 0 ends at +inf: popping the last interval makes it the top, an empty one. The slot
        # ``depth`` belongs to the top and is written freely, so that a query stores the rest of
        # a split top there with no branch on whether it split. ``_incs`` is (slots * batch, m),
        # slot-major, so one row's slot is one contiguous row of it.
        self._rows = torch.arange(batch_size, device=device)
        self._depth = torch.zeros(batch_size, dtype=torch.int64, device=device)
        self._top_end = torch.full((batch_size,), math.inf, dtype=self.time_dtype, device=device)
        self._top_inc = torch.zeros(batch_size, brownian_size, dtype=dtype, device=device)
        self._top_inc_lent = False  # ``_top_inc`` is a tensor ``increment`` returned
        self._ends = torch.full(
            (_INITIAL_DEPTH, batch_size), math.inf, dtype=self.time_dtype, device=device
        )
        self._incs = torch.zeros(
            _INITIAL_DEPTH * batch_size, brownian_size, dtype=dtype, device=device
        )
        # A host-side bound on the stack depth: each query pushes at most one interval, so the
        # stacks grow only when this bound says they might, and the depth is read back only
        # then. A bound of 0 before a query or 1 at a commit also lets them skip the slots.
        self._depth_bound = 0

    # -- the BrownianSource interface -------------------------------------------------------

    def horizon(self, rows: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        return _take(self._top_end, rows)

    def increment(
        self, rows: torch.Tensor | None, t: torch.Tensor, t_next: torch.Tensor
    ) -> torch.Tensor:
        self._reserve_slot()
        maybe_pending = self._depth_bound > 1  # the bound was above 0 before this query
        depth = _take(self._depth, rows)
        top_end = _take(self._top_end, rows)
        top_inc = _take(self._top_inc, rows)

        # Per row, the top [t, e] (e = +inf when nothing is pending) and t_next <= e: a split
        # (t_next < e) draws from the Brownian bridge N(q dW, q (1 - q) (e - t)) with q = h /
        # (e - t); t_next = e gives q = 1, the pending increment itself; nothing pending gives
        # q = 0 and N(0, h), a fresh draw. The bridge's variance is written h (1 - q).
        splits = t_next < top_end  # every row that draws: a split or a fresh draw
        h = t_next - t
        q = torch.clamp((h / (top_end - t)).to(self.dtype), max=1)
        h = h.to(self.dtype)
        variance = torch.addcmul(h, h, q, value=-1).clamp_(min=0)
        counters = _take(self._draws, rows)
        keys = _take(self._keys, rows)
        dw = _random.scaled_normals(keys, counters, self.brownian_size, self.dtype, variance)
        if maybe_pending:  # else q = 0 in every row, and q dW adds nothing
            dw = torch.addcmul(dw, top_inc, q[:, None])

        # The top becomes [t, t_next] with increment dw. A split leaves the rest [t_next, e] of
        # the old top pending under it, at the old top's slot: written for every row (for the
        # others it lands in the top's own slot, or in slot 0 with e = +inf, and is never read).
        if maybe_pending:
            index = self._slot_index(rows, depth)
            self._ends.view(-1).index_put_((index,), top_end)
            self._incs.index_copy_(0, index, top_inc - dw)
        self._top_end = _replace(self._top_end, rows, t_next.to(self.time_dtype, copy=True))
        self._set_top_inc(rows, dw, lent=rows is None)
        pushed = splits.to(torch.int64)
        self._draws = _replace(self._draws, rows, counters + pushed)
        self._depth = _replace(self._depth, rows, depth + pushed)
        return dw

    def depth_probe(self) -> torch.Tensor:
        """The deepest pending stack, for the loop to read along with its own host read."""
        return self._depth.max()

    def reserve(self, queries: int, probed: int | None) -> None:
        """Make room for ``queries`` more increments. ``probed`` (the deepest stack, read by the
        loop) makes the host-side bound exact, so no read of our own is needed."""
        if probed is not None:
            self._depth_bound = probed
        elif self._depth_bound + queries >= self._ends.shape[0]:
            self._depth_bound = int(self._depth.max())  # only when the bound is not enough
        capacity = self._ends.shape[0]
        while self._depth_bound + queries >= capacity:
            capacity *= 2
        self._grow(capacity)

    def commit(self, rows: torch.Tensor | None, accepted: torch.Tensor) -> None:
        depth = _take(self._depth, rows)
        top_end = _take(self._top_end, rows)
        top_inc = _take(self._top_inc, rows)
        # Selections by 0/1 weights (w + 1 * dW, w + 0 * dW = w, and likewise below) are exact
        # for the finite increments the register holds, and cheaper than torch.where here.
        taken = accepted.to(self.dtype)[:, None]
        self.w = _put(self.w, rows, torch.addcmul(_take(self.w, rows), top_inc, taken))
        depth = torch.add(depth, accepted, alpha=-1)
        # An accepted row pops its top; the interval under it (slot ``depth``) becomes the top.
        if self._depth_bound > 1:
            index = self._slot_index(rows, depth)
            below_end = self._ends.view(-1).index_select(0, index)
            below_inc = self._incs.index_select(0, index)
            kept = torch.addcmul(below_inc * taken, top_inc, 1 - taken)
            self._set_top_inc(rows, kept, lent=False)
            new_end = torch.where(accepted, below_end, top_end)
        else:  # no stack is deeper than 1: every accepted row's stack is now empty
            new_end = top_end.masked_fill(accepted, math.inf)
        self._top_end = _replace(self._top_end, rows, new_end)
        self._depth = _replace(self._depth, rows, depth)

    # -- internals --------------------------------------------------------------------------

    def _set_top_inc(self, rows: torch.Tensor | None, value: torch.Tensor, lent: bool) -> None:
        """The top increments of ``rows`` become ``value`` (``lent``: ``value`` itself is kept,
        and is a tensor handed out); a tensor handed out earlier is replaced, never written."""
        if rows is None or self._top_inc_lent:
            self._top_inc = _replace(self._top_inc, rows, value)
        else:
            self._top_inc[rows] = value
        self._top_inc_lent = lent

    def _slot_index(self, rows: torch.Tensor | None, slot: torch.Tensor) -> torch.Tensor:
        """The flat index of each row's ``slot`` in ``_ends.view(-1)`` and ``_incs``."""
        return torch.add(self._rows if rows is None else rows, slot, alpha=self.batch_size)

    def _reserve_slot(self) -> None:
        """Make sure every stack has room for one more interval (``reserve`` usually has) and
        count it in the bound, which stays an upper bound on every stack's depth."""
        if self._depth_bound + 1 >= self._ends.shape[0]:
            self.reserve(1, None)
        self._depth_bound += 1

    def _grow(self, capacity: int) -> None:
        grow = capacity - self._ends.shape[0]
        if grow > 0:
            batch, m = self.batch_size, self.brownian_size
            self._ends = torch.cat([self._ends, self._ends.new_full((grow, batch), math.inf)])
            self._incs = torch.cat([self._incs, self._incs.new_zeros(grow * batch, m)])


class TorchsdeBrownian:
    """A torchsde Brownian motion (``BrownianInterval``, ``BrownianTree``, ``BrownianPath``) as a
    :class:`BrownianSource` for a batch that shares one time grid.

    torchsde's Brownian objects answer any query ``bm(ta, tb)`` consistently, so re-querying a
    rejected interval is unbiased by construction; this adapter only records the end times of
    rejected steps so the loop lands on them. It keeps them on the device (a stack with its depth)
    and takes each step's two times on the host from the loop's own read (:attr:`times`, set by
    the loop, which proposes the step before it reads): a step costs one host read in all, the
    loop's, instead of one per time and one per decision.
    """

    per_sample = False
    host_times = True  # the loop sets :attr:`times` from its read before each increment

    def __init__(self, bm: object) -> None:
        shape = tuple(getattr(bm, "shape", ()))
        if len(shape) != 2:
            raise ValueError(f"bm must produce increments of shape (batch, m), got shape {shape}")
        self.bm = bm
        # Usually the state's batch; torchsde's adjoint solves a state of batch 1 driven by the
        # forward batch's noise, so the two may differ.
        self.batch_size, self.brownian_size = int(shape[0]), int(shape[1])
        self.times: tuple[float, float] | None = None
        self._stack: torch.Tensor | None = None  # end times of rejected steps, nearest at depth-1
        self._depth: torch.Tensor | None = None  # 0-d int64
        self._end: torch.Tensor | None = None  # the last queried step's end, 0-d

    def _start(self, t: torch.Tensor, capacity: int = _INITIAL_DEPTH) -> None:
        stack = torch.full((capacity,), math.inf, dtype=t.dtype, device=t.device)
        if self._stack is not None:
            stack[: self._stack.numel()] = self._stack
        self._stack = stack
        if self._depth is None:
            self._depth = torch.zeros((), dtype=torch.int64, device=t.device)

    def _top(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest pending end (``+inf`` when none) and whether there is one, 0-d."""
        assert self._stack is not None and self._depth is not None
        index = torch.clamp(self._depth - 1, min=0).reshape(1)
        top = self._stack.index_select(0, index).reshape(())
        pending = self._depth > 0
        return torch.where(pending, top, math.inf), pending

    def horizon(self, rows: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        if self._stack is None:
            self._start(t)
        top, _ = self._top()
        return top.to(t.dtype).expand_as(t)

    def increment(
        self, rows: torch.Tensor | None, t: torch.Tensor, t_next: torch.Tensor
    ) -> torch.Tensor:
        if self.times is not None:
            (ta, tb), self.times = self.times, None
        else:  # a caller other than the loop: read the times here
            ta, tb = torch.stack([t[0], t_next[0]]).tolist()
        if self._stack is None:
            self._start(t_next)
        self._end = t_next[0]
        dw = self.bm(ta, tb)  # type: ignore[operator]
        return _take(dw, rows)

    def depth_probe(self) -> torch.Tensor | None:
        """The stack's depth, for the loop's read (to grow the stack before it can overflow)."""
        return self._depth

    def reserve(self, queries: int, probed: int | None) -> None:
        """Room for ``queries`` more pending ends (one per rejection) beyond the probed depth."""
        if self._stack is not None and probed is not None:
            if probed + queries >= self._stack.numel():
                self._start(self._stack, 2 * (probed + queries))

    def commit(self, rows: torch.Tensor | None, accepted: torch.Tensor) -> None:
        """An accepted step that lands on the nearest pending end pops it; a rejected step
        pushes its end (once: a retry of the same end does not push it again). On the device."""
        assert self._stack is not None and self._depth is not None and self._end is not None
        end = self._end.to(self._stack.dtype)
        top, pending = self._top()
        on_top = pending & (top == end)
        taken = accepted.all()
        push = ~taken & ~on_top
        pop = taken & on_top
        slot = torch.clamp(self._depth, max=self._stack.numel() - 1).reshape(1)
        kept = self._stack.index_select(0, slot)
        self._stack = self._stack.index_put((slot,), torch.where(push, end, kept))
        self._depth = self._depth + push.to(torch.int64) - pop.to(torch.int64)


def resolve_seed(seed: int | torch.Generator | None, *, name: str = "seed") -> int:
    """An integer seed from an int in [0, 2**64), a ``torch.Generator`` (one draw from it) or
    ``None`` (one draw from PyTorch's global generator). ``name`` is the argument as the caller
    knows it (the diffusion sampler's ``generator``), for the error of a bad seed."""
    check_seed(seed, name=name)
    if seed is None or isinstance(seed, torch.Generator):
        return int(
            torch.randint(0, 2**62, (1,), generator=seed, device=getattr(seed, "device", "cpu"))
        )
    return operator.index(seed)
