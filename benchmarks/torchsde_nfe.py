"""Evaluations needed to reach a strong error: gtgf against torchsde's own methods.

For every problem of tests/problems.py, every method is run on the same torchsde
BrownianInterval (one path per sample, shared by all methods), over a sweep of its step size
(fixed steps) or tolerance (adaptive), and the strong error mean |X(T) - X_exact(T)| is measured
against the exact solution of that path. The table gives, per target error 1e-1 / 1e-2 / 1e-3,
the fewest evaluations per sample among the sweep points that reach it ("-": none did within the
sweep or the evaluation budget; "n/a": torchsde refuses the method for that SDE). A gtgf run in
which a sample fails (a result code other than SUCCESS, e.g. kp_tanh at rtol 0.3, where a loose
step leaves (-1, 1) and the solution blows up) counts as reaching no target.

Evaluations are counted by wrapping the SDE: every call of f, g, f_and_g, g_prod or f_and_g_prod
counts the rows it evaluates, divided by the batch size, with a drift and a diffusion call each
counting one (so one Euler step costs 2, one gtgf attempt 4). Milstein's derivative term calls g
under autograd; its vector-Jacobian product is not counted.

gtgf runs twice: as torchsde users get it (one shared time grid for the batch) and with
``options={"per_sample": True}`` (every sample its own steps, its own Brownian register; its
paths are then the register's, and the exact solution is computed from the register's W(T)).

Run: ``python benchmarks/torchsde_nfe.py [--paths 500] [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import warnings

import _common  # noqa: F401  (sys.path)
import torch
import torchsde
from _common import save
from torch import nn

import adaptive_sde
from tests.problems import PROBLEMS, Problem

TARGETS = (1e-1, 1e-2, 1e-3)
STEPS = (4, 16, 64, 256, 1024)
RTOLS = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
BUDGET = 20_000  # evaluations per sample before a run is abandoned


class BudgetExceeded(RuntimeError):
    pass


class Counting(nn.Module):
    """Counts the rows every drift and diffusion call evaluates."""

    def __init__(self, sde: nn.Module, batch: int) -> None:
        super().__init__()
        self.sde, self.batch = sde, batch
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self.evaluations = 0.0

    def _count(self, y: torch.Tensor, calls: int = 1) -> None:
        self.evaluations += calls * y.shape[0] / self.batch
        if self.evaluations > BUDGET:
            raise BudgetExceeded

    def f(self, t, y):
        self._count(y)
        return self.sde.f(t, y)

    def g(self, t, y):
        self._count(y)
        return self.sde.g(t, y)


def _run(problem: Problem, method: str, paths: int, seed: int, **kwargs) -> tuple[float, float]:
    """(strong error, evaluations per sample) of one solve; inf error when it cannot run."""
    dtype = torch.float64
    bm = torchsde.BrownianInterval(
        t0=0.0,
        t1=problem.t1,
        size=(paths, problem.brownian_size),
        dtype=dtype,
        entropy=seed,
        levy_area_approximation="space-time",
    )
    y0 = problem.initial(paths, dtype)
    ts = torch.tensor([0.0, problem.t1], dtype=dtype)
    sde = Counting(problem.make_sde(), paths)
    options = kwargs.pop("options", {})
    per_sample = options.get("per_sample", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if per_sample:
                register = adaptive_sde.BrownianRegister(
                    paths, problem.brownian_size, seed=seed, dtype=dtype
                )
                sol = adaptive_sde.solve(
                    sde,
                    y0,
                    ts,
                    bm=register,
                    dt0=0.01,
                    tolerance="conventional",
                    rtol=kwargs["rtol"],
                    atol=kwargs["atol"],
                )
                x = sol.ys[-1]
                exact = problem.exact(y0, lambda a, b: register.w, 0.0, problem.t1)
            else:
                x = torchsde.sdeint(
                    sde, y0, ts, bm=bm, method=method, **kwargs, options=options or None
                )[-1]
                exact = problem.exact(y0, bm, 0.0, problem.t1)
        except (BudgetExceeded, adaptive_sde.SolveError):
            return math.inf, sde.evaluations  # over budget, or samples failed (see the docstring)
        except ValueError:
            return math.nan, math.nan  # torchsde refuses this method for this SDE
    return float((x - exact).abs().mean().detach()), sde.evaluations


def sweep(problem: Problem, paths: int, quick: bool) -> dict[str, list[tuple[float, float]]]:
    steps = STEPS[:4] if quick else STEPS
    rtols = RTOLS[:4] if quick else RTOLS
    runs: dict[str, list[tuple[float, float]]] = {}
    for method in ("euler", "milstein", "srk"):
        runs[f"{method} fixed"] = [
            _run(problem, method, paths, 0, dt=problem.t1 / n, adaptive=False) for n in steps
        ]
        runs[f"{method} adaptive"] = [
            _run(problem, method, paths, 0, dt=0.01, adaptive=True, rtol=r, atol=r / 10)
            for r in rtols
        ]
    runs["gtgf shared"] = [
        _run(problem, "gtgf", paths, 0, dt=0.01, rtol=r, atol=r / 10) for r in rtols
    ]
    # The register's exact solution is known only through W(T): path functionals are left out.
    if "path-functional" not in problem.tags:
        runs["gtgf per-sample"] = [
            _run(problem, "gtgf", paths, 0, rtol=r, atol=r / 10, options={"per_sample": True})
            for r in rtols
        ]
    return runs


def cheapest(points: list[tuple[float, float]], target: float) -> float:
    if points and all(math.isnan(e) for e, _ in points):
        return math.nan
    reached = [n for e, n in points if e <= target]
    return min(reached) if reached else math.inf


def _cell(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "-" if math.isinf(value) else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paths", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="fewer problems and sweep points")
    args = parser.parse_args()
    problems = PROBLEMS[:3] if args.quick else PROBLEMS
    results = {}
    for problem in problems:
        runs = sweep(problem, args.paths, args.quick)
        results[problem.name] = runs
        print(f"\n{problem.name}: evaluations per sample to reach a strong error of")
        print(f"{'method':<20}" + "".join(f"{t:>9g}" for t in TARGETS))
        for name, points in runs.items():
            print(f"{name:<20}" + "".join(f"{_cell(cheapest(points, t)):>9}" for t in TARGETS))
    path = save(
        "torchsde_nfe",
        {"paths": args.paths, "targets": TARGETS, "budget": BUDGET, "results": results},
    )
    print(f"\n{args.paths} paths; budget {BUDGET} evaluations per sample; written to {path}")


if __name__ == "__main__":
    main()
