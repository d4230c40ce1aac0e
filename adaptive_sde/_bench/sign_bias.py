"""Roberts' signs and adaptive steps: the bias that decoupled signs remove.

The Itô linear SDE with general noise, d = 2, m = 2, of :mod:`adaptive_sde._bench.problems`
(``COMMUTING_ITO``, exact mean 1.3499 in both components), per-sample adaptive steps. With one
set of signs for both the error estimate and the kept result (``decouple_signs=False``),
acceptance selects the signs and the mean is biased at every tolerance; with decoupled signs
(the default for this noise type) it is not. The bias is reported as z = (mean - exact) /
standard error: |z| of a few is Monte-Carlo noise, tens is a bias.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import adaptive_sde
from adaptive_sde._bench.problems import COMMUTING_ITO
from adaptive_sde._bench.report import format_table, pyplot

NAME = "sign_bias"
TITLE = "Bias of the mean from shared signs, removed by decoupled signs"
RTOLS = (0.1, 0.02, 0.005)
SIGNS = {"shared": False, "decoupled": True}
TS = torch.tensor([0.0, 1.0], dtype=torch.float64)


def run(quick: bool = False, paths: int | None = None) -> dict[str, Any]:
    """Both sign settings at every tolerance, ``paths`` paths each (default 60 000; with
    ``quick``: 20 000 paths, rtol 0.1 and 0.02)."""
    paths = paths or (20_000 if quick else 60_000)
    rtols = RTOLS[:2] if quick else RTOLS
    exact = COMMUTING_ITO.mean(1.0).double()
    y0 = COMMUTING_ITO.initial(paths)
    rows = []
    with tqdm(total=len(rtols) * len(SIGNS), desc=NAME, leave=False) as bar:
        for rtol in rtols:
            for name, decouple in SIGNS.items():
                sol = adaptive_sde.solve(
                    COMMUTING_ITO.make_sde(),
                    y0,
                    TS,
                    seed=10,
                    rtol=rtol,
                    atol=rtol / 10,
                    decouple_signs=decouple,
                )
                bar.update()
                x = sol.ys[-1]
                z = (x.mean(0) - exact) / (x.std(0) / math.sqrt(paths))
                rows.append(
                    {
                        "rtol": rtol,
                        "signs": name,
                        "z": z.tolist(),
                        "mean": x.mean(0).tolist(),
                        "nfe_mean": float(sol.stats.nfe.double().mean()),
                    }
                )
    return {"paths": paths, "exact": exact.tolist(), "rows": rows}


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """One row per tolerance and sign setting: the means, their z and the evaluations."""
    rows = [
        (
            f"{r['rtol']:g}",
            r["signs"],
            *(f"{m:.4f}" for m in r["mean"]),
            *(f"{z:.1f}" for z in r["z"]),
            f"{r['nfe_mean']:.1f}",
        )
        for r in result["rows"]
    ]
    header = ("rtol", "signs", "mean 1", "mean 2", "z 1", "z 2", "NFE")
    caption = (
        f"mean of X_1 (exact {result['exact'][0]:.4f}) and z = (mean - exact) / standard error, "
        f"{result['paths']} paths"
    )
    return [(caption, format_table(header, rows, markdown, left=2))]


def plot(result: dict[str, Any], path: Path) -> Path:
    """z of each component against rtol, shared and decoupled signs, with the band |z| <= 3."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=150)
    ax.axhspan(-3, 3, color="0.93", label="|z| ≤ 3")
    for i, name in enumerate(SIGNS):
        rows = [r for r in result["rows"] if r["signs"] == name]
        rtols = [r["rtol"] for r in rows]
        for c, marker in ((0, "o"), (1, "s")):
            ax.plot(
                rtols,
                [r["z"][c] for r in rows],
                marker=marker,
                ls="-" if c == 0 else "--",
                color=f"C{i}",
                label=f"{name} signs, component {c + 1}",
            )
    ax.set(xscale="log", xlabel="rtol", ylabel="(mean - exact) / se")
    rtols = sorted({r["rtol"] for r in result["rows"]})
    ax.set_xticks(rtols, [f"{r:g}" for r in rtols])
    ax.tick_params(axis="x", which="minor", labelbottom=False)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(True, which="major", color="0.9", lw=0.6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
