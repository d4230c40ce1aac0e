"""The integration loop: adaptivity, output times, per-sample stepping, results, gradients."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torchsde
from torch import nn

import adaptive_sde
from adaptive_sde import BrownianRegister, Result, SolveError
from adaptive_sde._bench.problems import GBM_ITO, OU, GeometricBrownianMotion

TS = torch.tensor([0.0, 1.0], dtype=torch.float64)


class Recording(nn.Module):
    """Wraps an SDE and logs the times and number of rows of every drift evaluation."""

    def __init__(self, sde):
        super().__init__()
        self.sde = sde
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self.calls: list[tuple[torch.Tensor, int]] = []

    def f(self, t, y):
        self.calls.append((t.detach().clone(), y.shape[0]))
        return self.sde.f(t, y)

    def g(self, t, y):
        return self.sde.g(t, y)


def test_error_falls_and_work_rises_as_rtol_tightens():
    batch = 400
    errors, nfes = [], []
    for rtol in (0.1, 0.01, 0.001):
        reg = BrownianRegister(batch, 1, seed=0, dtype=torch.float64)
        y0 = GBM_ITO.initial(batch)
        sol = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, bm=reg, rtol=rtol, atol=rtol / 10)
        exact = GBM_ITO.exact(y0, lambda a, b, w=reg.w: w, 0.0, 1.0)
        errors.append(float((sol.ys[-1] - exact).abs().mean()))
        nfes.append(sol.stats.total_nfe)
    assert errors[0] > 3 * errors[1] > 9 * errors[2]
    assert nfes[0] < nfes[1] < nfes[2]


class BumpVolatility(nn.Module):
    """dX = sigma(t) X dW with sigma large only near t = 0.5: hard in the middle only."""

    noise_type = "diagonal"
    sde_type = "ito"

    def sigma(self, t):
        return 0.05 + 1.5 * torch.exp(-(((t - 0.5) / 0.05) ** 2))

    def f(self, t, y):
        return torch.zeros_like(y)

    def g(self, t, y):
        return self.sigma(t) * y


def test_small_steps_only_where_the_problem_is_hard():
    batch = 200
    y0 = torch.ones(batch, 1, dtype=torch.float64)

    def nfe_per_time(a, b):
        ts = torch.tensor([a, b], dtype=torch.float64)
        sol = adaptive_sde.solve(BumpVolatility(), y0, ts, seed=1, rtol=0.01, atol=0.001)
        return sol.stats.nfe.double().mean() / (b - a)

    calm = nfe_per_time(0.0, 0.3)
    hard = nfe_per_time(0.4, 0.6)
    assert hard > 5 * calm


def test_every_output_is_computed_by_a_step_that_ends_there():
    sde = Recording(GBM_ITO.make_sde())
    ts = torch.tensor([0.0, 0.13, 0.5, 0.77, 1.0], dtype=torch.float64)
    batch = 6
    sol = adaptive_sde.solve(sde, GBM_ITO.initial(batch), ts, seed=0, rtol=0.05, atol=0.005)
    times = torch.cat([t.flatten() for t, _ in sde.calls])
    for t_out in ts[1:]:
        assert int((times == t_out).sum()) >= batch  # every sample evaluated exactly there
    assert torch.equal(sol.ys[0], GBM_ITO.initial(batch))
    assert torch.isfinite(sol.ys).all()


def test_deterministic_drift_with_zero_noise_is_exact_and_takes_large_steps():
    class Drift(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return torch.ones_like(y)  # both members of the pair are exact: error = 0

        def g(self, t, y):
            return torch.zeros_like(y)

    ts = torch.linspace(0, 1, 3, dtype=torch.float64)
    sol = adaptive_sde.solve(
        Drift(), torch.zeros(2, 1, dtype=torch.float64), ts, rtol=1e-6, atol=1e-8, dt0=1e-4
    )
    torch.testing.assert_close(sol.ys[:, :, 0], ts[:, None].expand(-1, 2))
    assert int(sol.stats.nfe.max()) < 40


def test_finished_samples_cost_no_further_evaluations():
    sde = Recording(GeometricBrownianMotion(0.0, 1.0))
    y0 = torch.ones(32, 1, dtype=torch.float64)
    sol = adaptive_sde.solve(sde, y0, TS, seed=2, rtol=0.02, atol=0.002)
    rows_evaluated = sum(rows for _, rows in sde.calls)
    assert int(sol.stats.nfe.min()) < int(sol.stats.nfe.max())  # samples took different steps
    # One drift call per evaluation; rows evaluated = sum of per-sample NFE.
    assert rows_evaluated == sol.stats.total_nfe


def test_shared_grid_takes_the_same_steps_for_every_sample():
    sde = Recording(GBM_ITO.make_sde())
    sol = adaptive_sde.solve(
        sde, GBM_ITO.initial(16), TS, seed=2, rtol=0.05, atol=0.005, per_sample=False
    )
    assert torch.all(sol.stats.nfe == sol.stats.nfe[0])
    assert all(t.dim() == 0 for t, _ in sde.calls)  # torchsde's convention: 0-d time
    assert all(rows == 16 for _, rows in sde.calls)


def test_shared_grid_stays_one_grid_for_batches_beyond_a_vector_width():
    # Regression: the decision used to be computed per row, and vectorised and scalar kernels
    # could disagree in the last bit, splitting the "shared" grid (batch 200 = 192 + 8). This
    # configuration split it after a few hundred steps.
    from adaptive_sde.diffusion import VPSDE, GaussianMixture, ReverseSDE, prior_sample

    sde = VPSDE()
    reverse = ReverseSDE(sde, GaussianMixture.ring().score_fn(sde), (2,), sde_type="ito")
    ts = torch.tensor([0.0, 1 - sde.eps])
    bm = torchsde.BrownianInterval(t0=0.0, t1=float(ts[-1]), size=(200, 2), entropy=0)
    sol = adaptive_sde.solve(
        reverse,
        prior_sample(sde, (200, 2), 0),
        ts,
        bm=bm,
        seed=1,
        per_sample=False,
        rtol=0.05,
        atol=0.0078,
        dt0=1e-3,
        tolerance="conventional",
        max_steps=3000,
    )
    for values in (sol.stats.dt_smallest, sol.stats.dt_largest, sol.dt_next, sol.stats.nfe):
        assert torch.all(values == values[0])


def test_per_sample_time_is_a_column_per_row():
    sde = Recording(GBM_ITO.make_sde())
    adaptive_sde.solve(sde, GBM_ITO.initial(5), TS, seed=2, rtol=0.05)
    assert all(t.dim() == 2 and t.shape[1] == 1 and t.shape[0] == rows for t, rows in sde.calls)


class TrainableGBM(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        self.sigma = 0.3

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.sigma * y


@pytest.mark.parametrize("per_sample", [True, False])
def test_gradients_flow_through_accepted_states(per_sample):
    # X_T = x0 exp((mu - sigma^2/2) T + sigma W_T): dX_T/dmu = T X_T, dX_T/dx0 = X_T / x0.
    sde = TrainableGBM()
    y0 = torch.full((64, 1), 2.0, dtype=torch.float64, requires_grad=True)
    sol = adaptive_sde.solve(sde, y0, TS, seed=4, rtol=1e-3, atol=1e-4, per_sample=per_sample)
    xt = sol.ys[-1]
    xt.sum().backward()
    torch.testing.assert_close(sde.mu.grad, xt.detach().sum(), rtol=5e-3, atol=0)
    torch.testing.assert_close(y0.grad, xt.detach() / 2.0, rtol=5e-3, atol=0)


def test_gradient_matches_finite_differences_with_fixed_steps():
    def loss(mu):
        sde = TrainableGBM()
        with torch.no_grad():
            sde.mu.fill_(mu)
        sol = adaptive_sde.solve(
            sde, torch.ones(16, 1, dtype=torch.float64), TS, seed=9, adaptive=False, dt0=0.05
        )
        return sol.ys[-1].square().mean(), sde

    value, sde = loss(0.5)
    value.backward()
    eps = 1e-6
    fd = (loss(0.5 + eps)[0] - loss(0.5 - eps)[0]) / (2 * eps)
    assert float(sde.mu.grad) == pytest.approx(float(fd.detach()), rel=1e-6)


def test_float32_solve_stays_float32_and_accurate():
    batch = 2000
    y0 = OU.initial(batch, torch.float32)
    sol = adaptive_sde.solve(OU.make_sde(), y0, TS.float(), seed=0, rtol=0.05, atol=0.005)
    assert sol.ys.dtype == torch.float32
    x = sol.ys[-1, :, 0].double()
    assert abs(float(x.mean()) - float(OU.mean(1.0))) < 4 * float(x.std()) / math.sqrt(batch)


def test_progress_bar_reports_the_slowest_sample(capsys):
    adaptive_sde.solve(OU.make_sde(), OU.initial(4), TS, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "solve" in err and "nfe=" in err and "t=1/1" in err


class NaNAbove(nn.Module):
    """A drift that returns NaN for states above 2.5 once t > 0.5."""

    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        bad = (y > 2.5) & (t > 0.5)
        return torch.where(bad, torch.full_like(y, math.nan), -0.1 * y)

    def g(self, t, y):
        return 0.01 * torch.ones_like(y)


def test_a_nan_drift_is_a_result_code_naming_the_sample_and_time():
    y0 = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    with pytest.raises(SolveError, match=r"sample 3: NONFINITE at t=0\.5") as info:
        adaptive_sde.solve(NaNAbove(), y0, TS, seed=0)
    stats = info.value.solution.stats
    assert stats.result.tolist() == [Result.SUCCESS] * 3 + [Result.NONFINITE]
    sol = adaptive_sde.solve(NaNAbove(), y0, TS, seed=0, throw=False)
    assert torch.isfinite(sol.ys[-1, :3]).all()
    assert torch.isnan(sol.ys[-1, 3]).all()  # never a NaN returned as success
    assert float(sol.stats.t_final[3]) == pytest.approx(0.5, abs=1e-6)


def test_step_budget_is_a_result_code():
    with pytest.raises(SolveError, match=r"MAX_STEPS_REACHED.*max_steps"):
        adaptive_sde.solve(
            GBM_ITO.make_sde(), GBM_ITO.initial(2), TS, seed=0, rtol=1e-3, max_steps=5
        )
    sol = adaptive_sde.solve(
        GBM_ITO.make_sde(), GBM_ITO.initial(2), TS, seed=0, rtol=1e-3, max_steps=5, throw=False
    )
    assert torch.all(sol.stats.result == Result.MAX_STEPS_REACHED)
    assert torch.all(sol.stats.num_steps == 5)


def test_step_size_floor_is_a_result_code():
    sol = adaptive_sde.solve(
        GBM_ITO.make_sde(),
        GBM_ITO.initial(8),
        TS,
        seed=0,
        rtol=1e-4,
        atol=1e-6,
        dt_min=0.05,
        throw=False,
    )
    assert torch.any(sol.stats.result == Result.DT_MIN_REACHED)
    assert not sol.stats.success


def test_statistics_are_consistent():
    sol = adaptive_sde.solve(GBM_ITO.make_sde(), GBM_ITO.initial(50), TS, seed=0, rtol=0.05)
    s = sol.stats
    # Two evaluations per accepted step, one per rejection: a retry keeps the first stage.
    assert int(s.num_rejected.sum()) > 0
    assert torch.equal(s.nfe, 2 * s.num_accepted + s.num_rejected)
    assert torch.all(s.dt_smallest <= s.dt_largest)
    assert torch.all(s.dt_largest <= 1.0)
    summary = s.summary()
    assert summary["nfe_total"] == s.total_nfe and summary["failed"] == 0
    assert s.success and torch.all(s.t_final == 1.0)


# -- issue 12: no hangs, root causes first -----------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "y0", "kwargs"),
    [
        (torch.tensor([1.0, 2.0], dtype=torch.float64), GBM_ITO.initial(4), {"dt0": 1e-20}),
        (torch.tensor([1e6, 1e6 + 1]), GBM_ITO.initial(4).float(), {}),  # dt0 = span / 100
        (torch.tensor([1e6, 1e6 + 1]), GBM_ITO.initial(4).float(), {"per_sample": False}),
    ],
    ids=["tiny-dt0", "far-from-zero-float32", "far-from-zero-shared"],
)
def test_a_step_that_cannot_advance_time_ends_at_once(ts, y0, kwargs):
    # t + h rounded to t: the zero-length step was accepted and grew as 0 * factor for ever, so
    # the solve ran until max_steps ("raise max_steps").
    options = {"seed": 0, "max_steps": 10_000, "throw": False, **kwargs}
    sol = adaptive_sde.solve(GBM_ITO.make_sde(), y0, ts, **options)
    assert torch.all(sol.stats.result == Result.NO_PROGRESS)
    assert int(sol.stats.num_steps.max()) == 1
    assert torch.all(sol.stats.t_final == ts[0]) and torch.all(sol.dt_next > 0)
    with pytest.raises(SolveError, match=r"NO_PROGRESS .*t \+ h rounds to t.*ts in float64"):
        adaptive_sde.solve(GBM_ITO.make_sde(), y0, ts, **{**options, "throw": True})


class NaNInOneRow(nn.Module):
    """The drift is NaN for states above 1.5 (row 7 of ``ROW_7_HIGH``): from the start
    (``at_start``), or only at times past 0.5."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, at_start):
        super().__init__()
        self.at_start = at_start

    def f(self, t, y):
        bad = y > 1.5
        if not self.at_start:
            bad = bad & (t > 0.5)  # t is 0-d on a shared grid, a column per sample
        return torch.where(bad, torch.full_like(y, math.nan), -0.1 * y)

    def g(self, t, y):
        return 0.01 * torch.ones_like(y)


ROW_7_HIGH = torch.ones(10, 1, dtype=torch.float64).index_fill(0, torch.tensor([7]), 2.0)


@pytest.mark.parametrize("at_start", [True, False], ids=["at-start", "past-half"])
def test_on_a_shared_grid_the_non_finite_sample_is_listed_first(at_start):
    # It was reported as "samples 0..4 DT_MIN_REACHED (loosen rtol/atol)", and sample 7, the
    # cause, was not listed at all.
    with pytest.raises(SolveError) as info:
        adaptive_sde.solve(NaNInOneRow(at_start), ROW_7_HIGH, TS, seed=0, per_sample=False)
    first = str(info.value).splitlines()[1]
    assert first.startswith("  sample 7: NONFINITE"), str(info.value)
    assert "BATCH_STOPPED" in str(info.value) and "DT_MIN_REACHED" not in str(info.value)
    result = info.value.solution.stats.result
    assert int(result[7]) == Result.NONFINITE
    assert torch.all(result[torch.arange(10) != 7] == Result.BATCH_STOPPED)


def test_per_sample_a_non_finite_sample_stops_alone():
    sol = adaptive_sde.solve(NaNInOneRow(False), ROW_7_HIGH, TS, seed=0, throw=False)
    assert int(sol.stats.result[7]) == Result.NONFINITE
    assert int((sol.stats.result == Result.SUCCESS).sum()) == 9


def test_an_exhausted_step_budget_says_how_far_the_sample_got():
    ts = torch.tensor([2.0, 3.0], dtype=torch.float64)
    with pytest.raises(SolveError) as info:
        adaptive_sde.solve(
            GBM_ITO.make_sde(), GBM_ITO.initial(2), ts, seed=0, rtol=1e-3, max_steps=5
        )
    message = str(info.value)
    found = re.search(
        r"sample 0: MAX_STEPS_REACHED at t=2\.0\d* \(([\d.e-]+)% of the way from 2 to 3\)", message
    )
    assert found, message
    reached = 100 * (float(info.value.solution.stats.t_final[0]) - 2.0)
    assert float(found.group(1)) == pytest.approx(reached, rel=0.05)
    assert "raise max_steps" in str(info.value)


def test_first_steps_per_sample_on_a_shared_grid_start_it_with_the_smallest():
    # Found by tests/test_fuzz.py: one first step per row split the "shared" grid (the SDE was
    # handed row 0's time for every row), and a torchsde path was queried backwards.
    dt0 = torch.tensor([0.1, 0.01, 0.05], dtype=torch.float64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(3, 1), dtype=torch.float64, entropy=0)
    for path in (None, bm):
        sde = Recording(GBM_ITO.make_sde())
        sol = adaptive_sde.solve(
            sde, GBM_ITO.initial(3), TS, dt0=dt0, bm=path, per_sample=False, seed=0, rtol=0.05
        )
        first = sde.calls[0][0]
        assert float(first) == 0.0 and float(sde.calls[1][0]) == pytest.approx(0.01)
        for values in (sol.stats.dt_smallest, sol.stats.dt_largest, sol.stats.nfe, sol.dt_next):
            assert torch.all(values == values[0])
