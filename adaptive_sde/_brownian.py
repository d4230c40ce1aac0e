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
        # Pending stack: slot depth-1 is the top (the interval starting at t). Slot k holds the end
        # time and the increment of an interval; the intervals below the top follow it in time.
        self._depth = torch.zeros(batch_size, dtype=torch.int64, device=device)
        self._ends = torch.zeros(batch_size, _INITIAL_DEPTH, dtype=self.time_dtype, device=device)
        self._incs = torch.zeros(
            batch_size, _INITIAL_DEPTH, brownian_size, dtype=dtype, device=device
        )
        # A host-side bound on the stack depth: each query pushes at most one slot, so the stack
        # grows only when this bound says it might, and the depth is read back only then.
        self._depth_bound = 0

    # -- the BrownianSource interface -------------------------------------------------------

    def horizon(self, rows: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        depth = _take(self._depth, rows)
        ends = self._slot(self._ends, rows, self._top_slot(depth))
        return torch.where(depth > 0, ends, torch.full_like(ends, float("inf")))

    def increment(
        self, rows: torch.Tensor | None, t: torch.Tensor, t_next: torch.Tensor
    ) -> torch.Tensor:
        self._reserve_slot()
        depth = _take(self._depth, rows)
        top = self._top_slot(depth)
        pending = depth > 0
        top_end = self._slot(self._ends, rows, top)
        top_inc = self._slot(self._incs, rows, top)

        # Cases per row: nothing pending -> a fresh draw N(0, h); t_next inside the top pending
        # interval [t, e] -> the Brownian bridge N(q dW, q (1 - q) (e - t)), q = h / (e - t);
        # t_next == e -> the pending increment itself. One normal draw serves the first two.
        splits = pending & (t_next < top_end)
        draws = ~pending | splits
        h = (t_next - t).to(self.dtype)[:, None]
        length = torch.where(pending, top_end - t, t_next - t).to(self.dtype)[:, None]
        q = torch.where(pending[:, None], h / length, torch.zeros_like(h))
        counters = _take(self._draws, rows)
        z = _random.normals(_take(self._keys, rows), counters, self.brownian_size, self.dtype)
        # With nothing pending, q = 0 and the variance h make the bridge the fresh draw.
        variance = torch.where(pending[:, None], q * (1 - q) * length, h)
        bridged = torch.addcmul(q * top_inc, torch.sqrt(torch.clamp(variance, min=0)), z)
        dw = torch.where((pending & ~splits)[:, None], top_inc, bridged)

        # Refine the stack so that its top is exactly [t, t_next] with increment dw: a split
        # leaves the remainder [t_next, e] in the old top slot; then [t, t_next] is pushed.
        self._set_slot(self._incs, rows, top, torch.where(splits[:, None], top_inc - dw, top_inc))
        new_depth = depth + draws.to(torch.int64)
        new_top = self._top_slot(new_depth)
        self._set_slot(self._ends, rows, new_top, t_next.to(self.time_dtype))
        self._set_slot(self._incs, rows, new_top, dw)
        self._draws = _put(self._draws, rows, counters + draws.to(torch.int64))
        self._depth = _put(self._depth, rows, new_depth)
        return dw

    def depth_probe(self) -> torch.Tensor:
        """The deepest pending stack, for the loop to read along with its own host read."""
        return self._depth.max()

    def reserve(self, queries: int, probed: int | None) -> None:
        """Make room for ``queries`` more increments. ``probed`` (the deepest stack, read by the
        loop) makes the host-side bound exact, so no read of our own is needed."""
        if probed is not None:
            self._depth_bound = probed
        elif self._depth_bound + queries >= self._ends.shape[1]:
            self._depth_bound = int(self._depth.max())  # only when the bound is not enough
        capacity = self._ends.shape[1]
        while self._depth_bound + queries >= capacity:
            capacity *= 2
        self._grow(capacity)

    def commit(self, rows: torch.Tensor | None, accepted: torch.Tensor) -> None:
        depth = _take(self._depth, rows)
        inc = self._slot(self._incs, rows, self._top_slot(depth))
        w = _take(self.w, rows)
        self.w = _put(self.w, rows, torch.where(accepted[:, None], w + inc, w))
        self._depth = _put(self._depth, rows, depth - accepted.to(torch.int64))

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _top_slot(depth: torch.Tensor) -> torch.Tensor:
        return torch.clamp(depth - 1, min=0)

    @staticmethod
    def _slot(store: torch.Tensor, rows: torch.Tensor | None, slot: torch.Tensor) -> torch.Tensor:
        """``store[row, slot[row]]`` for each row; ``store`` is (batch, depth[, m])."""
        if rows is not None:
            return store[rows, slot]
        index = slot.view(-1, 1, *([1] * (store.dim() - 2))).expand(-1, 1, *store.shape[2:])
        return store.gather(1, index).squeeze(1)

    @staticmethod
    def _set_slot(
        store: torch.Tensor, rows: torch.Tensor | None, slot: torch.Tensor, value: torch.Tensor
    ) -> None:
        """``store[row, slot[row]] = value[row]`` in place."""
        if rows is not None:
            store[rows, slot] = value
            return
        index = slot.view(-1, 1, *([1] * (store.dim() - 2))).expand(-1, 1, *store.shape[2:])
        store.scatter_(1, index, value.unsqueeze(1))

    def _reserve_slot(self) -> None:
        """Make sure every stack has room for one more interval (``reserve`` usually has)."""
        self._depth_bound += 1
        if self._depth_bound < self._ends.shape[1]:
            return
        self.reserve(1, None)

    def _grow(self, capacity: int) -> None:
        grow = capacity - self._ends.shape[1]
        if grow > 0:
            self._ends = torch.cat([self._ends, self._ends.new_zeros(self.batch_size, grow)], 1)
            self._incs = torch.cat(
                [self._incs, self._incs.new_zeros(self.batch_size, grow, self.brownian_size)], 1
            )


class TorchsdeBrownian:
    """A torchsde Brownian motion (``BrownianInterval``, ``BrownianTree``, ``BrownianPath``) as a
    :class:`BrownianSource` for a batch that shares one time grid.

    torchsde's Brownian objects answer any query ``bm(ta, tb)`` consistently, so re-querying a
    rejected interval is unbiased by construction; this adapter only records the end times of
    rejected steps so the loop lands on them.
    """

    per_sample = False

    def __init__(self, bm: object) -> None:
        shape = tuple(getattr(bm, "shape", ()))
        if len(shape) != 2:
            raise ValueError(f"bm must produce increments of shape (batch, m), got shape {shape}")
        self.bm = bm
        # Usually the state's batch; torchsde's adjoint solves a state of batch 1 driven by the
        # forward batch's noise, so the two may differ.
        self.batch_size, self.brownian_size = int(shape[0]), int(shape[1])
        self._pending: list[float] = []  # end times of rejected steps, nearest last
        self._last_end: float | None = None

    def horizon(self, rows: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        end = self._pending[-1] if self._pending else float("inf")
        return torch.full_like(t, end)

    def increment(
        self, rows: torch.Tensor | None, t: torch.Tensor, t_next: torch.Tensor
    ) -> torch.Tensor:
        ta, tb = float(t[0]), float(t_next[0])
        self._last_end = tb
        dw = self.bm(ta, tb)  # type: ignore[operator]
        return _take(dw, rows)

    def depth_probe(self) -> None:
        return None

    def reserve(self, queries: int, probed: int | None) -> None:
        """Nothing to prepare: torchsde's Brownian objects take their times on the host."""

    def commit(self, rows: torch.Tensor | None, accepted: torch.Tensor) -> None:
        end = self._last_end
        if bool(accepted.all()):
            if self._pending and self._pending[-1] == end:
                self._pending.pop()
        elif not self._pending or self._pending[-1] != end:
            self._pending.append(end)  # type: ignore[arg-type]


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
