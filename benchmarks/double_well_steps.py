"""Do large accepted steps with additive noise bias the distribution? A double-well check.

``python benchmarks/double_well_steps.py``: dX = (X - X^3) dt + sqrt(2/beta) dW, beta = 6,
X(0) = -1, T = 5, with no output time in between, so the solver may take steps of several time
units where the additive-noise error estimate h/2 (f(y~) - f(y)) is small by chance. Compares
P(X_T > 0), the mean and the variance with Euler-Maruyama at h = 1e-3 on the same number of
paths (independent noise): agreement within Monte-Carlo error as rtol tightens means the large
steps cost accuracy only at loose tolerances, and do not bias the result.
"""

from __future__ import annotations

import math

import _common  # noqa: F401  (sys.path)
import torch
from _common import save

import adaptive_sde

BETA, T, PATHS = 6.0, 5.0, 20_000


class DoubleWell(torch.nn.Module):
    noise_type = "additive"
    sde_type = "ito"

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y - y**3

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full((y.shape[0], 1, 1), math.sqrt(2 / BETA), dtype=y.dtype)


def summary(x: torch.Tensor) -> dict[str, float]:
    p = float((x > 0).double().mean())
    return {
        "p_right": p,
        "p_right_se": math.sqrt(p * (1 - p) / x.shape[0]),
        "mean": float(x.mean()),
        "variance": float(x.var()),
    }


def main() -> None:
    y0 = torch.full((PATHS, 1), -1.0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x, h = y0.clone(), 1e-3
    for _ in range(round(T / h)):
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        x = x + h * (x - x**3) + math.sqrt(2 / BETA * h) * noise
    rows = [{"solver": "euler-maruyama h=1e-3", **summary(x), "nfe_mean": 2 * T / h}]
    ts = torch.tensor([0.0, T], dtype=torch.float64)
    for rtol in (1e-1, 1e-2, 1e-3):
        sol = adaptive_sde.solve(DoubleWell(), y0, ts, rtol=rtol, atol=rtol / 10, seed=0)
        stats = sol.stats.summary()
        rows.append(
            {
                "solver": f"gtgf rtol={rtol:g}",
                **summary(sol.ys[-1]),
                "nfe_mean": stats["nfe_mean"],
                "dt_largest": stats["dt_largest"],
            }
        )
    print(f"{'solver':<24} {'P(X_T > 0)':>17} {'mean':>8} {'var':>7} {'NFE':>7}")
    for r in rows:
        p = f"{r['p_right']:.4f}±{r['p_right_se']:.4f}"
        moments = f"{r['mean']:>8.4f} {r['variance']:>7.4f}"
        print(f"{r['solver']:<24} {p:>17} {moments} {r['nfe_mean']:>7.0f}")
    print(f"saved {save('double_well_steps', {'rows': rows})}")


if __name__ == "__main__":
    main()
