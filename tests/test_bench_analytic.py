"""The analytic benchmark's yardstick (interpolated evaluations at a target error, waste and
lead) and the volatility-spike problem it added (exact solution, moments, convergence)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchsde

from adaptive_sde._bench import analytic
from adaptive_sde._bench.analytic import evaluations_at, lead, ratio, waste
from adaptive_sde._bench.problems import GBM_VOLATILITY_SPIKE, OU, PROBLEMS

SPIKE = GBM_VOLATILITY_SPIKE
inf, nan = math.inf, math.nan

# --- evaluations at a target error --------------------------------------------------------------

# error = 2 / evaluations: a straight line in log-log, on which interpolation is exact
LINE = [(0.2, 10.0), (0.1, 20.0), (0.05, 40.0)]


def test_a_sweep_point_at_the_target_gives_its_evaluations():
    assert evaluations_at(LINE, 0.2) == 10.0
    assert evaluations_at(LINE, 0.1) == 20.0
    assert evaluations_at(LINE, 0.05) == 40.0


def test_a_target_between_points_is_interpolated_in_log_log():
    assert evaluations_at(LINE, 0.08) == pytest.approx(25.0, rel=1e-12)
    assert evaluations_at(LINE, 2 / 33) == pytest.approx(33.0, rel=1e-12)
    # on a curve that is not a power law, the line between the two bracketing points
    points = [(0.3, 10.0), (0.01, 1000.0)]
    expected = 10 * 100 ** (math.log(0.3 / 0.1) / math.log(0.3 / 0.01))
    assert evaluations_at(points, 0.1) == pytest.approx(expected, rel=1e-12)


def test_the_points_are_sorted_by_evaluations_first():
    assert evaluations_at(LINE[::-1], 0.08) == pytest.approx(25.0, rel=1e-12)


def test_no_extrapolation_outside_the_sweep():
    assert evaluations_at(LINE, 0.3) == inf  # the cheapest point already beats it
    assert evaluations_at(LINE, 0.01) == inf  # never reached
    assert evaluations_at([], 0.1) == inf


def test_a_non_monotone_curve_gives_its_first_crossing_from_the_cheap_end():
    points = [(0.2, 10.0), (0.05, 20.0), (0.1, 40.0), (0.02, 80.0)]
    # 0.08 is first reached between 10 and 20 evaluations, though the curve rises above it again
    assert evaluations_at(points, 0.08) == pytest.approx(
        10 * 2 ** (math.log(0.2 / 0.08) / math.log(0.2 / 0.05)), rel=1e-12
    )
    # 0.03 only between 40 and 80
    assert evaluations_at(points, 0.03) == pytest.approx(
        40 * 2 ** (math.log(0.1 / 0.03) / math.log(0.1 / 0.02)), rel=1e-12
    )


def test_runs_over_the_budget_or_failed_reach_nothing_and_refusals_are_nan():
    over = [(0.2, 10.0), (inf, 20_001.0)]
    assert evaluations_at(over, 0.1) == inf
    # a failed point between two good ones is left out: its neighbours are joined
    failed = [(0.2, 10.0), (inf, 15.0), (0.05, 40.0)]
    assert evaluations_at(failed, 0.1) == pytest.approx(20.0, rel=1e-12)
    assert math.isnan(evaluations_at([(nan, nan)], 0.1))


# --- waste and lead -----------------------------------------------------------------------------


def _runs() -> dict[str, list[tuple[float, float]]]:
    return {
        "euler fixed": [(0.2, 100.0), (0.1, 400.0)],  # 0.1 at 400
        "milstein adaptive": [(0.2, 50.0), (0.05, 200.0)],  # 0.1 at 100
        "srk fixed": [(nan, nan)],  # refused by torchsde
        "gtgf fixed": [(0.2, 20.0), (0.1, 40.0), (0.01, 400.0)],  # 0.1 at 40
        "gtgf sdeint": [(0.2, 25.0), (0.1, 50.0)],  # 0.1 at 50, 0.01 never
    }


def test_waste_is_adaptive_over_fixed_gtgf_and_lead_best_torchsde_over_gtgf():
    runs = _runs()
    assert waste(runs, "gtgf sdeint", 0.1) == pytest.approx(50 / 40)
    assert lead(runs, "gtgf sdeint", 0.1) == pytest.approx(100 / 50)  # milstein's 100 is best
    assert analytic.best_torchsde(runs, 0.1) == pytest.approx(100.0)


def test_a_ratio_needs_both_sides_reached():
    runs = _runs()
    assert math.isnan(waste(runs, "gtgf sdeint", 0.01))  # the adaptive row never reached it
    assert math.isnan(lead(runs, "gtgf sdeint", 0.01))  # nor torchsde
    assert math.isnan(waste(runs, "gtgf per-sample", 0.1))  # no such row
    del runs["gtgf fixed"]
    assert math.isnan(waste(runs, "gtgf sdeint", 0.1))  # results from before the fixed row
    assert ratio(3.0, 2.0) == 1.5
    for a, b in [(inf, 2.0), (2.0, inf), (inf, inf), (nan, 2.0), (2.0, nan)]:
        assert math.isnan(ratio(a, b))


# --- the volatility-spike problem ---------------------------------------------------------------


def _interval(paths: int, levy: str = "space-time", seed: int = 0) -> torchsde.BrownianInterval:
    return torchsde.BrownianInterval(
        t0=0.0,
        t1=1.0,
        size=(paths, 1),
        dtype=torch.float64,
        entropy=seed,
        levy_area_approximation=levy,
    )


def test_the_spike_problem_is_registered_and_left_out_of_per_sample_runs():
    assert SPIKE in PROBLEMS
    assert set(SPIKE.tags) == {"multiplicative", "ito", "path-functional", "concentrated"}
    assert "gtgf per-sample" not in analytic.methods(SPIKE)
    assert "gtgf fixed" in analytic.methods(SPIKE)


def test_the_spike_dominates_the_volatility():
    sde = SPIKE.make_sde()
    t = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    sigma = sde.sigma(t)
    assert float(sigma.max() / sigma.min()) == pytest.approx(8.0, rel=1e-6)
    # ∫ sigma² dt by quadrature against the closed form inside the variance
    integral = float(torch.trapezoid(sigma**2, t))
    variance = math.exp(2 * 0.5) * (math.exp(integral) - 1)
    assert float(SPIKE.variance(1.0)) == pytest.approx(variance, rel=1e-6)  # a float32 tensor
    assert 1 - 0.25**2 / integral > 0.8  # the spike carries most of it


def test_the_exact_solution_converges_as_its_grid_is_refined():
    # with the space-time Lévy area (the benchmark's paths): second order, far below 1e-4
    bm = _interval(256)
    y0 = SPIKE.initial(256)
    coarse, fine = (SPIKE.exact(y0, bm, 0.0, 1.0, step=h) for h in (2e-3, 1e-3))
    assert float((coarse - fine).abs().mean()) < 1e-4
    # from the increments alone (the tests' paths), first order on a grid four times finer
    bm = _interval(256, "none")
    coarse, fine = (SPIKE.exact(y0, bm, 0.0, 1.0, step=h) for h in (8e-3, 4e-3))
    assert float((coarse - fine).abs().mean()) < 1e-2


def test_the_two_ways_of_computing_the_integral_agree_on_one_path():
    bm = _interval(256, seed=3)
    y0 = SPIKE.initial(256)
    with_area = SPIKE.exact(y0, bm, 0.0, 1.0)
    increments_only = SPIKE.exact(y0, lambda a, b: bm(a, b), 0.0, 1.0, step=2e-3)
    # the increments' first-order error, about 1.3e-3 at this step; a wrong sign or scale of
    # the slope term would put the two about 1e-2 apart
    assert float((with_area - increments_only).abs().mean()) < 3e-3


class _GaussianIncrements:
    """A Brownian motion queried on consecutive intervals: independent increments and, with
    ``area``, the space-time Lévy area U = h (ΔW / 2 + H), H ~ N(0, h / 12) independent."""

    def __init__(self, paths: int, seed: int, area: bool) -> None:
        self.paths, self.area = paths, area
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, ta: float, tb: float, return_U: bool = False):
        h = tb - ta
        dw = math.sqrt(h) * torch.randn(self.paths, 1, generator=self.gen, dtype=torch.float64)
        if not return_U:
            return dw
        if not self.area:
            return dw, None
        noise = torch.randn(self.paths, 1, generator=self.gen, dtype=torch.float64)
        return dw, h * (dw / 2 + math.sqrt(h / 12) * noise)


@pytest.mark.parametrize("area", [True, False], ids=["with U", "increments"])
def test_the_exact_solution_has_the_stated_mean_and_variance(area):
    paths = 20_000
    x = SPIKE.exact(SPIKE.initial(paths), _GaussianIncrements(paths, 11, area), 0.0, 1.0)
    n = x.shape[0]
    mean, variance = float(x.mean()), float(x.var())
    centred = x - x.mean()
    se_mean = float(x.std()) / math.sqrt(n)
    se_variance = math.sqrt((float((centred**4).mean()) - variance**2) / n)
    assert abs(mean - float(SPIKE.mean(1.0))) < 4 * se_mean
    assert abs(variance - float(SPIKE.variance(1.0))) < 4 * se_variance


def test_gtgf_with_fixed_steps_converges_to_the_exact_solution_and_uniform_steps_cost():
    paths = 256
    y0 = SPIKE.initial(paths)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def error(grid: np.ndarray | None, n: int) -> float:
        bm = _interval(paths, seed=5)
        times = ts if grid is None else torch.tensor(grid, dtype=torch.float64)
        x = torchsde.sdeint(
            SPIKE.make_sde(),
            y0,
            times,
            bm=bm,
            method="gtgf",
            dt=1 / n,
            options={"fixed_steps": True, "seed": 0},
        )[-1]
        return float((x - SPIKE.exact(y0, bm, 0.0, 1.0)).abs().mean())

    coarse, fine = error(None, 64), error(None, 512)
    assert fine < 0.02 and fine < coarse / 5  # order 1: 8x the steps, about 8x smaller
    # the same 64 steps placed with density ∝ sigma(t) (the outputs at the grid; dt = 1 steps
    # from one output to the next): a clearly smaller error, so uniform steps waste work here
    t = np.linspace(0.0, 1.0, 20_001)
    density = SPIKE.make_sde().sigma(torch.tensor(t)).numpy()
    cumulative = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])
    graded = np.interp(np.linspace(0, 1, 65), cumulative / cumulative[-1], t)
    assert error(graded, 1) < coarse / 1.8


def test_the_ou_exact_solution_agrees_with_and_without_the_levy_area():
    bm = _interval(256, seed=2)
    y0 = OU.initial(256)
    with_area = OU.exact(y0, bm, 0.0, 1.0)
    increments_only = OU.exact(y0, lambda a, b: bm(a, b), 0.0, 1.0, steps=1024)
    assert float((with_area - increments_only).abs().mean()) < 3e-4  # the latter's O(h) error


# --- the quick run ------------------------------------------------------------------------------


def test_the_quick_run_has_every_row_point_and_table(monkeypatch):
    # two sweep points each, so that the structure is checked in seconds
    monkeypatch.setattr(analytic, "QUICK_STEPS", (16, 64))
    monkeypatch.setattr(analytic, "QUICK_RTOLS", (1.0, 0.01))
    result = analytic.run(quick=True, paths=16)
    assert list(result["results"]) == ["gbm_ito", "gbm_volatility_spike"]
    assert result["targets"] == list(analytic.TARGETS) and result["headline"] == [0.03, 0.01]
    for name, runs in result["results"].items():
        problem = next(p for p in PROBLEMS if p.name == name)
        assert list(runs) == analytic.methods(problem)
        for method, points in runs.items():
            assert 1 <= len(points) <= 2 and len(result["settings"][name][method]) == len(points)
            assert all(math.isnan(e) or e > 0 for e, _ in points), (name, method)
        summary = result["summary"][name]
        assert set(summary) == {v for v in analytic.ADAPTIVE_GTGF if v in runs} | {"best torchsde"}
    assert "gtgf per-sample" in result["results"]["gbm_ito"]
    # the gtgf rows ran (finite errors, evaluations counted)
    for method in ("gtgf fixed", "gtgf sdeint", "gtgf sdeint every-sample"):
        error, evaluations = result["results"]["gbm_ito"][method][0]
        assert math.isfinite(error) and evaluations > 0, method
    captions = [caption for caption, _ in analytic.tables(result)]
    assert captions[0].startswith("gtgf sdeint: waste")
    assert captions[1].startswith("Waste and lead of every adaptive gtgf row")
    assert captions[2].startswith("gbm_ito: evaluations per sample")
    headline = analytic.tables(result)[0][1].splitlines()
    assert headline[0].split() == [
        "problem",
        "waste",
        "0.03",
        "waste",
        "0.01",
        "lead",
        "0.03",
        "lead",
        "0.01",
    ]
    assert [line.split()[0] for line in headline[2:]] == ["gbm_ito", "gbm_volatility_spike"]
