"""Evaluations needed to reach a strong error: gtgf against torchsde's own methods.

For every SDE with an exact solution (:mod:`adaptive_sde._bench.problems`), every method runs on
the same torchsde ``BrownianInterval`` (one path per sample, shared by all methods) over a sweep
of its step size (fixed steps) or tolerance (adaptive), and the strong error, the mean over
samples of the absolute difference from the exact solution of that path at T, is measured. The
table gives, per target error 1e-1 / 1e-2 / 1e-3, the fewest evaluations per sample among the
sweep points that reach it ("-": none did within the sweep or the evaluation budget; "n/a":
torchsde refuses the method for that SDE). A gtgf run in which a sample fails (a result code
other than SUCCESS, e.g. kp_tanh at rtol 0.3, where a loose step leaves (-1, 1) and the
solution blows up) counts as reaching no target.

Evaluations are counted as in :mod:`adaptive_sde._bench.counting`: a drift and a diffusion call
count one each per sample they evaluate (one Euler step costs 2, one gtgf attempt 4); the
vector-Jacobian products of Milstein and SRK are not counted.

gtgf runs twice: as torchsde users get it (``sdeint(method="gtgf")``, one shared time grid for
the batch) and with per-sample steps (``adaptive_sde.solve``, every sample its own steps and its
own Brownian register; the exact solution then comes from the register's W(T), so the
Ornstein-Uhlenbeck problems, whose solution depends on the whole path, are left out).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torchsde
from tqdm.auto import tqdm

import adaptive_sde
from adaptive_sde._bench.counting import BudgetExceeded, CountingSDE
from adaptive_sde._bench.problems import PROBLEMS, Problem
from adaptive_sde._bench.report import format_table, pyplot

NAME = "analytic"
TITLE = "Strong error against evaluations, on SDEs with exact solutions"
TARGETS = (1e-1, 1e-2, 1e-3)
STEPS = (4, 16, 64, 256, 1024)
RTOLS = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
BUDGET = 20_000  # evaluations per sample before a run is abandoned
FIXED_METHODS = ("euler", "milstein", "srk")

Point = tuple[float, float]  # (strong error, evaluations per sample)


def solve_once(problem: Problem, method: str, paths: int, seed: int, **kwargs: Any) -> Point:
    """(strong error, evaluations per sample) of one solve; inf error when it ran over the
    budget or a sample failed, nan when torchsde refuses the method for this SDE."""
    dtype = torch.float64
    y0 = problem.initial(paths, dtype)
    ts = torch.tensor([0.0, problem.t1], dtype=dtype)
    sde = CountingSDE(problem.make_sde(), paths, budget=BUDGET)
    options = kwargs.pop("options", {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if options.get("per_sample", False):
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
                bm = torchsde.BrownianInterval(
                    t0=0.0,
                    t1=problem.t1,
                    size=(paths, problem.brownian_size),
                    dtype=dtype,
                    entropy=seed,
                    levy_area_approximation="space-time",
                )
                x = torchsde.sdeint(
                    sde, y0, ts, bm=bm, method=method, **kwargs, options=options or None
                )[-1]
                exact = problem.exact(y0, bm, 0.0, problem.t1)
        except (BudgetExceeded, adaptive_sde.SolveError):
            return math.inf, sde.evaluations
        except ValueError:
            return math.nan, math.nan
    return float((x - exact).abs().mean().detach()), sde.evaluations


def sweep(problem: Problem, paths: int, quick: bool, bar: tqdm) -> dict[str, list[Point]]:
    """Every method's sweep on one problem: {method: [(error, evaluations), ...]}."""
    steps = STEPS[:3] if quick else STEPS
    rtols = RTOLS[:3] if quick else RTOLS
    runs: dict[str, list[Point]] = {}

    def point(*args: Any, **kwargs: Any) -> Point:
        result = solve_once(problem, *args, **kwargs)
        bar.update()
        return result

    for method in FIXED_METHODS:
        runs[f"{method} fixed"] = [
            point(method, paths, 0, dt=problem.t1 / n, adaptive=False) for n in steps
        ]
        runs[f"{method} adaptive"] = [
            point(method, paths, 0, dt=0.01, adaptive=True, rtol=r, atol=r / 10) for r in rtols
        ]
    runs["gtgf sdeint"] = [
        point("gtgf", paths, 0, dt=0.01, rtol=r, atol=r / 10, options={"seed": 0}) for r in rtols
    ]
    if "path-functional" not in problem.tags:
        runs["gtgf per-sample"] = [
            point("gtgf", paths, 0, rtol=r, atol=r / 10, options={"per_sample": True})
            for r in rtols
        ]
    return runs


def run(quick: bool = False, paths: int | None = None) -> dict[str, Any]:
    """The sweep over every problem with ``paths`` paths (default 200; with ``quick``: two
    problems, 100 paths and three sweep points)."""
    problems = [p for p in PROBLEMS if p.name in ("gbm_ito", "kp_sinh")] if quick else PROBLEMS
    paths = paths or (100 if quick else 200)
    steps, rtols = (3, 3) if quick else (len(STEPS), len(RTOLS))
    count = sum(
        len(FIXED_METHODS) * (steps + rtols) + rtols * (1 + ("path-functional" not in p.tags))
        for p in problems
    )
    results = {}
    with tqdm(total=count, desc=NAME, unit="run", leave=False) as bar:
        for problem in problems:
            results[problem.name] = sweep(problem, paths, quick, bar)
    return {"paths": paths, "targets": list(TARGETS), "budget": BUDGET, "results": results}


def cheapest(points: list[Point], target: float) -> float:
    """The fewest evaluations among the points that reach ``target``; nan when the method
    could not run at all, inf when no point reached it."""
    if points and all(math.isnan(e) for e, _ in points):
        return math.nan
    reached = [n for e, n in points if e <= target]
    return min(reached) if reached else math.inf


def _cell(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "-" if math.isinf(value) else f"{value:.0f}"


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """One table per problem: evaluations per sample to reach each target error."""
    out = []
    header = ("method", *(f"error ≤ {t:g}" for t in result["targets"]))
    for name, runs in result["results"].items():
        rows = [
            (method, *(_cell(cheapest(points, t)) for t in result["targets"]))
            for method, points in runs.items()
        ]
        out.append(
            (
                f"{name}: evaluations per sample to reach a strong error "
                f"({result['paths']} paths, budget {result['budget']})",
                format_table(header, rows, markdown),
            )
        )
    return out


# The figure is drawn at the docs' page width (8 in, shown at about 760 px) and saved at 150 dpi,
# so that its smallest text, 9 pt, is about 12 px on the page and sharp on a high-density screen.
FIGURE_WIDTH = 8.0
FIGURE_DPI = 150
PANEL_COLUMNS = 3


def plot(result: dict[str, Any], path: Path) -> Path:
    """Strong error against evaluations per sample, one panel per problem, three a row; the
    legend fills a spare panel (below the grid when there is none). A method has one colour in
    every panel; gtgf's lines are solid and thick, torchsde's dashed."""
    plt = pyplot()
    names = list(result["results"])
    methods = list(dict.fromkeys(m for name in names for m in result["results"][name]))
    cols = min(len(names), PANEL_COLUMNS)
    rows = math.ceil(len(names) / cols)
    spare = rows * cols - len(names)
    panel = FIGURE_WIDTH / cols
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(FIGURE_WIDTH, 0.9 * panel * rows + (0 if spare else 0.9)),
        dpi=FIGURE_DPI,
        squeeze=False,
    )
    for ax, name in zip(axes.flat, names, strict=False):
        for method, points in result["results"][name].items():
            finite = [(n, e) for e, n in points if math.isfinite(e) and math.isfinite(n)]
            if finite:
                n, e = zip(*sorted(finite), strict=True)
                gtgf = method.startswith("gtgf")
                ax.plot(
                    n,
                    e,
                    "-" if gtgf else "--",
                    marker=".",
                    markersize=5 if gtgf else 4,
                    color=f"C{methods.index(method)}",
                    lw=2.2 if gtgf else 1.2,
                    label=method,
                )
        ax.set(xscale="log", yscale="log")
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=9)
        ax.grid(True, which="major", color="0.9", lw=0.6)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[: len(names)]):
        if i + cols >= len(names):  # the lowest panel of its column
            ax.set_xlabel("evaluations per sample", fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("strong error", fontsize=9)
    labelled: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(label, handle)
    if spare:
        legend_ax = axes.flat[len(names)]
        legend_ax.legend(
            labelled.values(), labelled.keys(), loc="center", fontsize=9, frameon=False
        )
        fig.tight_layout()
    else:
        fig.legend(
            labelled.values(),
            labelled.keys(),
            loc="lower center",
            ncol=4,
            fontsize=9,
            frameon=False,
        )
        fig.tight_layout(rect=(0, 0.9 / (0.9 * panel * rows + 0.9), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
