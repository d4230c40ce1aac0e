"""Strong errors and fitted strong orders of the Gotta-Go-Fast pair with fixed steps.

Every SDE with an exact solution (:mod:`adaptive_sde._bench.problems`), fixed steps of 1/8 to
1/128 of the interval on one torchsde ``BrownianInterval`` per problem (the same path for every
step size), strong error = mean |X_N - X(T)| over the paths. The fitted order is the slope of
log(error) against log(step size); the expected order is 1 for diagonal, scalar and additive
noise and for Stratonovich general noise, 1/2 for Itô general noise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from adaptive_sde._bench.convergence import fitted_order, fixed_step_strong_error
from adaptive_sde._bench.problems import PROBLEMS
from adaptive_sde._bench.report import format_table, pyplot

NAME = "strong_order"
TITLE = "Strong order of the Gotta-Go-Fast pair with fixed steps"
STEPS = (8, 16, 32, 64, 128)


def run(quick: bool = False, paths: int | None = None) -> dict[str, Any]:
    """Every problem at every step count, ``paths`` paths each (default 10 000; with ``quick``:
    1000 paths and 8 to 64 steps)."""
    paths = paths or (1000 if quick else 10_000)
    steps = STEPS[:-1] if quick else STEPS
    rows = []
    with tqdm(total=len(PROBLEMS) * len(steps), desc=NAME, unit="run", leave=False) as bar:
        for problem in PROBLEMS:
            errors = []
            for n in steps:
                errors.append(fixed_step_strong_error(problem, n, batch=paths))
                bar.update()
            rows.append(
                {
                    "problem": problem.name,
                    "errors": errors,
                    "order": fitted_order([problem.t1 / n for n in steps], errors),
                    "expected": problem.strong_order,
                }
            )
    return {"paths": paths, "steps": list(steps), "rows": rows}


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """One table: the strong error per step count, the fitted and the expected order."""
    header = ("problem", *(f"N={n}" for n in result["steps"]), "order", "expected")
    rows = [
        (
            r["problem"],
            *(f"{e:.3g}" for e in r["errors"]),
            f"{r['order']:.2f}",
            f"{r['expected']:g}",
        )
        for r in result["rows"]
    ]
    caption = (
        f"strong error mean |X_N - X(T)| with N fixed steps ({result['paths']} paths) and the "
        "fitted strong order"
    )
    return [(caption, format_table(header, rows, markdown))]


def plot(result: dict[str, Any], path: Path) -> Path:
    """Strong error against the number of steps, one line per problem, log-log, with slopes 1/2
    and 1 for reference."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=150)
    steps = result["steps"]
    for i, r in enumerate(result["rows"]):
        style = "-" if r["expected"] == 1 else "--"
        ax.plot(steps, r["errors"], style, marker=".", color=f"C{i % 10}", label=r["problem"])
    top = max(e for r in result["rows"] for e in r["errors"] if math.isfinite(e))
    for order, style in ((0.5, ":"), (1.0, "-.")):
        ax.plot(
            steps,
            [top * (steps[0] / n) ** order for n in steps],
            style,
            color="0.5",
            lw=1,
            label=f"slope {order:g}",
        )
    ax.set(xscale="log", yscale="log", xlabel="fixed steps N", ylabel="strong error")
    ax.set_xticks(steps, [str(n) for n in steps])
    ax.tick_params(axis="x", which="minor", labelbottom=False)
    ax.grid(True, which="major", color="0.9", lw=0.6)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
