"""The solver's own cost: wall time outside the user's drift and diffusion, per evaluation.

A tiny linear SDE, dX = -X dt + 0.1 dW (diagonal noise), whose f and g cost almost nothing, so
what is left is the solver: gtgf (``adaptive_sde.solve``, per-sample steps, rtol 1e-2, and the
torchsde route ``sdeint(method="gtgf")`` with its shared grid) against torchsde's ``euler``
with 50 fixed steps, on the same problem and machine, in the same process. f and g are timed
from inside; the table gives (wall - time in f and g) / evaluations, where an evaluation is one
(f, g) pair, best of three runs, and the ratio gtgf / euler.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchsde
from torch import nn
from tqdm.auto import tqdm

import adaptive_sde
from adaptive_sde._bench.report import format_table, pyplot

NAME = "overhead"
TITLE = "Solver overhead per evaluation against torchsde's euler"
MAX_ELEMENTS = 2**24  # 65536 x 1024 would need several 256 MB tensors per step


class TimedLinear(nn.Module):
    """dX = -X dt + 0.1 dW; counts (f, g) pairs and the seconds spent inside f and g."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self) -> None:
        super().__init__()
        self.seconds, self.pairs = 0.0, 0

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = -y
        self.seconds += time.perf_counter() - start
        self.pairs += 1
        return out

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = torch.full_like(y, 0.1)
        self.seconds += time.perf_counter() - start
        return out


def overhead(solve: Callable[[TimedLinear], Any], repeats: int = 3) -> tuple[float, int]:
    """Best over ``repeats`` of (wall - f/g time) per evaluation pair, and the pairs."""
    best, pairs = float("inf"), 0
    for _ in range(repeats):
        sde = TimedLinear()
        start = time.perf_counter()
        solve(sde)
        wall = time.perf_counter() - start
        pairs = sde.pairs
        best = min(best, (wall - sde.seconds) / max(pairs, 1))
    return best, pairs


def run(quick: bool = False) -> dict[str, Any]:
    """Every batch size and dimension (with ``quick``: batch up to 4096, d up to 64)."""
    batches = (1, 64, 4096) if quick else (1, 64, 4096, 65536)
    dims = (1, 64) if quick else (1, 64, 1024)
    ts = torch.tensor([0.0, 1.0])
    cases = [(b, d) for b in batches for d in dims if b * d <= MAX_ELEMENTS]
    rows = []
    for batch, d in tqdm(cases, desc=NAME, unit="case", leave=False):
        y0 = torch.ones(batch, d)

        def euler(s: TimedLinear, y0: torch.Tensor = y0) -> Any:
            return torchsde.sdeint(s, y0, ts, method="euler", dt=0.02)

        def native(s: TimedLinear, y0: torch.Tensor = y0) -> Any:
            return adaptive_sde.solve(s, y0, ts, rtol=1e-2, atol=1e-3, seed=0)

        def shared(s: TimedLinear, y0: torch.Tensor = y0) -> Any:
            return torchsde.sdeint(
                s, y0, ts, method="gtgf", rtol=1e-2, atol=1e-3, options={"seed": 0}
            )

        euler_s, _ = overhead(euler)
        native_s, pairs = overhead(native)
        shared_s, _ = overhead(shared)
        rows.append(
            {
                "batch": batch,
                "d": d,
                "euler_s": euler_s,
                "gtgf_s": native_s,
                "gtgf_sdeint_s": shared_s,
                "gtgf_pairs": pairs,
            }
        )
    return {"rows": rows}


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """Microseconds per evaluation outside f and g, and the ratios to euler."""
    header = (
        "batch",
        "d",
        "euler µs/eval",
        "gtgf solve µs/eval",
        "ratio",
        "gtgf sdeint µs/eval",
        "ratio",
    )
    rows = [
        (
            f"{r['batch']}",
            f"{r['d']}",
            f"{1e6 * r['euler_s']:.1f}",
            f"{1e6 * r['gtgf_s']:.1f}",
            f"{r['gtgf_s'] / r['euler_s']:.1f}",
            f"{1e6 * r['gtgf_sdeint_s']:.1f}",
            f"{r['gtgf_sdeint_s'] / r['euler_s']:.1f}",
        )
        for r in result["rows"]
    ]
    caption = "Wall time outside f and g per evaluation (one f and one g call), best of 3"
    return [(caption, format_table(header, rows, markdown, left=0))]


# Drawn at the docs' page width (8 in, shown at about 760 px), saved at 150 dpi: the smallest
# text, 9 pt, is about 12 px on the page.
FIGURE_WIDTH = 8.0
FIGURE_DPI = 150


def plot(result: dict[str, Any], path: Path) -> Path:
    """The ratio gtgf / euler against the batch size, one colour per dimension: solid for
    ``adaptive_sde.solve``, dashed for ``sdeint(method="gtgf")``; the legend to the right."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 4.2), dpi=FIGURE_DPI)
    for i, d in enumerate(sorted({r["d"] for r in result["rows"]})):
        rows = [r for r in result["rows"] if r["d"] == d]
        batch = [r["batch"] for r in rows]
        ax.plot(
            batch,
            [r["gtgf_s"] / r["euler_s"] for r in rows],
            "-o",
            color=f"C{i}",
            lw=2,
            markersize=5,
            label=f"solve, d={d}",
        )
        ax.plot(
            batch,
            [r["gtgf_sdeint_s"] / r["euler_s"] for r in rows],
            "--s",
            color=f"C{i}",
            lw=1.2,
            markersize=4,
            label=f"sdeint, d={d}",
        )
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set(xscale="log", yscale="log")
    from matplotlib.ticker import FormatStrFormatter  # after pyplot(): matplotlib is there

    ratio = FormatStrFormatter("%g")  # 2, 3, 4, not 2 x 10^0
    ax.yaxis.set_major_formatter(ratio)
    ax.yaxis.set_minor_formatter(ratio)
    ax.set_xlabel("batch", fontsize=10)
    ax.set_ylabel("overhead per evaluation / euler's", fontsize=10)
    ax.tick_params(labelsize=9)
    ax.grid(True, which="major", color="0.9", lw=0.6)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
