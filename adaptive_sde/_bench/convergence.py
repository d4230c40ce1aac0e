"""Strong errors with fixed steps and the convergence orders fitted to them, shared by the
``strong_order`` benchmark and the tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchsde

import adaptive_sde
from adaptive_sde._bench.problems import Problem


def fitted_order(steps: list[float], errors: list[float]) -> float:
    """Slope of log(error) against log(step size): the empirical convergence order."""
    slope, _ = np.polyfit(np.log(steps), np.log(errors), 1)
    return float(slope)


def brownian_interval(
    batch: int,
    m: int,
    t0: float = 0.0,
    t1: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torchsde.BrownianInterval:
    """A torchsde Brownian motion shared by several solves (one time grid for the batch)."""
    return torchsde.BrownianInterval(
        t0=t0, t1=t1, size=(batch, m), dtype=dtype, entropy=seed, levy_area_approximation="none"
    )


def fixed_step_strong_error(
    problem: Problem, steps: int, batch: int = 2000, seed: int = 0, **solve_kwargs: Any
) -> float:
    """Mean |X_N - X(t1)| of ``steps`` fixed steps on a shared Brownian path."""
    bm = brownian_interval(batch, problem.brownian_size, t1=problem.t1, seed=seed)
    y0 = problem.initial(batch)
    ts = torch.tensor([0.0, problem.t1], dtype=torch.float64)
    sol = adaptive_sde.solve(
        problem.make_sde(),
        y0,
        ts,
        bm=bm,
        per_sample=False,
        adaptive=False,
        dt0=problem.t1 / steps,
        seed=seed,
        **solve_kwargs,
    )
    exact = problem.exact(y0, bm, 0.0, problem.t1)
    return float((sol.ys[-1] - exact).abs().mean())
