"""The loop's host reads: one per ``sync_every`` passes, and the same results for any spacing."""

from __future__ import annotations

import math

import pytest
import torch

import adaptive_sde
from adaptive_sde import Result
from adaptive_sde._bench.problems import COMMUTING_ITO, GBM_ITO, OU, Problem
from adaptive_sde.diffusion import VPSDE, GaussianMixture, sample
from tests.helpers import HostReads

# Reads outside the loop: argument checks, the first step, the final break, the success check.
SETUP_READS = 12


def _solve(problem: Problem, sync_every: int, batch: int = 48, **kwargs) -> adaptive_sde.Solution:
    ts = torch.linspace(0, problem.t1, 4, dtype=torch.float64)
    options = {"rtol": 1e-2, "atol": 1e-3, "seed": 3, **kwargs}
    return adaptive_sde.solve(
        problem.make_sde(), problem.initial(batch), ts, sync_every=sync_every, **options
    )


@pytest.mark.parametrize("k", [1, 4, 16])
def test_host_reads_are_bounded_by_passes_over_sync_every(k):
    with HostReads() as reads:
        solution = _solve(GBM_ITO, k)
    passes = int(solution.stats.num_steps.max())  # the slowest sample is live in every block
    assert passes > 40
    assert reads.count <= math.ceil(passes / k) + SETUP_READS, reads.names
    if k == 1:  # the counter does see the loop's read: one per pass
        assert reads.count >= passes


def test_reads_outside_the_loop_do_not_grow_with_the_solve():
    outside = []
    for tolerance in (0.5, 1e-3):
        with HostReads() as reads:
            solution = _solve(OU, 1, rtol=tolerance, atol=tolerance / 10)
        passes = int(solution.stats.num_steps.max())
        outside.append(reads.count - (passes + 1))  # one read per pass, one to see all done
    assert passes > 100
    assert outside[0] == outside[1] <= SETUP_READS


@pytest.mark.parametrize("problem", [GBM_ITO, COMMUTING_ITO, OU], ids=lambda p: p.name)
@pytest.mark.parametrize("per_sample", [True, False])
def test_results_do_not_depend_on_sync_every(problem, per_sample):
    # Equal to rounding, not bit for bit: a row evaluated in a batch of another size may fall in
    # the scalar tail of a vectorised kernel (pow) or be blocked differently by a matrix product,
    # which can round differently in the last bit; the decisions (counts) are the same.
    reference = _solve(problem, 1, per_sample=per_sample)
    for k in (3, 8):
        other = _solve(problem, k, per_sample=per_sample)
        torch.testing.assert_close(other.ys, reference.ys, rtol=1e-9, atol=0)
        torch.testing.assert_close(other.dt_next, reference.dt_next, rtol=1e-9, atol=0)
        for name in ("num_accepted", "num_rejected", "result", "t_final", "dt_smallest"):
            assert torch.equal(getattr(other.stats, name), getattr(reference.stats, name)), name
        # Only the cost differs: a retry after a rejection reuses its first stage when the host
        # knows which rows moved (every pass with sync_every=1, a block's first pass otherwise).
        s = reference.stats
        per_attempt = 3 if problem is COMMUTING_ITO else 2  # decoupled signs: one more
        attempts = s.num_accepted + s.num_rejected
        assert torch.equal(s.nfe, (per_attempt - 1) * attempts + s.num_accepted)
        assert torch.all(other.stats.nfe >= s.nfe)
        assert torch.all(other.stats.nfe <= per_attempt * attempts)


def test_failed_samples_stay_frozen_inside_a_block():
    # A step budget that half the samples exhaust: they fail inside a block and must not move,
    # count steps or write outputs while the rest of the block runs.
    reference = _solve(GBM_ITO, 1, max_steps=95, throw=False)
    failed = reference.stats.result == Result.MAX_STEPS_REACHED
    assert 0 < int(failed.sum()) < failed.numel()
    other = _solve(GBM_ITO, 16, max_steps=95, throw=False)
    assert torch.equal(other.stats.result, reference.stats.result)
    assert torch.equal(other.stats.num_steps, reference.stats.num_steps)
    torch.testing.assert_close(other.ys, reference.ys, rtol=1e-9, atol=0, equal_nan=True)
    assert int(other.stats.num_steps.max()) == 95


def test_sampler_host_reads_are_bounded():
    mixture = GaussianMixture.ring()
    sde = VPSDE()
    with HostReads() as reads:
        _, stats = sample(mixture.score_fn(sde), sde, (64, 2), seed=0, sync_every=8)
    passes = int(stats.solve.num_steps.max())
    assert reads.count <= math.ceil(passes / 8) + SETUP_READS + 4, reads.names


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_sync_every_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="sync_every must be a positive integer"):
        _solve(OU, bad)


def test_a_torchsde_brownian_motion_costs_one_host_read_per_step():
    # torchsde's Brownian objects take their times on the host: the loop proposes the step
    # before its read and hands them over, and the rejected steps' ends stay on the device.
    from adaptive_sde._bench.convergence import brownian_interval

    batch = 32
    bm = brownian_interval(batch, 1, seed=2)
    ts = torch.linspace(0, 1, 4, dtype=torch.float64)
    with HostReads() as reads:
        solution = adaptive_sde.solve(
            GBM_ITO.make_sde(), GBM_ITO.initial(batch), ts, bm=bm, per_sample=False, seed=1
        )
    steps = int(solution.stats.num_steps[0])
    assert steps > 100 and int(solution.stats.num_rejected[0]) > 0
    assert reads.count <= steps + 1 + SETUP_READS, reads.names
    # The same path queried step by step gives the same solution as through sdeint.
    again = adaptive_sde.solve(
        GBM_ITO.make_sde(), GBM_ITO.initial(batch), ts, bm=bm, per_sample=False, seed=1
    )
    assert torch.equal(again.ys, solution.ys)
