"""Do large accepted steps with additive noise bias the distribution? A double-well check.

dX = (X - X^3) dt + sqrt(2 / beta) dW, beta = 6, X(0) = -1, T = 5, with no output time in
between, so the solver may take steps of several time units where the additive-noise error
estimate h/2 (f(y~) - f(y)) is small by chance. P(X_T > 0), the mean and the variance of X_T are
compared with Euler-Maruyama at h = 1e-3 on the same number of paths (independent noise):
agreement within Monte-Carlo error as rtol tightens means the large steps cost accuracy only at
loose tolerances and do not bias the result.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import adaptive_sde
from adaptive_sde._bench.report import format_table, pyplot

NAME = "double_well_steps"
TITLE = "Large steps with additive noise in a double well"
BETA, T = 6.0, 5.0
EM_STEP = 1e-3
RTOLS = (1e-1, 1e-2, 1e-3)
BINS = torch.linspace(-2.0, 2.0, 41, dtype=torch.float64)


class DoubleWell(torch.nn.Module):
    """Overdamped Langevin dynamics in the potential x^4 / 4 - x^2 / 2 at inverse temperature
    ``BETA``: additive noise."""

    noise_type = "additive"
    sde_type = "ito"

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y - y**3

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full((y.shape[0], 1, 1), math.sqrt(2 / BETA), dtype=y.dtype)


def summary(x: torch.Tensor) -> dict[str, Any]:
    """P(X_T > 0) with its standard error, the mean, the variance and a histogram of X_T."""
    p = float((x > 0).double().mean())
    inside = x[(x >= BINS[0]) & (x <= BINS[-1])]
    counts = torch.histc(inside, bins=len(BINS) - 1, min=float(BINS[0]), max=float(BINS[-1]))
    return {
        "p_right": p,
        "p_right_se": math.sqrt(p * (1 - p) / x.shape[0]),
        "mean": float(x.mean()),
        "variance": float(x.var()),
        "density": (counts / (x.numel() * float(BINS[1] - BINS[0]))).tolist(),
    }


def euler_maruyama(paths: int, seed: int = 1) -> torch.Tensor:
    """X_T of Euler-Maruyama with step ``EM_STEP``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.full((paths, 1), -1.0, dtype=torch.float64)
    for _ in range(round(T / EM_STEP)):
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        x = x + EM_STEP * (x - x**3) + math.sqrt(2 / BETA * EM_STEP) * noise
    return x


def run(quick: bool = False, paths: int | None = None) -> dict[str, Any]:
    """Euler-Maruyama and gtgf at every tolerance, ``paths`` paths each (default 20 000; with
    ``quick``: 2000 paths, rtol 0.1 and 0.01)."""
    paths = paths or (2000 if quick else 20_000)
    rtols = RTOLS[:2] if quick else RTOLS
    y0 = torch.full((paths, 1), -1.0, dtype=torch.float64)
    ts = torch.tensor([0.0, T], dtype=torch.float64)
    with tqdm(total=1 + len(rtols), desc=NAME, leave=False) as bar:
        rows = [
            {
                "solver": f"euler-maruyama h={EM_STEP:g}",
                **summary(euler_maruyama(paths)),
                "nfe_mean": 2 * T / EM_STEP,
                "dt_largest": EM_STEP,
            }
        ]
        bar.update()
        for rtol in rtols:
            sol = adaptive_sde.solve(DoubleWell(), y0, ts, rtol=rtol, atol=rtol / 10, seed=0)
            bar.update()
            stats = sol.stats.summary()
            rows.append(
                {
                    "solver": f"gtgf rtol={rtol:g}",
                    **summary(sol.ys[-1]),
                    "nfe_mean": stats["nfe_mean"],
                    "dt_largest": stats["dt_largest"],
                }
            )
    return {"paths": paths, "beta": BETA, "T": T, "bins": BINS.tolist(), "rows": rows}


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """One row per solver: P(X_T > 0) ± se, the moments, evaluations and the largest step."""
    rows = [
        (
            r["solver"],
            f"{r['p_right']:.4f} ± {r['p_right_se']:.4f}",
            f"{r['mean']:.4f}",
            f"{r['variance']:.4f}",
            f"{r['nfe_mean']:.0f}",
            f"{r['dt_largest']:.3g}",
        )
        for r in result["rows"]
    ]
    header = ("solver", "P(X_T > 0)", "mean", "variance", "NFE", "largest step")
    caption = (
        f"X_T of the double well (beta {result['beta']:g}, T {result['T']:g}, X_0 = -1), "
        f"{result['paths']} paths"
    )
    return [(caption, format_table(header, rows, markdown))]


def plot(result: dict[str, Any], path: Path) -> Path:
    """The density of X_T per solver (histograms as lines), Euler-Maruyama in black."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=150)
    bins = result["bins"]
    centres = [(a + b) / 2 for a, b in itertools.pairwise(bins)]
    for i, r in enumerate(result["rows"]):
        reference = r["solver"].startswith("euler")
        ax.plot(
            centres,
            r["density"],
            color="k" if reference else f"C{i - 1}",
            lw=2.0 if reference else 1.2,
            ls="-" if reference else "--",
            label=f"{r['solver']} (NFE {r['nfe_mean']:.0f})",
        )
    ax.set(xlabel="X_T", ylabel="density")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
