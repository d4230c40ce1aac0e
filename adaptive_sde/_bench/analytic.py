"""Evaluations needed to reach a strong error: gtgf against torchsde's own methods, and the
adaptive gtgf against the pair at fixed steps (its yardstick).

For every SDE with an exact solution (:mod:`adaptive_sde._bench.problems`), every method runs on
a torchsde ``BrownianInterval`` (space-time Lévy area, entropy 0; one path per sample) over a
sweep of its step count (fixed steps: 1 to 8192 steps, doubling; 1 and 2 steps are there for
the Ornstein-Uhlenbeck problems, whose errors at 4 steps are already below 0.03) or of its
tolerance (adaptive: rtol 1 to 1e-4, three to a decade, atol = rtol/10, first step 0.01), and
the strong error, the mean over samples of |X(T) - exact X(T) of that path|, is measured with
4096 paths in float64 (rather than the issue's float32, so that errors down to 1e-3 are
compared with the exact solution without rounding in the way; the evaluation counts do not
depend on it, and on a CPU float64 costs about the same). The targets are strong errors 0.1,
0.03, 0.01 and 1e-3: the order-1 rows reach 1e-3 within the budget (gtgf at fixed steps in
about 4000 evaluations on the Itô GBM), Euler (order 1/2) mostly does not.

A run is abandoned once it spends the budget (20 000 evaluations per sample, counted as it
goes); a sweep stops after its first point past half the budget (the next point, at twice the
steps or a third of the tolerance, would cost 2-3x more: past the budget), after its first
point below the smallest target (finer points cannot change the tables), or at once when
torchsde refuses the method.

Rows:

- torchsde's ``euler``, ``milstein`` and ``srk``, at fixed steps and adaptive (``n/a`` where
  torchsde refuses the method for that SDE);
- ``gtgf fixed``: the pair at fixed steps on the same kind of path,
  ``sdeint(method="gtgf", dt=T/n, options={"fixed_steps": True, "seed": 0})``, over the same
  step sweep as torchsde's fixed methods: the cost of the pair itself, without a controller;
- ``gtgf sdeint``: ``sdeint(method="gtgf")`` as torchsde users get it (one time grid for the
  batch, the error norm the method's default: one RMS over the batch);
- ``gtgf sdeint every-sample``: the same with ``options={"batch_error": "max"}``, the shared
  grid on which every sample must pass;
- ``gtgf per-sample``: ``adaptive_sde.solve``, every sample its own steps and its own Brownian
  register; the exact solution then comes from the register's W(T), so the problems whose
  solution depends on the whole path (tag ``"path-functional"``: Ornstein-Uhlenbeck, the
  volatility spike) are left out.

A gtgf run in which a sample fails (a result code other than SUCCESS, e.g. kp_tanh at a loose
rtol, where a step leaves (-1, 1) and the solution blows up) counts as reaching no target.

Evaluations are counted as in :mod:`adaptive_sde._bench.counting`: a drift and a diffusion call
count one each per sample they evaluate (one Euler step costs 2, one gtgf attempt 4); the
vector-Jacobian products of Milstein and SRK are not counted.

**Evaluations at a target error** are interpolated, not read off the sweep: on each method's
curve of (log evaluations, log error), its points sorted by evaluations, the first pair of
consecutive points from the cheap end whose errors bracket the target (the earlier above it,
the later at or below it) is joined by a straight line, and the evaluations where that line
meets the target are the method's cost: the fewest evaluations at which its curve reaches the
target. There is no extrapolation: a target that the sweep does not bracket (never reached
within the sweep and the budget, or already beaten by the cheapest point) is ``-``.

- **waste** = evaluations of an adaptive gtgf row / evaluations of ``gtgf fixed`` at the same
  target: what the controller costs over the best uniform step (below 1 where well-placed
  steps beat uniform ones, as on the volatility spike);
- **lead** = evaluations of the best torchsde row (the fewest among euler, milstein and srk,
  fixed and adaptive, that torchsde accepts for that SDE) / evaluations of the gtgf row: above
  1 where gtgf is the cheaper.

A ratio is ``-`` when either side is ``-`` or ``n/a``.
The headline table gives both for ``gtgf sdeint`` at strong errors 0.03 and 0.01.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
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
TARGETS = (1e-1, 3e-2, 1e-2, 1e-3)
HEADLINE = (3e-2, 1e-2)  # the targets of the headline table
STEPS = tuple(2**k for k in range(14))  # 1, 2, 4, ..., 8192 steps
RTOLS = (1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
QUICK_PROBLEMS = ("gbm_ito", "gbm_volatility_spike")
QUICK_STEPS = (8, 32, 128, 512)
QUICK_RTOLS = (3e-1, 1e-1, 1e-2, 1e-3)
PATHS, QUICK_PATHS = 4096, 256
DTYPE = torch.float64
BUDGET = 20_000  # evaluations per sample before a run is abandoned
# The BrownianInterval's cache, in intervals: torchsde's default of 45 makes a long fixed-step
# solve recompute its increments (8192 Euler steps at 4096 paths: 45 s, against 11 s with 1000,
# which holds 64 MB at 4096 paths). The interval is also given dt = T/8192, the finest fixed
# step, so that it builds its tree once: left to guess dt from the queries, it rebuilds the tree
# by a recursion over it, which an adaptive solve's long runs of small steps (the volatility
# spike at rtol 3e-4) make deeper than Python's recursion limit. Both shape the tree, so they
# change the path (not its law).
CACHE_SIZE = 1000
FIXED_METHODS = ("euler", "milstein", "srk")
FIXED_GTGF = "gtgf fixed"
DEFAULT_GTGF = "gtgf sdeint"
ADAPTIVE_GTGF = ("gtgf sdeint", "gtgf sdeint every-sample", "gtgf per-sample")

Point = tuple[float, float]  # (strong error, evaluations per sample)


def solve_once(problem: Problem, method: str, paths: int, seed: int, **kwargs: Any) -> Point:
    """(strong error, evaluations per sample) of one solve; inf error when it ran over the
    budget or a sample failed, nan when the method refuses this SDE or these options."""
    y0 = problem.initial(paths, DTYPE)
    ts = torch.tensor([0.0, problem.t1], dtype=DTYPE)
    sde = CountingSDE(problem.make_sde(), paths, budget=BUDGET)
    options = kwargs.pop("options", {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if options.get("per_sample", False):
                register = adaptive_sde.BrownianRegister(
                    paths, problem.brownian_size, seed=seed, dtype=DTYPE
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
                    dtype=DTYPE,
                    entropy=seed,
                    levy_area_approximation="space-time",
                    cache_size=CACHE_SIZE,
                    dt=problem.t1 / STEPS[-1],
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


def _sweep(
    settings: Sequence[float], point: Callable[[float], Point], smallest: float, bar: tqdm
) -> list[Point]:
    """``point(s)`` for the settings in order (cheap to costly), stopping after the first point
    refused (nan), below ``smallest``, or past half the budget (the next point, at twice the
    steps or a third of the tolerance, would cost about 2-3x more: past the budget, where it
    would be abandoned anyway); the bar counts the skipped ones too."""
    points: list[Point] = []
    for setting in settings:
        error, evaluations = point(setting)
        points.append((error, evaluations))
        bar.update()
        if math.isnan(error) or evaluations > BUDGET / 2 or error < smallest:
            break
    bar.update(len(settings) - len(points))
    return points


def methods(problem: Problem) -> list[str]:
    """The rows run on ``problem``, in table order."""
    rows = [f"{m} {kind}" for m in FIXED_METHODS for kind in ("fixed", "adaptive")]
    rows += [FIXED_GTGF, "gtgf sdeint", "gtgf sdeint every-sample"]
    if "path-functional" not in problem.tags:
        rows.append("gtgf per-sample")
    return rows


def sweep(
    problem: Problem,
    paths: int,
    bar: tqdm,
    steps: Sequence[int] = STEPS,
    rtols: Sequence[float] = RTOLS,
) -> tuple[dict[str, list[Point]], dict[str, list[float]]]:
    """Every method's sweep on one problem: ({method: [(error, evaluations), ...]},
    {method: [step count or rtol of each point]})."""
    t1, smallest = problem.t1, min(TARGETS)

    def fixed(method: str, options: dict[str, Any] | None = None) -> Callable[[float], Point]:
        if options is not None:  # gtgf: fixed_steps, the step is dt
            return lambda n: solve_once(problem, method, paths, 0, dt=t1 / n, options=options)
        return lambda n: solve_once(problem, method, paths, 0, dt=t1 / n, adaptive=False)

    def adaptive(method: str, **extra: Any) -> Callable[[float], Point]:
        return lambda r: solve_once(
            problem, method, paths, 0, dt=0.01, rtol=r, atol=r / 10, **extra
        )

    def per_sample(r: float) -> Point:
        return solve_once(
            problem, "gtgf", paths, 0, rtol=r, atol=r / 10, options={"per_sample": True}
        )

    plan: dict[str, tuple[Sequence[float], Callable[[float], Point]]] = {}
    for method in FIXED_METHODS:
        plan[f"{method} fixed"] = (steps, fixed(method))
        plan[f"{method} adaptive"] = (rtols, adaptive(method, adaptive=True))
    plan[FIXED_GTGF] = (steps, fixed("gtgf", {"fixed_steps": True, "seed": 0}))
    plan["gtgf sdeint"] = (rtols, adaptive("gtgf", options={"seed": 0}))
    plan["gtgf sdeint every-sample"] = (
        rtols,
        adaptive("gtgf", options={"seed": 0, "batch_error": "max"}),
    )
    plan["gtgf per-sample"] = (rtols, per_sample)
    runs, settings = {}, {}
    for method in methods(problem):
        values, point = plan[method]
        runs[method] = _sweep(values, point, smallest, bar)
        settings[method] = list(values[: len(runs[method])])
    return runs, settings


def run(quick: bool = False, paths: int | None = None) -> dict[str, Any]:
    """The sweep over every problem with ``paths`` paths (default 4096; with ``quick``: the
    Itô GBM and the volatility spike, 256 paths and four sweep points). The full run took 13 min
    on one thread of a shared 2-core machine (about 1200 runs; the spike, 2.7 min, the longest),
    the quick one 35 s."""
    problems = [p for p in PROBLEMS if p.name in QUICK_PROBLEMS] if quick else list(PROBLEMS)
    paths = paths or (QUICK_PATHS if quick else PATHS)
    steps, rtols = (QUICK_STEPS, QUICK_RTOLS) if quick else (STEPS, RTOLS)
    count = 0
    for p in problems:
        rows = methods(p)
        count += sum(len(steps) if r.endswith("fixed") else len(rtols) for r in rows)
    results, settings, seconds = {}, {}, {}
    with tqdm(total=count, desc=NAME, unit="run", leave=False) as bar:
        for problem in problems:
            start = time.perf_counter()
            results[problem.name], settings[problem.name] = sweep(problem, paths, bar, steps, rtols)
            seconds[problem.name] = time.perf_counter() - start
    result: dict[str, Any] = {
        "paths": paths,
        "dtype": str(DTYPE).removeprefix("torch."),
        "targets": list(TARGETS),
        "headline": list(HEADLINE),
        "budget": BUDGET,
        "steps": list(steps),
        "rtols": list(rtols),
        "results": results,
        "settings": settings,
        "problem_seconds": seconds,
    }
    result["summary"] = summary(result)
    return result


def evaluations_at(points: Sequence[Sequence[float]], target: float) -> float:
    """Evaluations per sample at which the sweep's curve first reaches ``target``: on the
    (log evaluations, log error) curve, points sorted by evaluations, the straight line between
    the first consecutive pair from the cheap end with the earlier error above ``target`` and
    the later at or below it (a point exactly at the target: its evaluations). nan when the
    method could not run at all; inf when the sweep does not bracket the target (never
    reached, or already beaten by the cheapest point: no extrapolation). Points with an
    infinite error (over the budget, a failed sample) reach nothing and are left out, so the
    curve joins their neighbours."""
    if points and all(math.isnan(e) for e, _ in points):
        return math.nan
    curve = sorted((n, e) for e, n in points if math.isfinite(e) and math.isfinite(n) and n > 0)
    if not curve or curve[0][1] < target:
        return math.inf  # no point, or the crossing lies before the cheapest point
    if curve[0][1] == target:
        return curve[0][0]
    for (n0, e0), (n1, e1) in itertools.pairwise(curve):
        if e0 > target >= e1:
            if e1 <= 0 or e1 == target:
                return n1
            fraction = math.log(e0 / target) / math.log(e0 / e1)
            return n0 * (n1 / n0) ** fraction
    return math.inf


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator of two evaluation counts; nan unless both are finite (a count
    that is inf is outside its sweep, on either side, so there is no ratio to measure)."""
    if math.isfinite(numerator) and math.isfinite(denominator):
        return numerator / denominator
    return math.nan


def best_torchsde(runs: dict[str, Any], target: float) -> float:
    """The fewest evaluations at ``target`` among torchsde's rows (nan: none could run)."""
    costs = [evaluations_at(p, target) for m, p in runs.items() if not m.startswith("gtgf")]
    costs = [c for c in costs if not math.isnan(c)]
    return min(costs) if costs else math.nan


def waste(runs: dict[str, Any], variant: str, target: float) -> float:
    """Evaluations of the adaptive gtgf ``variant`` / those of gtgf at fixed steps, at
    ``target`` (nan when the run has no fixed gtgf row, as results from before it had)."""
    if variant not in runs or FIXED_GTGF not in runs:
        return math.nan
    return ratio(evaluations_at(runs[variant], target), evaluations_at(runs[FIXED_GTGF], target))


def lead(runs: dict[str, Any], variant: str, target: float) -> float:
    """Evaluations of the best torchsde row / those of the gtgf ``variant``, at ``target``."""
    if variant not in runs:
        return math.nan
    return ratio(best_torchsde(runs, target), evaluations_at(runs[variant], target))


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """{problem: {variant: {"evaluations": [per target], "waste": [...], "lead": [...]}}} for
    every adaptive gtgf row at ``result["targets"]``, and the best torchsde row's evaluations
    under "best torchsde"."""
    targets = result["targets"]
    out: dict[str, Any] = {}
    for name, runs in result["results"].items():
        out[name] = {
            variant: {
                "evaluations": [evaluations_at(runs[variant], t) for t in targets],
                "waste": [waste(runs, variant, t) for t in targets],
                "lead": [lead(runs, variant, t) for t in targets],
            }
            for variant in ADAPTIVE_GTGF
            if variant in runs
        }
        out[name]["best torchsde"] = [best_torchsde(runs, t) for t in targets]
    return out


def _cell(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "-" if math.isinf(value) else f"{value:.0f}"


def _ratio_cell(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """The headline (waste and lead of ``gtgf sdeint`` at strong errors 0.03 and 0.01, one row a
    problem), waste and lead of every adaptive gtgf row at every target, then one table per
    problem: evaluations per sample to reach each target error (interpolated)."""
    targets = result["targets"]
    results = result["results"]
    header = (
        "problem",
        *(f"waste {t:g}" for t in HEADLINE),
        *(f"lead {t:g}" for t in HEADLINE),
    )
    rows = [
        (
            name,
            *(_ratio_cell(waste(runs, DEFAULT_GTGF, t)) for t in HEADLINE),
            *(_ratio_cell(lead(runs, DEFAULT_GTGF, t)) for t in HEADLINE),
        )
        for name, runs in results.items()
    ]
    out = [
        (
            f"{DEFAULT_GTGF}: waste (its evaluations / gtgf fixed's) and lead (best torchsde's "
            f"evaluations / its) at strong errors {' and '.join(f'{t:g}' for t in HEADLINE)}",
            format_table(header, rows, markdown),
        )
    ]
    header = (
        "problem",
        "gtgf row",
        *(f"waste {t:g}" for t in targets),
        *(f"lead {t:g}" for t in targets),
    )
    rows = [
        (
            name,
            variant.removeprefix("gtgf "),
            *(_ratio_cell(waste(runs, variant, t)) for t in targets),
            *(_ratio_cell(lead(runs, variant, t)) for t in targets),
        )
        for name, runs in results.items()
        for variant in ADAPTIVE_GTGF
        if variant in runs
    ]
    out.append(
        (
            "Waste and lead of every adaptive gtgf row, per problem and target error",
            format_table(header, rows, markdown, left=2),
        )
    )
    header = ("method", *(f"error ≤ {t:g}" for t in targets))
    for name, runs in results.items():
        rows = [
            (method, *(_cell(evaluations_at(points, t)) for t in targets))
            for method, points in runs.items()
        ]
        out.append(
            (
                f"{name}: evaluations per sample to reach a strong error, interpolated "
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
ERROR_AXIS_TOP = 5.0  # errors above it are blow-ups of an unstable step (kp_tanh), not shown


def plot(result: dict[str, Any], path: Path) -> Path:
    """Strong error against evaluations per sample, one panel per problem, three a row; the
    legend fills a spare panel (below the grid when there is none). A method has one colour in
    every panel; gtgf's lines are thick (solid adaptive, dotted at fixed steps: the yardstick),
    torchsde's thin and dashed."""
    plt = pyplot()
    names = list(result["results"])
    labels = list(dict.fromkeys(m for name in names for m in result["results"][name]))
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
                    (":" if method == FIXED_GTGF else "-") if gtgf else "--",
                    marker=".",
                    markersize=5 if gtgf else 4,
                    color=f"C{labels.index(method) % 10}",
                    lw=2.2 if gtgf else 1.2,
                    label=method,
                )
        ax.set(xscale="log", yscale="log")
        shown = [
            e
            for points in result["results"][name].values()
            for e, _ in points
            if math.isfinite(e) and 0 < e <= ERROR_AXIS_TOP
        ]
        if shown:  # blow-ups (kp_tanh's unstable steps) go off the top
            ax.set_ylim(min(shown) / 1.5, min(max(shown) * 1.5, ERROR_AXIS_TOP))
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
