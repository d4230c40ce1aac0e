"""Does adaptivity bias the solution? Consistent Brownian paths against redrawing.

The Ornstein-Uhlenbeck process of docs/method.md (theta = 4, sigma = 1, x0 = 0, T = 1, exact
Var[X_1] = 0.1250), per-sample steps, paper tolerance, atol = rtol / 10: the variance at T with
the BrownianRegister (rejected increments bridged and kept) and with a Brownian motion that
redraws after every rejection (the paper's code). Then the Itô GBM mu = sigma = 0.5 (exact mean
1.6487, variance 0.7721) with the register.
Run: ``python benchmarks/unbiasedness.py [--paths 4000] [--seeds 8]``.
"""

from __future__ import annotations

import argparse
import math

import _common  # noqa: F401  (sys.path)
import torch
from _common import save

import adaptive_sde
from adaptive_sde._bench.gmm import RedrawingBrownian
from tests.problems import OrnsteinUhlenbeck, _gbm

TS = torch.tensor([0.0, 1.0], dtype=torch.float64)


def pooled_terminal(sde, y0, rtol, seeds, redraw=False):
    """X(1) of ``seeds`` independent runs, concatenated, with mean NFE and rejection share."""
    finals, nfe, accepted, rejected = [], 0.0, 0, 0
    for seed in range(seeds):
        bm = RedrawingBrownian(y0.shape[0], 1, seed=seed) if redraw else None
        sol = adaptive_sde.solve(sde, y0, TS, rtol=rtol, atol=rtol / 10, seed=seed, bm=bm)
        finals.append(sol.ys[-1])
        nfe += float(sol.stats.nfe.double().mean()) / seeds
        accepted += sol.stats.total_accepted
        rejected += sol.stats.total_rejected
    return torch.cat(finals), nfe, rejected / (accepted + rejected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", type=int, default=4000, help="paths per run")
    parser.add_argument("--seeds", type=int, default=1, help="independent runs to pool")
    args = parser.parse_args()
    total = args.paths * args.seeds
    exact = (1 - math.exp(-8)) / 8
    se = exact * math.sqrt(2 / (total - 1))
    print(f"OU Var[X_1]: exact {exact:.4f}, Monte-Carlo standard error {se:.4f} ({total} paths)")
    print(f"{'rtol':>6} {'register':>9} {'redraw':>9} {'NFE':>7} {'rejected':>9}")
    ou = []
    y0 = torch.zeros(args.paths, 1, dtype=torch.float64)
    sde = OrnsteinUhlenbeck(4.0, 1.0)
    for rtol in (0.5, 0.2, 0.1, 0.05, 0.02):
        kept, nfe, rejected = pooled_terminal(sde, y0, rtol, args.seeds)
        redrawn, _, _ = pooled_terminal(sde, y0, rtol, args.seeds, redraw=True)
        row = {
            "rtol": rtol,
            "register_var": float(kept.var()),
            "redraw_var": float(redrawn.var()),
            "nfe_mean": nfe,
            "rejected": rejected,
        }
        ou.append(row)
        print(
            f"{rtol:>6g} {row['register_var']:>9.4f} {row['redraw_var']:>9.4f} {nfe:>7.1f} "
            f"{100 * rejected:>8.1f}%"
        )

    gbm = _gbm("gbm", 0.5, 0.5, "ito")
    mean, var = float(gbm.mean(1.0)), float(gbm.variance(1.0))
    print(f"\nItô GBM mu = sigma = 0.5: exact mean {mean:.4f}, variance {var:.4f}")
    rows = []
    y0 = torch.ones(args.paths, 1, dtype=torch.float64)
    for rtol in (0.1, 0.05, 0.01):
        x, nfe, _ = pooled_terminal(gbm.make_sde(), y0, rtol, args.seeds)
        row = {
            "rtol": rtol,
            "mean": float(x.mean()),
            "mean_se": float(x.std()) / math.sqrt(total),
            "var": float(x.var()),
            "nfe_mean": nfe,
        }
        rows.append(row)
        print(
            f"rtol {rtol:<5g} mean {row['mean']:.4f} ± {row['mean_se']:.4f}  "
            f"variance {row['var']:.4f}  NFE {nfe:.1f}"
        )
    save("unbiasedness", {"paths": total, "ou_exact_var": exact, "ou": ou, "gbm": rows})


if __name__ == "__main__":
    main()
