"""Quickstart: geometric Brownian motion with ``torchsde.sdeint(method="gtgf")``.

The Itô SDE dX = mu X dt + sigma X dW has the exact solution
X(t) = X0 exp((mu - sigma^2 / 2) t + sigma W(t)) for every Brownian path W, and the exact mean
E[X(t)] = X0 exp(mu t). We solve it with the adaptive Gotta-Go-Fast method through torchsde's
own entry point, on a ``torchsde.BrownianInterval`` that we keep, so the exact solution of the
very same paths can be evaluated and the numerical solution compared with it path by path
(strong error) and on average (the mean against exp(mu t), within Monte-Carlo error).

torchsde's convention is one time grid for the whole batch: a step is accepted only when every
path meets the tolerance, so the batch pays for its roughest path. The library's own entry point
``adaptive_sde.solve`` gives every path its own steps (``per_sample=True``, its default, also
``options={"per_sample": True}`` in ``sdeint``); the second solve shows what that saves.

Run ``python examples/quickstart.py`` (``--quick`` for a smaller run); the figure goes to
``examples/output/quickstart.png``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torchsde

import adaptive_sde  # registers method="gtgf" with torchsde

MU, SIGMA, X0, T_END = 1.0, 0.5, 1.0, 1.0


class GeometricBrownianMotion(torch.nn.Module):
    """dX = mu X dt + sigma X dW, an Itô SDE in torchsde's convention (diagonal noise)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, mu: float, sigma: float) -> None:
        super().__init__()
        self.mu, self.sigma = mu, sigma

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mu * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sigma * y


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer paths, for a smoke test")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def compare(name: str, x: torch.Tensor, exact: torch.Tensor, stats: Any) -> dict[str, float]:
    """Print and return how the solution at t_end compares with the exact one on the same paths:
    the strong error, the mean against exp(mu t) (Monte-Carlo error included), and the mean of
    X - X_exact (the discretisation's weak error alone, with a much smaller standard error)."""
    paths = x.shape[0]
    mean, se = x.mean().item(), x.std().item() / math.sqrt(paths)
    diff = x - exact
    row = {
        "strong_error": diff.abs().mean().item(),
        "mean": mean,
        "mean_se": se,
        "mean_z": (mean - X0 * math.exp(MU * T_END)) / se,
        "weak_error": diff.mean().item(),
        "weak_error_se": diff.std().item() / math.sqrt(paths),
        "nfe_mean": stats.summary()["nfe_mean"],
        "nfe_max": stats.summary()["nfe_max"],
        "rejected_per_path": stats.summary()["rejected"] / paths,
    }
    print(name)
    print(
        f"  evaluations per path   mean {row['nfe_mean']:.0f}, max {row['nfe_max']} "
        f"({row['rejected_per_path']:.1f} rejected steps)"
    )
    print(f"  strong error at t=1    E|X - X_exact| = {row['strong_error']:.2e}")
    print(
        f"  mean at t=1            {mean:.4f} ± {se:.4f} vs exact e^(mu t) = "
        f"{X0 * math.exp(MU * T_END):.4f} (z = {row['mean_z']:+.2f}); the exact solution "
        f"on these paths: {exact.mean().item():.4f}"
    )
    print(
        f"  E[X - X_exact]         {row['weak_error']:+.2e} ± {row['weak_error_se']:.1e} "
        "(same paths: discretisation alone)"
    )
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Solve both ways, compare with the exact solution, plot; returns the key numbers."""
    args = parse_args(argv)
    paths = 1_000 if args.quick else 10_000
    ts = torch.linspace(0.0, T_END, 21, dtype=torch.float64)
    y0 = torch.full((paths, 1), X0, dtype=torch.float64)
    sde = GeometricBrownianMotion(MU, SIGMA)
    print(f"GBM dX = {MU} X dt + {SIGMA} X dW, X0 = {X0}, {paths} paths, 21 output times on [0, 1]")

    # Keep the Brownian path: the exact solution is a function of it.
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=T_END, size=(paths, 1), dtype=torch.float64, entropy=args.seed
    )
    stats: list[adaptive_sde.SolveStats] = []
    start = time.perf_counter()
    ys = torchsde.sdeint(
        sde,
        y0,
        ts,
        bm=bm,
        method="gtgf",
        rtol=1e-2,
        atol=1e-3,
        dt=1e-2,  # the first step; the controller takes it from there
        options={"stats_callback": stats.append},
    )
    seconds = time.perf_counter() - start
    w = torch.stack([bm(0.0, float(t)) if t > 0 else torch.zeros_like(y0) for t in ts])
    exact = X0 * torch.exp((MU - SIGMA**2 / 2) * ts[:, None, None] + SIGMA * w)
    shared = compare(
        "torchsde.sdeint(method='gtgf', rtol=1e-2, atol=1e-3): one time grid for the batch",
        ys[-1],
        exact[-1],
        stats[0],
    )
    print(f"  wall time              {seconds:.2f} s")

    # The same problem with per-sample steps, on the library's BrownianRegister (whose ``w`` is
    # each path's W(t_end) after the solve, so the exact end point is known again).
    register = adaptive_sde.BrownianRegister(paths, 1, seed=args.seed, dtype=torch.float64)
    start = time.perf_counter()
    own = adaptive_sde.solve(
        sde,
        y0,
        ts,
        rtol=1e-2,
        atol=1e-3,
        tolerance="conventional",  # sdeint's form of the tolerance, for a like-for-like count
        bm=register,
    )
    seconds_own = time.perf_counter() - start
    exact_own = X0 * torch.exp((MU - SIGMA**2 / 2) * T_END + SIGMA * register.w)
    per_sample = compare(
        "adaptive_sde.solve(per_sample=True): every path its own steps",
        own.ys[-1],
        exact_own,
        own.stats,
    )
    print(f"  wall time              {seconds_own:.2f} s")
    result: dict[str, Any] = {
        "paths": paths,
        "exact_mean": X0 * math.exp(MU * T_END),
        "sdeint": {**shared, "seconds": seconds},
        "per_sample": {**per_sample, "seconds": seconds_own},
    }

    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "quickstart.png"
    plot(ts, ys, exact, figure)
    print(f"figure: {figure}")
    result["figures"] = [str(figure)]
    return result


def plot(ts: torch.Tensor, ys: torch.Tensor, exact: torch.Tensor, path: Path) -> None:
    """Left: a few paths, numerical and exact. Right: the mean with its 95 % band, and
    exp(mu t)."""
    t = ts.numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for i in range(5):
        (line,) = left.plot(t, ys[:, i, 0].numpy(), lw=1.5)
        left.plot(t, exact[:, i, 0].numpy(), "o", ms=3, color=line.get_color())
    left.set(title="paths: gtgf (lines) and exact (dots)", xlabel="t", ylabel="X(t)")
    mean = ys[:, :, 0].mean(1).numpy()
    se = (ys[:, :, 0].std(1) / math.sqrt(ys.shape[1])).numpy()
    right.fill_between(t, mean - 1.96 * se, mean + 1.96 * se, alpha=0.3, label="95 % band")
    right.plot(t, mean, label="sample mean (gtgf)")
    right.plot(t, X0 * torch.exp(MU * ts).numpy(), "k--", label="exact $e^{\\mu t}$")
    right.set(title="mean", xlabel="t", ylabel="E[X(t)]")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
