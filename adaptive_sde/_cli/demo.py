"""``adaptive-sde demo``: what the adaptive solver buys, in under a minute on a CPU.

1. The Itô geometric Brownian motion dX = X dt + X dW on [0, 1], whose solution is known path by
   path, solved on ONE torchsde ``BrownianInterval`` by ``torchsde.sdeint(method="gtgf")`` at two
   tolerances and by torchsde's own ``euler``, ``milstein`` and ``srk`` at fixed steps: the strong
   error mean |X(1) - X_exact(1)| against the exact solution of that same path, the drift and
   diffusion evaluations per sample, and the wall time. ``adaptive_sde.solve`` with per-sample
   steps follows, on its own Brownian register (same law, other paths).
2. A ring of eight 2-D Gaussians sampled through the reverse VP SDE with its exact score: the
   adaptive ``sample`` against Euler-Maruyama at the same budget and at 1000 steps, each
   compared with exact samples (mode weights, component variances, likelihood).
3. A PNG with the samples and the step sizes the adaptive sampler attempted over time.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchsde
from tqdm.auto import tqdm

import adaptive_sde
from adaptive_sde._bench.counting import CountingSDE
from adaptive_sde._bench.gmm import measures
from adaptive_sde._bench.problems import GBM_ITO
from adaptive_sde._bench.report import format_table, pyplot
from adaptive_sde.diffusion import (
    VPSDE,
    GaussianMixture,
    sample,
    sample_euler_maruyama,
)

FIXED_STEPS = {"euler": (16, 64, 256), "milstein": (16, 64, 256), "srk": (4, 16, 64)}
GTGF_RTOLS = (0.1, 0.01)
SAMPLE_RTOLS = (0.05, 0.02)  # 0.02 is sample's default
EM_REFERENCE_STEPS = 1000  # the paper's Euler-Maruyama reference

Solved = tuple[torch.Tensor, torch.Tensor]  # (X(T), the exact X(T) of the same path)


# --- 1. strong error on an SDE with an exact solution -------------------------------------------


def strong_error_rows(paths: int, seed: int, bar: tqdm) -> list[dict[str, Any]]:
    """One row per method and setting: strong error, evaluations per sample, seconds."""
    problem, dtype = GBM_ITO, torch.float64
    y0 = problem.initial(paths, dtype)
    ts = torch.tensor([0.0, problem.t1], dtype=dtype)
    bm = torchsde.BrownianInterval(
        t0=0.0,
        t1=problem.t1,
        size=(paths, problem.brownian_size),
        dtype=dtype,
        entropy=seed,
        levy_area_approximation="space-time",  # srk needs it; the path is the same for all
    )
    exact = problem.exact(y0, bm, 0.0, problem.t1)
    rows = []

    def timed(
        method: str,
        settings: str,
        solve: Callable[[CountingSDE], Solved],
    ) -> None:
        sde = CountingSDE(problem.make_sde(), paths)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchsde's advice on dt_min and the like
            x, truth = solve(sde)
        rows.append(
            {
                "method": method,
                "settings": settings,
                "strong_error": float((x - truth).abs().mean()),
                "evaluations": sde.evaluations,
                "seconds": time.perf_counter() - start,
            }
        )
        bar.update()

    def on_interval(method: str, **kwargs: Any) -> Callable[[CountingSDE], Solved]:
        """A torchsde solve on the shared BrownianInterval, compared with its exact solution."""

        def solve(sde: CountingSDE) -> Solved:
            ys = torchsde.sdeint(sde, y0, ts, bm=bm, method=method, **kwargs)
            return ys[-1].detach(), exact

        return solve

    for method, steps in FIXED_STEPS.items():
        for n in steps:
            timed(method, f"dt = 1/{n}", on_interval(method, dt=1 / n, adaptive=False))
    for rtol in GTGF_RTOLS:
        settings = f"rtol {rtol:g}, atol {rtol / 10:g}"
        timed(
            "gtgf (sdeint)",
            settings,
            on_interval("gtgf", dt=0.01, rtol=rtol, atol=rtol / 10, options={"seed": seed}),
        )
    for rtol in GTGF_RTOLS:

        def per_sample(s: CountingSDE, r: float = rtol) -> Solved:
            register = adaptive_sde.BrownianRegister(paths, 1, seed=seed, dtype=dtype)
            sol = adaptive_sde.solve(
                s, y0, ts, bm=register, rtol=r, atol=r / 10, tolerance="conventional"
            )
            return sol.ys[-1], problem.exact(y0, lambda a, b: register.w, 0.0, problem.t1)

        timed("gtgf (solve, per-sample)", f"rtol {rtol:g}, atol {rtol / 10:g}", per_sample)
    return rows


# --- 2. score-based sampling of a Gaussian mixture ----------------------------------------------


class StepRecorder:
    """Wraps a score function and records the forward time of every call. ``sample`` takes
    Stratonovich Gotta-Go-Fast steps: each attempt evaluates the running rows at t (stage 1),
    then the same rows at t - h (stage 2, forward time runs backwards), so consecutive calls pair
    up into the attempted step sizes h; a final call at ``eps`` is the denoising step."""

    def __init__(self, score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.score_fn = score_fn
        self.times: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.times.append(t.detach().double().cpu().reshape(-1))
        return self.score_fn(x, t)

    def steps(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(forward time at the start of each attempt, attempted step size), or None when the
        calls do not pair up as described (a solver that evaluates differently)."""
        calls = self.times[:-1] if len(self.times) % 2 else self.times
        starts, sizes = [], []
        for first, second in zip(calls[0::2], calls[1::2], strict=True):
            if first.shape != second.shape or not bool((second < first).all()):
                return None
            starts.append(first)
            sizes.append(first - second)
        if not starts:
            return None
        return torch.cat(starts), torch.cat(sizes)


@dataclass
class Sampled:
    """One sampler's output on the mixture and how it compares with exact samples."""

    name: str
    settings: str
    x: torch.Tensor
    evaluations: float
    seconds: float
    mode_tv: float
    variance_error: float
    nll_gap: float


def quality(mixture: GaussianMixture, x: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Total variation of the mode weights (each sample assigned to its most likely component),
    mean |variance / true - 1| over components, and the mean negative log-likelihood under the
    true mixture minus that of exact samples: the benchmark's measures, less the Fréchet
    distance."""
    found = measures(mixture, x, exact)
    return {name: found[name] for name in ("mode_tv", "variance_error", "nll_gap")}


def mixture_rows(
    n: int, seed: int, bar: tqdm
) -> tuple[list[Sampled], torch.Tensor, StepRecorder, GaussianMixture]:
    """The samplers on the 2-D ring; also the exact samples and the step recorder of the
    adaptive sampler at its default tolerance."""
    mixture, sde = GaussianMixture.ring(), VPSDE()
    exact, _ = mixture.sample(n, seed=seed + 100)
    other, _ = mixture.sample(n, seed=seed + 101)
    out = [Sampled("exact", "another draw", other, 0.0, 0.0, **quality(mixture, other, exact))]
    recorder = StepRecorder(mixture.score_fn(sde))
    budgets = []
    for rtol in SAMPLE_RTOLS:
        start = time.perf_counter()
        score = recorder if rtol == SAMPLE_RTOLS[-1] else mixture.score_fn(sde)
        x, stats = sample(score, sde, (n, 2), rtol=rtol, seed=seed)
        evals = float(stats.score_evals.double().mean())
        budgets.append(round(evals))
        out.append(
            Sampled(
                "gtgf (sample)",
                f"rtol {rtol:g}",
                x,
                evals,
                time.perf_counter() - start,
                **quality(mixture, x, exact),
            )
        )
        bar.update()
    for steps in (*budgets, EM_REFERENCE_STEPS):
        start = time.perf_counter()
        x, stats = sample_euler_maruyama(mixture.score_fn(sde), sde, (n, 2), steps=steps, seed=seed)
        out.append(
            Sampled(
                "euler-maruyama",
                f"{steps} steps",
                x,
                float(stats.score_evals.double().mean()),
                time.perf_counter() - start,
                **quality(mixture, x, exact),
            )
        )
        bar.update()
    return out, exact, recorder, mixture


# --- 3. the figure ------------------------------------------------------------------------------


def plot(path: Path, sampled: list[Sampled], exact: torch.Tensor, recorder: StepRecorder) -> Path:
    """Samples (exact, the adaptive sampler at its default tolerance, Euler-Maruyama at the
    same budget and at 1000 steps) and the attempted step sizes against forward time."""
    plt = pyplot()
    adaptive = next(s for s in sampled if s.settings == f"rtol {SAMPLE_RTOLS[-1]:g}")
    same_budget = next(s for s in sampled if s.settings == f"{round(adaptive.evaluations)} steps")
    reference = next(s for s in sampled if s.settings == f"{EM_REFERENCE_STEPS} steps")
    panels = [("exact", exact)]
    panels += [(f"{s.name}\n{s.settings}", s.x) for s in (adaptive, same_budget, reference)]
    fig = plt.figure(figsize=(12, 6.5), dpi=72)
    grid = fig.add_gridspec(2, 4, height_ratios=(1, 0.8))
    for i, (title, x) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, rasterized=True)
        ax.set(title=title, xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal")
        ax.tick_params(labelsize=7)
        ax.title.set_fontsize(9)
    ax = fig.add_subplot(grid[1, :])
    steps = recorder.steps()
    if steps is not None:
        t, h = steps
        pick = torch.randperm(t.numel(), generator=torch.Generator().manual_seed(0))[:8000]
        ax.scatter(t[pick], h[pick], s=1, alpha=0.2, rasterized=True, label="attempted steps")
        ax.axhline(
            1 / same_budget.evaluations,
            color="C1",
            label=f"Euler-Maruyama, {same_budget.settings}",
        )
        ax.set(yscale="log", xlabel="forward time t (sampling runs from 1 to 0)")
        ax.set(ylabel="step size h", xlim=(1.0, 0.0))
        ax.legend(loc="lower left", fontsize=8, markerscale=5)
    else:
        ax.text(0.5, 0.5, "step sizes not available", ha="center", transform=ax.transAxes)
    ax.set_title(f"step sizes of gtgf (sample), {adaptive.settings}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- the command --------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="compare gtgf with torchsde's methods and Euler-Maruyama sampling; write a PNG",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="folder for the PNG (default: .)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer paths and samples (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    paths, n = (500, 500) if args.quick else (4000, 4000)
    runs = sum(map(len, FIXED_STEPS.values())) + 2 * len(GTGF_RTOLS) + 2 * len(SAMPLE_RTOLS) + 1
    with tqdm(total=runs, desc="demo", unit="run", leave=False) as bar:
        strong = strong_error_rows(paths, args.seed, bar)
        sampled, exact, recorder, _ = mixture_rows(n, args.seed, bar)
    print(
        f"1. Itô GBM dX = X dt + X dW on [0, 1], {paths} paths: strong error mean |X(1) - exact|\n"
        "   on one torchsde BrownianInterval for every sdeint run (solve: its own Brownian\n"
        "   register, same law); evaluations = drift + diffusion calls per sample.\n"
    )
    print(
        format_table(
            ("method", "settings", "strong error", "evaluations", "time s"),
            [
                (
                    r["method"],
                    r["settings"],
                    f"{r['strong_error']:.2e}",
                    f"{r['evaluations']:.0f}",
                    f"{r['seconds']:.2f}",
                )
                for r in strong
            ],
            left=2,
        )
    )
    print(
        f"\n2. Ring of 8 Gaussians (2-D), {n} samples through the reverse VP SDE with the exact\n"
        "   score; quality against exact samples (first row: another exact draw, the Monte-Carlo\n"
        "   floor). NLL gap: mean -log p of the samples minus that of exact samples.\n"
    )
    print(
        format_table(
            ("sampler", "settings", "evals/sample", "mode TV", "variance err", "NLL gap", "time s"),
            [
                (
                    s.name,
                    s.settings,
                    f"{s.evaluations:.1f}",
                    f"{s.mode_tv:.4f}",
                    f"{s.variance_error:.4f}",
                    f"{s.nll_gap:+.4f}",
                    f"{s.seconds:.2f}",
                )
                for s in sampled
            ],
            left=2,
        )
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = plot(args.out / "adaptive_sde_demo.png", sampled, exact, recorder)
    print(f"\nSamples and step sizes: {path}")
