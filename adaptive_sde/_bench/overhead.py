"""The solver's own cost per evaluation against torchsde, its noise against ``torch.randn``.

Every time is measured with ``torch.utils.benchmark.Timer(...).blocked_autorange()`` (with the
process's torch threads; the Timer synchronises CUDA), at least 7 runs per measurement (3 with
``--quick``); a time is the **median** over the runs with its **IQR** (25th to 75th percentile),
float32 throughout. Three parts:

1. **Per evaluation.** A linear SDE whose f and g cost almost nothing, dX = -X dt + 0.1 dW
   (diagonal noise, Itô; f = -y, g a constant tensor made once), at batch x d of 64 x 16,
   4096 x 16, 4096 x 256 and 65536 x 16, solved on [0, 1] by torchsde's ``euler`` (64 steps)
   and ``srk`` (8 steps, 10 evaluations each; its ``BrownianInterval`` has the space-time Lévy
   area srk needs) through ``torchsde.sdeint``, and by gtgf through
   ``adaptive_sde.solve`` (per-sample steps, its default ``BrownianRegister``) and through
   ``sdeint(method="gtgf")`` (one grid for the batch, a ``BrownianInterval``), each adaptive
   (rtol 3e-3, atol 3e-4: near 64 evaluations) and with 32 fixed steps (``adaptive=False``,
   ``options={"fixed_steps": True}``; two evaluations a step), which isolates the work of a step
   from the number of steps. So every method makes 60 to 90 evaluations per solve (from 2**20
   elements, 4096 x 256 and 65536 x 16, the solves span [0, 1/4]: a quarter of them). The
   Brownian motion is made inside the timed call, as users get it (``solve`` makes its register,
   ``sdeint`` without ``bm`` its interval; the JSON has the interval's construction alone).
   An evaluation is one (f, g) pair on the whole batch, counted exactly by a counting run of the
   same solve (rows evaluated / batch, so a per-sample solve's shrinking batch counts by its
   rows; torchsde's contract check adds one pair, ``solve``'s first evaluation serves the first
   step). The overhead per evaluation is (time of one solve) / evaluations minus the time of one
   f and one g call on the whole batch, timed on their own. Its range is the solve's IQR bounds
   through the same formula (less the f + g time's opposite bound); the ratio gtgf / euler (and
   / srk) is the ratio of median overheads, its range [low of gtgf / high of euler, high of
   gtgf / low of euler]: conservative, as it combines the two IQRs' extremes.
2. **The counter-based generator**: ``adaptive_sde._random.normals`` (keys from
   ``stream_keys``, one counter per row) against ``torch.randn`` of the same shape, at the
   sizes of part 1 and 4096 x 1024; the ratio of medians with the same range.
3. **The Brownian register** at 1024 x 64 (the size of the issue's target), 64 x 16 and
   4096 x 16: per attempted step, what the integration loop asks of it
   (``reserve`` with the depth its read would give, ``horizon``, ``increment``, ``commit``),
   replayed along a recorded sequence of 64 attempts from a fresh register: all accepted (steps
   of 1/64), and with a third rejected (the step halves on a rejection, grows by 1.5 on an
   acceptance, so retries are Brownian bridges), against one ``torch.randn`` of the increment's
   shape and against torchsde's ``BrownianInterval`` queried along the same times (row 0's, as
   one grid serves a batch there). A sweep includes making its source, whose time, measured
   alone, is taken off: the figures are per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchsde
from torch import nn
from torch.utils import benchmark
from tqdm.auto import tqdm

import adaptive_sde
from adaptive_sde import _random
from adaptive_sde._bench.report import format_table, pyplot

NAME = "overhead"
TITLE = "Solver overhead per evaluation, its noise and its Brownian register"

SIZES = ((64, 16), (4096, 16), (4096, 256), (65536, 16))
GENERATOR_SIZES = (*SIZES, (4096, 1024))
REGISTER_SIZES = ((1024, 64), (64, 16), (4096, 16))
QUICK_SIZES = ((64, 16), (512, 16))
QUICK_GENERATOR_SIZES = ((64, 16), (1024, 64))
QUICK_REGISTER_SIZES = ((1024, 64),)

STEPS, QUICK_STEPS = 64, 16  # euler's steps; srk takes STEPS // 8, gtgf fixed STEPS // 2
LARGE, LARGE_SPAN = 2**20, 0.25  # from a million elements, solve on [0, 1/4]: 1/4 of the steps
RTOL, ATOL = 3e-3, 3e-4  # gtgf adaptive: near STEPS evaluations per sample on this SDE
NOISE = 0.1
REJECTED = 1 / 3  # the share of rejected attempts in the register's second sequence
MIN_RUN_TIME, QUICK_MIN_RUN_TIME = 1.0, 0.05  # seconds per measurement, at least
MIN_RUNS, QUICK_MIN_RUNS = 7, 3

METHODS = (
    "euler",
    "srk",
    "gtgf solve",
    "gtgf solve fixed",
    "gtgf sdeint",
    "gtgf sdeint fixed",
)
BASELINES = ("euler", "srk")
GTGF = METHODS[2:]


# -- timing ---------------------------------------------------------------------------------


def measure(
    fn: Callable[[], Any], min_run_time: float, min_runs: int, estimate: float = 0.0
) -> dict[str, float]:
    """Seconds per call of ``fn``: median, 25th and 75th percentiles, IQR, over at least
    ``min_runs`` runs of ``torch.utils.benchmark``'s ``blocked_autorange`` (``estimate``, the
    seconds of one call if known, stretches the run time to fit them)."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    times: list[float] = []
    number = 1
    run_time = max(min_run_time, 1.2 * min_runs * estimate)
    while len(times) < min_runs:
        m = timer.blocked_autorange(min_run_time=run_time)
        times += list(m.times)
        number = m.number_per_run
    q = torch.tensor(times, dtype=torch.float64).quantile(
        torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    )
    q25, median, q75 = (float(v) for v in q)
    return {
        "median": median,
        "q25": q25,
        "q75": q75,
        "iqr": q75 - q25,
        "runs": len(times),
        "number_per_run": number,
    }


def _range(median: float, low: float, high: float) -> dict[str, float]:
    return {"median": median, "low": low, "high": high}


def ratio(num: dict[str, float], den: dict[str, float]) -> dict[str, float]:
    """num / den for two ranges (or timings): the median's ratio, and [num low / den high,
    num high / den low] (inf where the denominator's low bound is not positive)."""
    lo_n, hi_n = num.get("low", num.get("q25")), num.get("high", num.get("q75"))
    lo_d, hi_d = den.get("low", den.get("q25")), den.get("high", den.get("q75"))
    assert lo_n is not None and hi_n is not None and lo_d is not None and hi_d is not None

    def div(a: float, b: float) -> float:
        return a / b if b > 0 else math.inf

    return _range(div(num["median"], den["median"]), div(lo_n, hi_d), div(hi_n, lo_d))


# -- part 1: per evaluation -----------------------------------------------------------------


class Linear(nn.Module):
    """dX = -X dt + 0.1 dW, diagonal noise: f = -y, g a constant tensor made once (a view of
    its first rows when the solver evaluates fewer rows)."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, batch: int, d: int, device: torch.device) -> None:
        super().__init__()
        self.g_value = torch.full((batch, d), NOISE, device=device)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[0]
        return self.g_value if n == self.g_value.shape[0] else self.g_value[:n]


class Counting(Linear):
    """:class:`Linear` counting the rows every f and every g call evaluates."""

    def __init__(self, batch: int, d: int, device: torch.device) -> None:
        super().__init__(batch, d, device)
        self.f_rows = self.g_rows = 0

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.f_rows += y.shape[0]
        return super().f(t, y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.g_rows += y.shape[0]
        return super().g(t, y)


Solver = Callable[[Linear], Any]


def solvers(
    batch: int, d: int, steps: int, device: torch.device, span: float = 1.0
) -> dict[str, Solver]:
    """Every method of part 1 as a function of the SDE: one solve on [0, span] (``steps`` of
    euler's per unit time), its Brownian motion made inside (as users get it)."""
    y0 = torch.ones(batch, d, device=device)
    ts = torch.tensor([0.0, span], device=device)
    fixed = 1 / (steps // 2)

    def interval(levy: str = "none") -> Any:
        return torchsde.BrownianInterval(
            t0=0.0,
            t1=span,
            size=(batch, d),
            dtype=y0.dtype,
            device=device,
            entropy=0,
            levy_area_approximation=levy,
        )

    def euler(sde: Linear) -> Any:
        return torchsde.sdeint(sde, y0, ts, bm=interval(), method="euler", dt=1 / steps)

    def srk(sde: Linear) -> Any:
        bm = interval("space-time")
        return torchsde.sdeint(sde, y0, ts, bm=bm, method="srk", dt=1 / (steps // 8))

    def solve(sde: Linear) -> Any:
        return adaptive_sde.solve(sde, y0, ts, rtol=RTOL, atol=ATOL, dt0=fixed, seed=0)

    def solve_fixed(sde: Linear) -> Any:
        return adaptive_sde.solve(sde, y0, ts, dt0=fixed, adaptive=False, seed=0)

    def sdeint(sde: Linear) -> Any:
        return torchsde.sdeint(
            sde,
            y0,
            ts,
            bm=interval(),
            method="gtgf",
            dt=fixed,
            rtol=RTOL,
            atol=ATOL,
            options={"seed": 0},
        )

    def sdeint_fixed(sde: Linear) -> Any:
        options = {"seed": 0, "fixed_steps": True}
        return torchsde.sdeint(sde, y0, ts, bm=interval(), method="gtgf", dt=fixed, options=options)

    found = (euler, srk, solve, solve_fixed, sdeint, sdeint_fixed)
    return dict(zip(METHODS, found, strict=True))


def evaluations(
    batch: int, d: int, steps: int, device: torch.device, min_run_time: float, min_runs: int
) -> dict[str, Any]:
    """Part 1 at one size: every method's evaluations, time per solve and overhead per
    evaluation, and the ratios to euler and srk. From ``LARGE`` elements the solves span
    ``LARGE_SPAN``, not 1 (fewer steps of the same size)."""
    span = LARGE_SPAN if batch * d >= LARGE else 1.0
    y = torch.ones(batch, d, device=device)
    t = torch.zeros((), device=device)
    plain = Linear(batch, d, device)

    def f_and_g() -> None:
        plain.f(t, y)
        plain.g(t, y)

    def interval() -> Any:  # what euler's and gtgf sdeint's calls make first
        return torchsde.BrownianInterval(t0=0.0, t1=span, size=(batch, d), device=device, entropy=0)

    fg = measure(f_and_g, min_run_time, min_runs)
    made = measure(interval, min_run_time, min_runs)
    methods: dict[str, dict[str, Any]] = {}
    for name, solver in solvers(batch, d, steps, device, span).items():
        counting = Counting(batch, d, device)
        start = _clock(device)
        out = solver(counting)  # the counting run, also a warm-up
        estimate = _clock(device) - start
        pairs = counting.f_rows / batch
        nfe = getattr(getattr(out, "stats", None), "nfe", None)
        call = measure(partial(solver, plain), min_run_time, min_runs, estimate)
        per_eval = _range(call["median"] / pairs, call["q25"] / pairs, call["q75"] / pairs)
        overhead = _range(
            per_eval["median"] - fg["median"],
            per_eval["low"] - fg["q75"],
            per_eval["high"] - fg["q25"],
        )
        methods[name] = {
            "pairs": pairs,
            "f_calls": counting.f_rows / batch,
            "g_calls": counting.g_rows / batch,
            "nfe": None if nfe is None else float(nfe.double().mean()),
            "call": call,
            "per_eval": per_eval,
            "overhead": overhead,
        }
    ratios = {
        name: {base: ratio(m["overhead"], methods[base]["overhead"]) for base in BASELINES}
        for name, m in methods.items()
    }
    return {
        "batch": batch,
        "d": d,
        "span": span,
        "fg": fg,
        "interval_construct": made,
        "methods": methods,
        "ratios": ratios,
    }


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# -- part 2: the generator ------------------------------------------------------------------


def generator(
    n: int, size: int, device: torch.device, min_run_time: float, min_runs: int
) -> dict[str, Any]:
    """``_random.normals`` against ``torch.randn`` at (n, size)."""
    keys = _random.stream_keys(0, torch.arange(n, device=device), 0x4E4F524D)  # "NORM"
    counters = torch.zeros(n, dtype=torch.int64, device=device)

    def normals() -> torch.Tensor:
        return _random.normals(keys, counters, size, torch.float32)

    def randn() -> torch.Tensor:
        return torch.randn(n, size, device=device)

    timed = {"randn": measure(randn, min_run_time, min_runs)}
    timed["normals"] = measure(normals, min_run_time, min_runs)
    return {"n": n, "size": size, **timed, "ratio": ratio(timed["normals"], timed["randn"])}


# -- part 3: the Brownian register ----------------------------------------------------------

Attempt = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]  # t, t_next, accepted, depth


def attempts(
    batch: int, m: int, count: int, rejected: float, device: torch.device, seed: int = 0
) -> tuple[list[Attempt], float]:
    """A sequence of ``count`` attempts as the loop makes them, recorded from a register: the
    times, the decisions (each row rejects with probability ``rejected``) and the deepest
    pending stack the loop's read would report; and the share of attempts rejected."""
    register = adaptive_sde.BrownianRegister(batch, m, seed=0, device=device)
    gen = torch.Generator().manual_seed(seed)
    t = torch.zeros(batch, device=device)
    h = torch.full((batch,), 1 / count, device=device)
    sequence: list[Attempt] = []
    rejections = 0
    for _ in range(count):
        depth = int(register.depth_probe())
        register.reserve(1, depth)
        t_next = torch.minimum(t + h, register.horizon(None, t))
        register.increment(None, t, t_next)
        accept = (torch.rand(batch, generator=gen) >= rejected).to(device)
        register.commit(None, accept)
        sequence.append((t, t_next, accept, depth))
        rejections += int((~accept).sum())
        t = torch.where(accept, t_next, t)
        h = torch.where(accept, 1.5 * h, 0.5 * h)
    return sequence, rejections / (batch * count)


def register_cost(
    batch: int,
    m: int,
    case: str,
    count: int,
    device: torch.device,
    min_run_time: float,
    min_runs: int,
) -> dict[str, Any]:
    """Part 3 at one size and ``case`` ("accepted" or "rejections"): seconds per attempt of the
    register and of a ``BrownianInterval`` along the same times, and of one ``torch.randn``."""
    sequence, share = attempts(batch, m, count, REJECTED if case == "rejections" else 0.0, device)
    grid = [(float(t[0]), float(t_next[0])) for t, t_next, _, _ in sequence]
    t1 = max(b for _, b in grid)

    def make_register() -> adaptive_sde.BrownianRegister:
        return adaptive_sde.BrownianRegister(batch, m, seed=0, device=device)

    def register_sweep() -> None:
        register = make_register()
        for t, t_next, accept, depth in sequence:
            register.reserve(1, depth)
            register.horizon(None, t)
            register.increment(None, t, t_next)
            register.commit(None, accept)

    def make_interval() -> Any:
        return torchsde.BrownianInterval(
            t0=0.0, t1=t1, size=(batch, m), device=device, entropy=0, levy_area_approximation="none"
        )

    def interval_sweep() -> None:
        bm = make_interval()
        for a, b in grid:
            bm(a, b)

    def randn() -> torch.Tensor:
        return torch.randn(batch, m, device=device)

    timed = {"randn": measure(randn, min_run_time, min_runs)}
    out: dict[str, Any] = {"batch": batch, "m": m, "case": case, "attempts": count}
    out["rejected_share"] = share
    for name, make, sweep in (
        ("register", make_register, register_sweep),
        ("interval", make_interval, interval_sweep),
    ):
        made = measure(make, min_run_time, min_runs)
        swept = measure(sweep, min_run_time, min_runs)
        timed[f"{name}_construct"] = made
        timed[f"{name}_sweep"] = swept
        timed[name] = {
            key: (swept[key] - made["median"]) / count for key in ("median", "q25", "q75")
        }
    out.update(timed)
    out["register_vs_randn"] = ratio(timed["register"], timed["randn"])
    out["interval_vs_randn"] = ratio(timed["interval"], timed["randn"])
    out["register_vs_interval"] = ratio(timed["register"], timed["interval"])
    return out


# -- the benchmark --------------------------------------------------------------------------


def run(quick: bool = False, device: str | torch.device | None = None) -> dict[str, Any]:
    """The three parts on ``device`` (default the CPU). ``quick``: small sizes, 16 steps and
    short measurements (seconds in all)."""
    dev = torch.device(device or "cpu")
    steps = QUICK_STEPS if quick else STEPS
    min_run_time = QUICK_MIN_RUN_TIME if quick else MIN_RUN_TIME
    min_runs = QUICK_MIN_RUNS if quick else MIN_RUNS
    sizes = QUICK_SIZES if quick else SIZES
    generator_sizes = QUICK_GENERATOR_SIZES if quick else GENERATOR_SIZES
    register_sizes = QUICK_REGISTER_SIZES if quick else REGISTER_SIZES
    cases = ("accepted", "rejections")
    total = len(sizes) + len(generator_sizes) + len(register_sizes) * len(cases)
    result: dict[str, Any] = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": "float32",
        "timer": "torch.utils.benchmark.Timer.blocked_autorange",
        "min_run_time": min_run_time,
        "min_runs": min_runs,
        "steps": {"euler": steps, "srk": steps // 8, "gtgf fixed": steps // 2},
        "rtol": RTOL,
        "atol": ATOL,
        "large": LARGE,
        "large_span": LARGE_SPAN,
    }
    with tqdm(total=total, desc=NAME, unit="case", leave=False) as bar:
        rows = []
        for batch, d in sizes:
            rows.append(evaluations(batch, d, steps, dev, min_run_time, min_runs))
            bar.update()
        result["evaluations"] = rows
        rows = []
        for n, size in generator_sizes:
            rows.append(generator(n, size, dev, min_run_time, min_runs))
            bar.update()
        result["generator"] = rows
        rows = []
        for batch, m in register_sizes:
            for case in cases:
                rows.append(register_cost(batch, m, case, steps, dev, min_run_time, min_runs))
                bar.update()
        result["register"] = rows
    return result


# -- tables and plot ------------------------------------------------------------------------


def _us(seconds: float) -> str:
    us = 1e6 * seconds
    if not math.isfinite(us):
        return str(us)
    return f"{us:.3g}" if abs(us) < 1000 else f"{us:.0f}"


def _spread(r: dict[str, float]) -> str:
    low, high = r.get("low", r.get("q25", math.nan)), r.get("high", r.get("q75", math.nan))
    return f"{_us(low)}–{_us(high)}"


def _times(r: dict[str, float]) -> str:
    return f"{r['median']:.2f} [{r['low']:.2f}–{r['high']:.2f}]"


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """One table per part: medians with their IQR (or, for ratios, the range of module
    docstring), in microseconds."""
    steps = result["steps"]
    header: tuple[str, ...] = (
        "batch × d",
        "method",
        "evals",
        "ms / solve",
        "µs / eval",
        "overhead µs / eval",
        "IQR",
        "/ euler",
        "/ srk",
    )
    rows: list[tuple[str, ...]] = []
    for row in result["evaluations"]:
        size = f"{row['batch']} × {row['d']}"
        fg = row["fg"]
        rows.append((size, "f + g alone", "1", "", _us(fg["median"]), "", _spread(fg), "", ""))
        for name, m in row["methods"].items():
            r = row["ratios"][name]
            rows.append(
                (
                    size,
                    name,
                    f"{m['pairs']:.1f}",
                    f"{1e3 * m['call']['median']:.3g}",
                    _us(m["per_eval"]["median"]),
                    _us(m["overhead"]["median"]),
                    _spread(m["overhead"]),
                    _times(r["euler"]),
                    _times(r["srk"]),
                )
            )
    caption = (
        f"Wall time per evaluation (one f and one g call on the batch), {result['device']}, "
        f"on [0, 1]: euler {steps['euler']} steps, srk {steps['srk']}, gtgf fixed "
        f"{steps['gtgf fixed']}, gtgf adaptive rtol {result['rtol']:g} (from "
        f"{result.get('large', LARGE)} elements on [0, {result.get('large_span', LARGE_SPAN):g}]"
        "); overhead = µs / eval - f + g alone; ratios of median overheads [range from the IQRs]"
    )
    out = [(caption, format_table(header, rows, markdown, left=2))]

    header = ("n × size", "torch.randn µs", "IQR", "normals µs", "IQR", "normals / randn")
    rows = [
        (
            f"{r['n']} × {r['size']}",
            _us(r["randn"]["median"]),
            _spread(r["randn"]),
            _us(r["normals"]["median"]),
            _spread(r["normals"]),
            _times(r["ratio"]),
        )
        for r in result["generator"]
    ]
    caption = "The counter-based generator (_random.normals) against torch.randn, float32"
    out.append((caption, format_table(header, rows, markdown, left=1)))

    header = (
        "batch × m",
        "attempts",
        "randn µs",
        "register µs / step",
        "IQR",
        "/ randn",
        "BrownianInterval µs / step",
        "IQR",
        "/ randn",
        "register / interval",
    )
    rows = [
        (
            f"{r['batch']} × {r['m']}",
            f"{r['case']} ({100 * r['rejected_share']:.0f}% rejected)",
            _us(r["randn"]["median"]),
            _us(r["register"]["median"]),
            _spread(r["register"]),
            _times(r["register_vs_randn"]),
            _us(r["interval"]["median"]),
            _spread(r["interval"]),
            _times(r["interval_vs_randn"]),
            _times(r["register_vs_interval"]),
        )
        for r in result["register"]
    ]
    caption = (
        "The Brownian register per attempted step (reserve, horizon, increment, commit) and "
        "torchsde's BrownianInterval along the same times, against one torch.randn of the "
        "increment's shape"
    )
    out.append((caption, format_table(header, rows, markdown, left=2)))
    return out


# Drawn at the docs' page width (8 in, shown at about 760 px), saved at 150 dpi: the smallest
# text, 9 pt, is about 12 px on the page.
FIGURE_WIDTH = 8.0
FIGURE_DPI = 150


def _errorbars(ax: Any, x: Sequence[float], ranges: Sequence[dict[str, float]], **kw: Any) -> None:
    y = [r["median"] for r in ranges]
    low = [max(r["median"] - r["low"], 0.0) for r in ranges]
    high = [max(r["high"] - r["median"], 0.0) if math.isfinite(r["high"]) else 0.0 for r in ranges]
    ax.errorbar(x, y, yerr=[low, high], capsize=3, markersize=5, lw=1.2, **kw)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Three panels of ratios with their ranges as error bars: overhead per evaluation over
    euler's, the generator over torch.randn, the register (and BrownianInterval) per step
    over torch.randn; the issue's targets dotted."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(FIGURE_WIDTH, 3.8), dpi=FIGURE_DPI)
    ax = axes[0]
    rows = result["evaluations"]
    labels = [f"{r['batch']}×{r['d']}" for r in rows]
    names = [n for n in METHODS if n != "euler"]
    for i, name in enumerate(names):
        x = [k + (i - (len(names) - 1) / 2) * 0.12 for k in range(len(rows))]
        marker = "s" if name == "srk" else "o"
        _errorbars(
            ax, x, [r["ratios"][name]["euler"] for r in rows], fmt=marker, color=f"C{i}", label=name
        )
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.axhline(1.5, color="0.3", lw=0.8, ls=":", label="target (issue 14)")
    _axis(ax, labels, "overhead / euler's", "per evaluation")

    ax = axes[1]
    rows = result["generator"]
    _errorbars(ax, range(len(rows)), [r["ratio"] for r in rows], fmt="o", color="C6")
    ax.axhline(3.0, color="0.3", lw=0.8, ls=":")
    _axis(ax, [f"{r['n']}×{r['size']}" for r in rows], "normals / randn", "generator")

    ax = axes[2]
    rows = result["register"]
    series = (
        ("register_vs_randn", "accepted", "register", "C7", "o"),
        ("register_vs_randn", "rejections", "register, ⅓ rejected", "C8", "^"),
        ("interval_vs_randn", "accepted", "BrownianInterval", "C9", "s"),
    )
    sizes = list(dict.fromkeys(f"{r['batch']}×{r['m']}" for r in rows))
    for i, (key, case, label, color, marker) in enumerate(series):
        picked = [r for r in rows if r["case"] == case]
        x = [sizes.index(f"{r['batch']}×{r['m']}") + (i - 1) * 0.15 for r in picked]
        _errorbars(ax, x, [r[key] for r in picked], fmt=marker, color=color, label=label)
    ax.axhline(2.0, color="0.3", lw=0.8, ls=":")
    _axis(ax, sizes, "per step / randn", "Brownian increments")

    handles: dict[str, Any] = {}
    for a in axes:
        for handle, label in zip(*a.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=9)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _axis(ax: Any, labels: Sequence[str], ylabel: str, title: str) -> None:
    from matplotlib.ticker import FuncFormatter  # after pyplot(): matplotlib is there

    def label(value: float, _: Any) -> str:  # 1, 2, 5, 10, not 2 x 10^0 and no crowding
        leading = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
        return f"{value:g}" if leading in (1, 2, 5) else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(label))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35, ha="right")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=9)
    ax.grid(True, which="major", axis="y", color="0.9", lw=0.6)
