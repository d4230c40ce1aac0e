"""Does adaptivity bias the solution? Consistent Brownian paths against redrawing.

The Ornstein-Uhlenbeck process of ALGORITHM.md §4 (theta = 4, sigma = 1, x0 = 0, T = 1, exact
Var[X_1] = 0.1250), per-sample steps, paper tolerance, atol = rtol / 10: the variance at T with
the BrownianRegister (rejected increments bridged and kept) and with a Brownian motion that
redraws after every rejection (the paper's code). Then the Itô GBM mu = sigma = 0.5 (exact mean
1.6487, variance 0.7721) with the register. Run: ``python benchmarks/unbiasedness.py``.
"""

from __future__ import annotations

import argparse
import math

import _common  # noqa: F401  (sys.path)
import torch
from _common import save

import adaptive_sde
from tests.helpers import RedrawingBrownian
from tests.problems import OrnsteinUhlenbeck, _gbm

TS = torch.tensor([0.0, 1.0], dtype=torch.float64)


def ou_row(rtol: float, paths: int, seed: int) -> dict[str, float]:
    y0 = torch.zeros(paths, 1, dtype=torch.float64)
    out: dict[str, float] = {"rtol": rtol}
    for name, bm in (("register", None), ("redraw", RedrawingBrownian(paths, 1, seed=seed))):
        sol = adaptive_sde.solve(
            OrnsteinUhlenbeck(4.0, 1.0), y0, TS, rtol=rtol, atol=rtol / 10, seed=seed, bm=bm
        )
        s = sol.stats
        out[f"{name}_var"] = float(sol.ys[-1].var())
        out[f"{name}_nfe"] = float(s.nfe.double().mean())
        out[f"{name}_rejected"] = s.total_rejected / (s.total_accepted + s.total_rejected)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    exact = (1 - math.exp(-8)) / 8
    se = exact * math.sqrt(2 / (args.paths - 1))
    print(
        f"OU Var[X_1], exact {exact:.4f}, Monte-Carlo standard error ±{se:.4f} ({args.paths} paths)"
    )
    print(f"{'rtol':>6} {'register':>9} {'redraw':>9} {'NFE reg':>8} {'rejected':>9}")
    ou = []
    for rtol in (0.5, 0.2, 0.1, 0.05, 0.02):
        r = ou_row(rtol, args.paths, args.seed)
        ou.append(r)
        print(
            f"{rtol:>6g} {r['register_var']:>9.4f} {r['redraw_var']:>9.4f} "
            f"{r['register_nfe']:>8.1f} {100 * r['register_rejected']:>8.1f}%"
        )

    gbm = _gbm("gbm", 0.5, 0.5, "ito")
    mean, var = float(gbm.mean(1.0)), float(gbm.variance(1.0))
    print(f"\nItô GBM mu = sigma = 0.5: exact mean {mean:.4f}, variance {var:.4f}")
    rows = []
    for rtol in (0.1, 0.05, 0.01):
        y0 = torch.ones(args.paths, 1, dtype=torch.float64)
        sol = adaptive_sde.solve(gbm.make_sde(), y0, TS, rtol=rtol, atol=rtol / 10, seed=args.seed)
        x = sol.ys[-1]
        rows.append(
            {
                "rtol": rtol,
                "mean": float(x.mean()),
                "var": float(x.var()),
                "mean_se": float(x.std()) / math.sqrt(args.paths),
            }
        )
        print(
            f"rtol {rtol:<5g} mean {float(x.mean()):.4f} ± {rows[-1]['mean_se']:.4f}  "
            f"variance {float(x.var()):.4f}"
        )
    save("unbiasedness", {"paths": args.paths, "ou_exact_var": exact, "ou": ou, "gbm": rows})


if __name__ == "__main__":
    main()
