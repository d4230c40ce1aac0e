"""Does adaptivity bias the solution? The Brownian register against redrawing after rejections.

The Ornstein-Uhlenbeck process of docs/method.md (theta = 4, sigma = 1, x0 = 0, T = 1, exact
Var[X_1] = (1 - e^-8) / 8 = 0.1250), per-sample adaptive steps with the paper's tolerance and
atol = rtol / 10: the variance at T with the :class:`~adaptive_sde.BrownianRegister` (a rejected
step's increment is bridged and kept) and with the control
:class:`~adaptive_sde._bench.controls.RedrawingBrownian` (fresh noise after every rejection, as
the paper's code does). Then the Itô geometric Brownian motion mu = sigma = 0.5 (exact mean
e^0.5 = 1.6487, variance 0.7721) with the register. The Monte-Carlo standard errors are those of
the pooled paths; an unbiased solver is within a few of them at every tolerance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import adaptive_sde
from adaptive_sde._bench.controls import RedrawingBrownian
from adaptive_sde._bench.problems import OrnsteinUhlenbeck, make_gbm
from adaptive_sde._bench.report import format_table, pyplot

NAME = "unbiasedness"
TITLE = "Unbiasedness of adaptive steps: the Brownian register against redrawing"
OU_RTOLS = (0.5, 0.2, 0.1, 0.05, 0.02)
GBM_RTOLS = (0.1, 0.05, 0.01)
TS = torch.tensor([0.0, 1.0], dtype=torch.float64)


def pooled_terminal(
    sde: Any, y0: torch.Tensor, rtol: float, seeds: int, redraw: bool = False
) -> tuple[torch.Tensor, float, float]:
    """X(1) of ``seeds`` independent runs, concatenated, with the mean evaluations per sample
    and the share of rejected attempts."""
    finals, nfe, accepted, rejected = [], 0.0, 0, 0
    for seed in range(seeds):
        bm = RedrawingBrownian(y0.shape[0], 1, seed=seed) if redraw else None
        sol = adaptive_sde.solve(sde, y0, TS, rtol=rtol, atol=rtol / 10, seed=seed, bm=bm)
        finals.append(sol.ys[-1])
        nfe += float(sol.stats.nfe.double().mean()) / seeds
        accepted += sol.stats.total_accepted
        rejected += sol.stats.total_rejected
    return torch.cat(finals), nfe, rejected / max(accepted + rejected, 1)


def run(quick: bool = False, paths: int | None = None, seeds: int = 1) -> dict[str, Any]:
    """``seeds`` independent runs of ``paths`` paths each (default 4000; with ``quick``: 2000
    paths, two tolerances each)."""
    paths = paths or (2000 if quick else 4000)
    ou_rtols = (0.1, 0.05) if quick else OU_RTOLS
    gbm_rtols = (0.1, 0.05) if quick else GBM_RTOLS
    total = paths * seeds
    exact = (1 - math.exp(-8)) / 8
    ou = []
    with tqdm(total=2 * len(ou_rtols) + len(gbm_rtols), desc=NAME, leave=False) as bar:
        y0 = torch.zeros(paths, 1, dtype=torch.float64)
        sde = OrnsteinUhlenbeck(4.0, 1.0)
        for rtol in ou_rtols:
            kept, nfe, rejected = pooled_terminal(sde, y0, rtol, seeds)
            redrawn, _, _ = pooled_terminal(sde, y0, rtol, seeds, redraw=True)
            bar.update(2)
            ou.append(
                {
                    "rtol": rtol,
                    "register_var": float(kept.var()),
                    "redraw_var": float(redrawn.var()),
                    "nfe_mean": nfe,
                    "rejected": rejected,
                }
            )
        gbm = make_gbm("gbm", 0.5, 0.5, "ito")
        y0 = torch.ones(paths, 1, dtype=torch.float64)
        rows = []
        for rtol in gbm_rtols:
            x, nfe, _ = pooled_terminal(gbm.make_sde(), y0, rtol, seeds)
            bar.update()
            rows.append(
                {
                    "rtol": rtol,
                    "mean": float(x.mean()),
                    "mean_se": float(x.std()) / math.sqrt(total),
                    "var": float(x.var()),
                    "nfe_mean": nfe,
                }
            )
    return {
        "paths": total,
        "ou_exact_var": exact,
        # standard error of a Gaussian sample variance: sigma^2 sqrt(2 / (n - 1))
        "ou_var_se": exact * math.sqrt(2 / (total - 1)),
        "ou": ou,
        "gbm_exact_mean": float(gbm.mean(1.0)),
        "gbm_exact_var": float(gbm.variance(1.0)),
        "gbm": rows,
    }


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """The OU variance per tolerance (register, redrawing), then the GBM moments."""
    ou = format_table(
        ("rtol", "register Var", "redraw Var", "NFE", "rejected"),
        [
            (
                f"{r['rtol']:g}",
                f"{r['register_var']:.4f}",
                f"{r['redraw_var']:.4f}",
                f"{r['nfe_mean']:.1f}",
                f"{100 * r['rejected']:.1f}%",
            )
            for r in result["ou"]
        ],
        markdown,
    )
    gbm = format_table(
        ("rtol", "mean", "± se", "variance", "NFE"),
        [
            (
                f"{r['rtol']:g}",
                f"{r['mean']:.4f}",
                f"{r['mean_se']:.4f}",
                f"{r['var']:.4f}",
                f"{r['nfe_mean']:.1f}",
            )
            for r in result["gbm"]
        ],
        markdown,
    )
    return [
        (
            f"Ornstein-Uhlenbeck Var[X_1]: exact {result['ou_exact_var']:.4f}, standard error "
            f"{result['ou_var_se']:.4f} ({result['paths']} paths)",
            ou,
        ),
        (
            f"Itô GBM mu = sigma = 0.5 with the register: exact mean "
            f"{result['gbm_exact_mean']:.4f}, variance {result['gbm_exact_var']:.4f}",
            gbm,
        ),
    ]


def plot(result: dict[str, Any], path: Path) -> Path:
    """Left: the OU variance against rtol, register and redrawing, with the exact value and a
    band of two standard errors. Right: the GBM mean with two standard errors."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.5), dpi=150)
    rtols = [r["rtol"] for r in result["ou"]]
    exact, se = result["ou_exact_var"], result["ou_var_se"]
    left.axhspan(exact - 2 * se, exact + 2 * se, color="0.9", label="exact ± 2 se")
    left.axhline(exact, color="0.4", lw=1)
    left.plot(rtols, [r["register_var"] for r in result["ou"]], "o-", label="register")
    left.plot(rtols, [r["redraw_var"] for r in result["ou"]], "s--", label="redraw (control)")
    left.set(xscale="log", xlabel="rtol", ylabel="Var[X_1]", title="Ornstein-Uhlenbeck")
    left.legend(fontsize=8, frameon=False)
    rtols = [r["rtol"] for r in result["gbm"]]
    right.axhline(result["gbm_exact_mean"], color="0.4", lw=1, label="exact")
    right.errorbar(
        rtols,
        [r["mean"] for r in result["gbm"]],
        yerr=[2 * r["mean_se"] for r in result["gbm"]],
        fmt="o-",
        capsize=3,
        label="register ± 2 se",
    )
    right.set(xscale="log", xlabel="rtol", ylabel="E[X_1]", title="Itô GBM")
    right.legend(fontsize=8, frameon=False)
    for ax, rows in ((left, result["ou"]), (right, result["gbm"])):
        ax.set_xticks([r["rtol"] for r in rows], [f"{r['rtol']:g}" for r in rows])
        ax.tick_params(axis="x", which="minor", labelbottom=False)
        ax.tick_params(labelsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
