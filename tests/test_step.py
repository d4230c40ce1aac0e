"""The Gotta-Go-Fast step: strong orders, Itô vs Stratonovich limits, Roberts' signs."""

from __future__ import annotations

import math

import pytest
import torch

import adaptive_sde
from adaptive_sde import _random
from adaptive_sde._bench.problems import (
    COMMUTING_ITO,
    GBM_ITO,
    PROBLEMS,
    GeometricBrownianMotion,
    make_gbm,
)
from tests.helpers import assert_within_mc, fitted_order, fixed_step_strong_error

STEPS = [8, 16, 32, 64, 128]
TS = torch.tensor([0.0, 1.0], dtype=torch.float64)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_strong_order_with_fixed_steps(problem):
    errors = [fixed_step_strong_error(problem, n) for n in STEPS]
    order = fitted_order([1 / n for n in STEPS], errors)
    assert abs(order - problem.strong_order) <= 0.2, (problem.name, order, errors)
    assert errors[-1] < errors[0]


def test_ito_gbm_strong_errors_match_the_reference_figures():
    # Measured with fixed steps (Roberts 2012, arXiv:1210.0933): 0.093 / 0.025 / 0.0067 at
    # 8 / 32 / 128 steps (10^5 paths there).
    errors = [fixed_step_strong_error(GBM_ITO, n, batch=4000) for n in (8, 32, 128)]
    for got, ref in zip(errors, (0.093, 0.025, 0.0067), strict=True):
        assert got == pytest.approx(ref, rel=0.15)


def test_euler_maruyama_alone_has_strong_order_one_half():
    # The step's lower-order member, kept with extrapolate=False: order 1/2 on Itô GBM, which
    # shows the order test can tell the two members apart.
    errors = [fixed_step_strong_error(GBM_ITO, n, extrapolate=False) for n in STEPS]
    assert abs(fitted_order([1 / n for n in STEPS], errors) - 0.5) <= 0.2


GBM_HALF = make_gbm("gbm_sigma_half", mu=1.0, sigma=0.5, sde_type="ito")


def _terminal(sde, batch, **kwargs):
    y0 = torch.ones(batch, 1, dtype=torch.float64)
    return adaptive_sde.solve(sde, y0, TS, seed=7, **kwargs).ys[-1]


def test_ito_gbm_converges_to_the_ito_mean_and_plain_heun_does_not():
    batch = 4000
    ito = _terminal(GeometricBrownianMotion(1.0, 0.5, "ito"), batch, rtol=0.02, atol=0.002)
    assert_within_mc(ito, GBM_HALF.mean(1.0))
    # Plain Heun (no random signs) is what the step does for a Stratonovich SDE: on the same
    # coefficients it lands on e^{(mu + sigma^2/2) T} = 3.08, far from the Itô mean e = 2.72.
    heun = _terminal(
        GeometricBrownianMotion(1.0, 0.5, "stratonovich"), batch, rtol=0.02, atol=0.002
    )
    se = float(heun.std() / math.sqrt(batch))
    assert abs(float(heun.mean()) - math.e) > 8 * se
    assert_within_mc(heun, torch.tensor([math.exp(1.125)]))


_independent_signs = _random.signs


def _shared_sign(keys, counters, size, dtype):
    return _independent_signs(keys, counters, 1, dtype).expand(-1, size)


@pytest.mark.parametrize("adaptive", [False, True])
def test_general_noise_needs_one_sign_per_channel(adaptive, monkeypatch):
    batch = 6000
    kwargs = {"rtol": 0.05, "atol": 0.005} if adaptive else {"adaptive": False, "dt0": 1 / 32}
    y0 = COMMUTING_ITO.initial(batch)

    def terminal():
        return adaptive_sde.solve(COMMUTING_ITO.make_sde(), y0, TS, seed=3, **kwargs).ys[-1]

    assert_within_mc(terminal(), COMMUTING_ITO.mean(1.0))
    monkeypatch.setattr(adaptive_sde._step._random, "signs", _shared_sign)
    shared = terminal()
    se = shared.std(0) / math.sqrt(batch)
    # One sign shared by the channels converges to a wrong limit (Roberts 2012, per channel).
    assert torch.all((shared.mean(0) - COMMUTING_ITO.mean(1.0).double()).abs() > 8 * se)


@pytest.mark.slow
def test_decoupled_signs_remove_the_selection_bias_of_adaptive_general_noise():
    # Without decoupling, the accepted steps select their signs: the first component's mean is
    # biased upwards by ~0.04-0.06 at every tolerance (module docstring of adaptive_sde._step).
    batch = 100_000
    y0 = COMMUTING_ITO.initial(batch)

    def mean(decouple):
        sol = adaptive_sde.solve(
            COMMUTING_ITO.make_sde(),
            y0,
            TS,
            seed=11,
            rtol=0.02,
            atol=0.002,
            decouple_signs=decouple,
        )
        return sol.ys[-1]

    decoupled = mean(None)
    assert_within_mc(decoupled, COMMUTING_ITO.mean(1.0))
    coupled = mean(False)
    se = float(coupled[:, 0].std() / math.sqrt(batch))
    assert float(coupled[:, 0].mean()) - float(COMMUTING_ITO.mean(1.0)[0]) > 3 * se


def test_decoupled_signs_cost_one_more_evaluation_per_attempt():
    y0 = COMMUTING_ITO.initial(8)
    sol = adaptive_sde.solve(COMMUTING_ITO.make_sde(), y0, TS, seed=0, rtol=0.1, atol=0.01)
    # A retry after a rejection keeps the first stage: one evaluation fewer than an attempt.
    s = sol.stats
    assert int(s.num_rejected.sum()) > 0
    assert torch.equal(s.nfe, 3 * s.num_accepted + 2 * s.num_rejected)
    sol = adaptive_sde.solve(
        COMMUTING_ITO.make_sde(), y0, TS, seed=0, rtol=0.1, atol=0.01, decouple_signs=False
    )
    s = sol.stats
    assert torch.equal(s.nfe, 2 * s.num_accepted + s.num_rejected)


class _Variants:
    """The same Itô GBM through each way torchsde lets an SDE define its coefficients."""

    noise_type = "diagonal"
    sde_type = "ito"
    mu, sigma = 0.7, 0.4


class _FG(_Variants):
    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.sigma * y


class _FAndG(_Variants):
    def f_and_g(self, t, y):
        return self.mu * y, self.sigma * y


class _GProd(_Variants):
    def f(self, t, y):
        return self.mu * y

    def g_prod(self, t, y, v):
        return self.sigma * y * v


class _FAndGProd(_Variants):
    def f_and_g_prod(self, t, y, v):
        return self.mu * y, self.sigma * y * v


@pytest.mark.parametrize("variant", [_FAndG, _GProd, _FAndGProd])
def test_every_way_of_defining_the_sde_gives_the_same_solution(variant):
    y0 = torch.ones(64, 1, dtype=torch.float64)
    ts = torch.linspace(0, 1, 5, dtype=torch.float64)
    reference = adaptive_sde.solve(_FG(), y0, ts, seed=1, rtol=0.05, atol=0.005)
    other = adaptive_sde.solve(variant(), y0, ts, seed=1, rtol=0.05, atol=0.005)
    torch.testing.assert_close(other.ys, reference.ys)
    s = other.stats
    assert torch.equal(s.num_steps, reference.stats.num_steps)
    assert int(s.num_rejected.sum()) > 0
    if hasattr(variant, "g_prod") or hasattr(variant, "f_and_g_prod"):
        # Without g the first stage's product depends on the increment: a retry evaluates it.
        assert torch.equal(s.nfe, 2 * s.num_steps)
    else:
        assert torch.equal(s.nfe, 2 * s.num_accepted + s.num_rejected)


def test_extrapolation_keeps_the_higher_order_result():
    y0 = torch.ones(3, 1, dtype=torch.float64)
    kw = {"adaptive": False, "dt0": 0.25, "seed": 5}
    hi = adaptive_sde.solve(GeometricBrownianMotion(1.0, 1.0), y0, TS, **kw).ys[-1]
    em = adaptive_sde.solve(GeometricBrownianMotion(1.0, 1.0), y0, TS, extrapolate=False, **kw).ys[
        -1
    ]
    assert not torch.allclose(hi, em)
