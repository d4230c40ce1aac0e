"""The Brownian register: bridges, consistency under rejection, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

import adaptive_sde
from adaptive_sde import BrownianRegister, TorchsdeBrownian
from adaptive_sde._bench.problems import GBM_ITO, OU
from tests.helpers import assert_within_mc, brownian_interval


class RecordingRegister(BrownianRegister):
    """A register that logs every query and decision, to check the path from outside."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._pending_query = None

    def increment(self, rows, t, t_next):
        dw = super().increment(rows, t, t_next)
        ids = torch.arange(self.batch_size) if rows is None else rows
        self._pending_query = (ids, t.clone(), t_next.clone(), dw.clone())
        return dw

    def commit(self, rows, accepted):
        super().commit(rows, accepted)
        ids, t, t_next, dw = self._pending_query
        self.log.append((ids, t, t_next, dw, accepted.clone()))


def _solve_recorded(batch=64, rtol=0.1, seed=2):
    reg = RecordingRegister(batch, 1, seed=seed, dtype=torch.float64)
    y0 = torch.ones(batch, 1, dtype=torch.float64)
    ts = torch.linspace(0, 1, 4, dtype=torch.float64)
    sol = adaptive_sde.solve(GBM_ITO.make_sde(), y0, ts, bm=reg, rtol=rtol, atol=rtol / 10)
    return reg, sol


def test_accepted_increments_sum_to_the_path_value():
    reg, sol = _solve_recorded()
    total = torch.zeros(reg.batch_size, 1, dtype=torch.float64)
    for ids, _, _, dw, accepted in reg.log:
        total.index_add_(0, ids[accepted], dw[accepted])
    torch.testing.assert_close(total, reg.w)
    assert sol.stats.total_rejected > 0  # the check covered rejections


def test_rejected_increments_are_never_redrawn():
    # Every rejected query [t, t+h] is later covered exactly by accepted steps (steps land on
    # its end), and their increments sum to the rejected one: the path was only refined.
    reg, _ = _solve_recorded(batch=32, rtol=0.05)
    accepted_steps: dict[int, list[tuple[float, float, float]]] = {}
    rejected: list[tuple[int, float, float, float]] = []
    for ids, t, t_next, dw, acc in reg.log:
        for k, i in enumerate(ids.tolist()):
            entry = (float(t[k]), float(t_next[k]), float(dw[k, 0]))
            if acc[k]:
                accepted_steps.setdefault(i, []).append(entry)
            else:
                rejected.append((i, *entry))
    assert len(rejected) > 20
    for i, a, b, dw in rejected:
        inside = [s for s in accepted_steps[i] if s[0] >= a and s[1] <= b]
        assert inside and inside[0][0] == a and max(s[1] for s in inside) == b
        assert sum(s[2] for s in inside) == pytest.approx(dw, abs=1e-12)
        assert sum(s[1] - s[0] for s in inside) == pytest.approx(b - a, abs=1e-12)


def test_bridge_samples_have_the_brownian_bridge_mean_and_variance():
    n = 100_000
    reg = BrownianRegister(n, 1, seed=4, dtype=torch.float64)
    t = torch.zeros(n, dtype=torch.float64)
    whole = reg.increment(None, t, torch.full((n,), 1.0, dtype=torch.float64)).clone()
    reg.commit(None, torch.zeros(n, dtype=torch.bool))  # rejected: [0, 1] stays pending
    part = reg.increment(None, t, torch.full((n,), 0.3, dtype=torch.float64))
    # W(0.3) given W(1) = w: mean 0.3 w, variance 0.3 * 0.7 = 0.21.
    residual = part - 0.3 * whole
    assert_within_mc(residual, torch.tensor([0.0]))
    assert_within_mc(residual, torch.tensor([0.21]), what="var")
    assert_within_mc(whole, torch.tensor([1.0]), what="var")
    # Unconditionally W(0.3) ~ N(0, 0.3).
    assert_within_mc(part, torch.tensor([0.3]), what="var")


def test_pending_remainder_is_consumed_by_the_next_step():
    reg = BrownianRegister(1, 2, seed=0, dtype=torch.float64)
    t0, t1, th = (torch.tensor([v], dtype=torch.float64) for v in (0.0, 1.0, 0.4))
    whole = reg.increment(None, t0, t1).clone()
    reg.commit(None, torch.tensor([False]))
    first = reg.increment(None, t0, th).clone()
    reg.commit(None, torch.tensor([True]))
    assert float(reg.horizon(None, th)) == 1.0
    rest = reg.increment(None, th, t1)
    reg.commit(None, torch.tensor([True]))
    torch.testing.assert_close(first + rest, whole)
    torch.testing.assert_close(reg.w, whole)
    assert math.isinf(float(reg.horizon(None, t1)))


def test_deep_rejection_chains_grow_the_stack():
    reg = BrownianRegister(2, 1, seed=0, dtype=torch.float64)
    t = torch.zeros(2, dtype=torch.float64)
    ends = [1.0 / 2**k for k in range(20)]
    for e in ends:  # 20 nested rejections, beyond the initial capacity
        reg.increment(None, t, torch.full((2,), e, dtype=torch.float64))
        reg.commit(None, torch.zeros(2, dtype=torch.bool))
    first = reg.increment(None, t, torch.full((2,), ends[-1], dtype=torch.float64))
    reg.commit(None, torch.ones(2, dtype=torch.bool))
    total = first.clone()
    now = ends[-1]
    for e in reversed(ends[:-1]):  # each later step lands on the next pending end
        assert float(reg.horizon(None, torch.full((2,), now))[0]) == e
        total += reg.increment(
            None,
            torch.full((2,), now, dtype=torch.float64),
            torch.full((2,), e, dtype=torch.float64),
        )
        reg.commit(None, torch.ones(2, dtype=torch.bool))
        now = e
    torch.testing.assert_close(total, reg.w)


def test_a_sample_solved_alone_reproduces_its_row_of_the_batch():
    batch = 16
    y0 = GBM_ITO.initial(batch)
    ts = torch.linspace(0, 1, 3, dtype=torch.float64)
    full = adaptive_sde.solve(GBM_ITO.make_sde(), y0, ts, seed=21, rtol=0.05, atol=0.005)
    for i in (0, 5, 15):
        reg = BrownianRegister(1, 1, seed=21, sample_ids=torch.tensor([i]), dtype=torch.float64)
        alone = adaptive_sde.solve(
            GBM_ITO.make_sde(), y0[i : i + 1], ts, bm=reg, rtol=0.05, atol=0.005
        )
        torch.testing.assert_close(alone.ys[:, 0], full.ys[:, i], rtol=1e-12, atol=1e-12)
        assert int(alone.stats.nfe[0]) == int(full.stats.nfe[i])


def test_seed_and_generator_make_runs_reproducible():
    y0 = GBM_ITO.initial(8)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def run(seed):
        return adaptive_sde.solve(GBM_ITO.make_sde(), y0, ts, seed=seed, rtol=0.1).ys

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    assert torch.equal(run(torch.Generator().manual_seed(1)), run(torch.Generator().manual_seed(1)))
    torch.manual_seed(0)
    a = run(None)
    torch.manual_seed(0)
    assert torch.equal(a, run(None))


def test_torchsde_brownian_interval_drives_a_shared_grid_solve():
    batch = 500
    bm = brownian_interval(batch, 1, seed=5)
    y0 = GBM_ITO.initial(batch)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sol = adaptive_sde.solve(
        GBM_ITO.make_sde(), y0, ts, bm=bm, per_sample=False, rtol=0.01, atol=0.001
    )
    exact = GBM_ITO.exact(y0, bm, 0.0, 1.0)
    # A solution of *this* path: the strong error is small.
    assert float((sol.ys[-1] - exact).abs().mean()) < 0.05
    assert sol.stats.total_rejected > 0


def test_torchsde_adapter_lands_on_rejected_end_times():
    bm = brownian_interval(1, 1)
    adapter = TorchsdeBrownian(bm)
    t = torch.zeros(1, dtype=torch.float64)
    adapter.increment(None, t, torch.tensor([0.5], dtype=torch.float64))
    adapter.commit(None, torch.tensor([False]))
    assert float(adapter.horizon(None, t)) == 0.5
    adapter.increment(None, t, torch.tensor([0.2], dtype=torch.float64))
    adapter.commit(None, torch.tensor([True]))
    assert float(adapter.horizon(None, t)) == 0.5
    adapter.increment(None, torch.tensor([0.2]), torch.tensor([0.5], dtype=torch.float64))
    adapter.commit(None, torch.tensor([True]))
    assert math.isinf(float(adapter.horizon(None, t)))


def test_per_sample_steps_refuse_a_shared_grid_brownian_motion():
    bm = brownian_interval(4, 1)
    with pytest.raises(ValueError, match="per_sample=False"):
        adaptive_sde.solve(OU.make_sde(), OU.initial(4), torch.tensor([0.0, 1.0]).double(), bm=bm)


def test_register_argument_errors():
    with pytest.raises(ValueError, match="sample_ids"):
        BrownianRegister(3, 1, sample_ids=torch.arange(4))
    with pytest.raises(ValueError, match="positive"):
        BrownianRegister(0, 1)
    with pytest.raises(TypeError, match="seed"):
        BrownianRegister(1, 1, seed="7")


class _ReferenceRegister:
    """The register's semantics, one sample at a time in plain Python: a stack of pending
    (end, increment) intervals, the top first in time; the same counter-based draws."""

    def __init__(self, batch: int, m: int, seed: int) -> None:
        self.keys = adaptive_sde._random.stream_keys(
            seed, torch.arange(batch), adaptive_sde._brownian._BROWNIAN_TAG
        )
        self.stacks: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(batch)]
        self.draws = [0] * batch
        self.w = torch.zeros(batch, m, dtype=torch.float64)
        self.m = m

    def horizon(self, i: int) -> float:
        return self.stacks[i][-1][0] if self.stacks[i] else math.inf

    def increment(self, i: int, t: float, t_next: float) -> torch.Tensor:
        stack = self.stacks[i]
        if stack and t_next >= stack[-1][0]:  # the pending increment itself
            end, inc = stack.pop()
            stack.append((t_next, inc))
            return inc
        counter = torch.tensor([self.draws[i]])
        z = adaptive_sde._random.normals(self.keys[i : i + 1], counter, self.m, torch.float64)[0]
        self.draws[i] += 1
        if not stack:
            dw = math.sqrt(t_next - t) * z
        else:  # the Brownian bridge inside the top [t, end]
            end, inc = stack.pop()
            q = (t_next - t) / (end - t)
            dw = q * inc + math.sqrt(q * (1 - q) * (end - t)) * z
            stack.append((end, inc - dw))
        stack.append((t_next, dw))
        return dw

    def commit(self, i: int, accepted: bool) -> None:
        if accepted:
            self.w[i] += self.stacks[i].pop()[1]


@pytest.mark.parametrize("sync", [1, 3])
def test_the_register_follows_the_reference_semantics(sync):
    # Random steps, rejections (halving the step, so stacks grow deep) and subsets of rows, as
    # the loop makes them; reserve() gets the probed depth once per block of ``sync`` queries.
    batch, m = 12, 3
    gen = torch.Generator().manual_seed(sync)
    reg = BrownianRegister(batch, m, seed=8, dtype=torch.float64)
    ref = _ReferenceRegister(batch, m, seed=8)
    t = torch.zeros(batch, dtype=torch.float64)
    h = torch.full((batch,), 0.1, dtype=torch.float64)
    deepest = 0
    for step in range(300):
        if step % sync == 0:
            reg.reserve(sync, int(reg.depth_probe()))
        if step % 5 == 4:
            rows = torch.randperm(batch, generator=gen)[: batch // 2]
        else:
            rows = None
        ids = torch.arange(batch) if rows is None else rows
        t_rows, h_rows = t[ids], h[ids]
        horizon = reg.horizon(rows, t_rows)
        assert horizon.tolist() == [ref.horizon(int(i)) for i in ids]
        t_next = torch.minimum(t_rows + h_rows, horizon)
        dw = reg.increment(rows, t_rows, t_next)
        for k, i in enumerate(ids.tolist()):
            expected = ref.increment(i, float(t_rows[k]), float(t_next[k]))
            torch.testing.assert_close(dw[k], expected, rtol=1e-10, atol=1e-12)
        accepted = torch.rand(len(ids), generator=gen) < 0.6
        reg.commit(rows, accepted)
        for k, i in enumerate(ids.tolist()):
            ref.commit(i, bool(accepted[k]))
        t[ids] = torch.where(accepted, t_next, t_rows)
        h[ids] = torch.where(accepted, 0.1, h_rows / 2)
        deepest = max(deepest, max(len(s) for s in ref.stacks))
        assert int(reg.depth_probe()) == max(len(s) for s in ref.stacks)
    torch.testing.assert_close(reg.w, ref.w, rtol=1e-10, atol=1e-12)
    assert deepest > 8  # beyond the initial capacity


def test_a_row_alone_draws_the_same_path_bit_for_bit():
    # The register's skips (no slot traffic while the host knows no stack is pending) depend on
    # the batch; the path must not.
    batch, m = 64, 2
    gen = torch.Generator().manual_seed(0)
    steps = [(torch.rand(batch, generator=gen) < 0.7) for _ in range(60)]
    paths = []
    for ids in (torch.arange(batch), torch.tensor([9])):
        reg = BrownianRegister(len(ids), m, seed=1, sample_ids=ids, dtype=torch.float32)
        t = torch.zeros(len(ids))
        h = torch.full((len(ids),), 0.05)
        out = []
        for accepted in steps:
            accepted = accepted[ids]
            reg.reserve(1, int(reg.depth_probe()))
            t_next = torch.minimum(t + h, reg.horizon(None, t))
            out.append(reg.increment(None, t, t_next).clone())
            reg.commit(None, accepted)
            t = torch.where(accepted, t_next, t)
            h = torch.where(accepted, 0.05, h / 2)
        paths.append(torch.stack(out, 1))
    assert torch.equal(paths[1][0], paths[0][9])


def test_returned_increments_and_horizons_are_not_changed_later():
    reg = BrownianRegister(4, 2, seed=0, dtype=torch.float64)
    t = torch.zeros(4, dtype=torch.float64)
    horizon = reg.horizon(None, t)
    dw = reg.increment(None, t, torch.full((4,), 0.5, dtype=torch.float64))
    kept, kept_horizon = dw.clone(), horizon.clone()
    reg.commit(None, torch.tensor([False, True, False, True]))
    rows = torch.tensor([0, 2])
    reg.increment(rows, t[rows], torch.full((2,), 0.25, dtype=torch.float64))
    reg.commit(rows, torch.tensor([True, False]))
    assert torch.equal(dw, kept) and torch.equal(horizon, kept_horizon)


def test_the_torchsde_adapter_grows_its_stack_of_pending_ends():
    # Nested rejections push one end each: more than the initial room, read back in order.
    bm = brownian_interval(1, 1)
    adapter = TorchsdeBrownian(bm)
    t = torch.zeros(1, dtype=torch.float64)
    ends = [0.5**k for k in range(1, 20)]
    for end in ends:
        adapter.reserve(
            1, int(adapter.depth_probe()) if adapter.depth_probe() is not None else None
        )
        adapter.increment(None, t, torch.tensor([end], dtype=torch.float64))
        adapter.commit(None, torch.tensor([False]))
    assert int(adapter.depth_probe()) == len(ends)
    for end in reversed(ends):
        assert float(adapter.horizon(None, t)) == end
        adapter.increment(None, t, torch.tensor([end], dtype=torch.float64))
        adapter.commit(None, torch.tensor([True]))
        t = torch.tensor([end], dtype=torch.float64)
    assert math.isinf(float(adapter.horizon(None, t)))
