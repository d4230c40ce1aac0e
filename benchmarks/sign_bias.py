"""Roberts' signs and adaptive steps: the bias that decoupled signs remove.

Itô linear SDE with general noise, d = 2, m = 2 (tests/problems.py COMMUTING_ITO, exact mean
1.3499 in both components), per-sample adaptive steps. With one set of signs for both the error
estimate and the kept result, acceptance selects the signs and the mean is biased at every
tolerance; with decoupled signs (the default for this noise type) it is not. Means are reported
in units of their Monte-Carlo standard error.
Run: ``python benchmarks/sign_bias.py [--paths 60000]``.
"""

from __future__ import annotations

import argparse
import math

import _common  # noqa: F401  (sys.path)
import torch
from _common import save

import adaptive_sde
from tests.problems import COMMUTING_ITO

TS = torch.tensor([0.0, 1.0], dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", type=int, default=60_000)
    args = parser.parse_args()
    exact = COMMUTING_ITO.mean(1.0).double()
    y0 = COMMUTING_ITO.initial(args.paths)
    rows = []
    print(f"exact mean {exact.tolist()}, {args.paths} paths; (mean - exact) / standard error")
    print(f"{'rtol':>6} {'signs':>10} {'component 1':>12} {'component 2':>12} {'NFE':>7}")
    for rtol in (0.1, 0.02, 0.005):
        for decouple in (False, True):
            sol = adaptive_sde.solve(
                COMMUTING_ITO.make_sde(),
                y0,
                TS,
                seed=10,
                rtol=rtol,
                atol=rtol / 10,
                decouple_signs=decouple,
            )
            x = sol.ys[-1]
            z = ((x.mean(0) - exact) / (x.std(0) / math.sqrt(args.paths))).tolist()
            nfe = float(sol.stats.nfe.double().mean())
            name = "decoupled" if decouple else "shared"
            rows.append(
                {"rtol": rtol, "signs": name, "z": z, "mean": x.mean(0).tolist(), "nfe_mean": nfe}
            )
            print(f"{rtol:>6g} {name:>10} {z[0]:>12.1f} {z[1]:>12.1f} {nfe:>7.1f}")
    save("sign_bias", {"paths": args.paths, "exact": exact.tolist(), "rows": rows})


if __name__ == "__main__":
    main()
