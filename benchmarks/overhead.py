"""The solver's own cost: wall time outside the user's drift and diffusion, per evaluation.

A tiny linear SDE, dX = -X dt + 0.1 dW (diagonal noise), whose f and g cost almost nothing, so
what is left is the solver: gtgf (``adaptive_sde.solve``, per-sample steps, rtol 1e-2, and the
torchsde route ``sdeint(method="gtgf")`` with its shared grid) against torchsde's ``euler``
with 50 fixed steps, on the same problem and machine, in the same process. f and g are timed
from inside; the table gives (wall - time in f and g) / evaluations, where an evaluation is one
(f, g) pair, and the ratio gtgf / euler.
Run: ``python benchmarks/overhead.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (sys.path)
import torch
import torchsde
from _common import save
from torch import nn

import adaptive_sde


class TimedLinear(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self) -> None:
        super().__init__()
        self.seconds, self.pairs = 0.0, 0

    def f(self, t, y):
        start = time.perf_counter()
        out = -y
        self.seconds += time.perf_counter() - start
        self.pairs += 1
        return out

    def g(self, t, y):
        start = time.perf_counter()
        out = torch.full_like(y, 0.1)
        self.seconds += time.perf_counter() - start
        return out


def overhead(run, repeats: int = 3) -> tuple[float, int]:
    """Best over ``repeats`` of (wall - f/g time) per evaluation pair, and the pairs."""
    best, pairs = float("inf"), 0
    for _ in range(repeats):
        sde = TimedLinear()
        start = time.perf_counter()
        run(sde)
        wall = time.perf_counter() - start
        pairs = sde.pairs
        best = min(best, (wall - sde.seconds) / max(pairs, 1))
    return best, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    batches = (1, 64, 4096) if args.quick else (1, 64, 4096, 65536)
    dims = (1, 64) if args.quick else (1, 64, 1024)
    ts = torch.tensor([0.0, 1.0])
    rows = []
    print(
        f"{'batch':>6} {'d':>5} {'euler us/eval':>14} {'gtgf us/eval':>13} {'ratio':>6} "
        f"{'gtgf sdeint us/eval':>20} {'ratio':>6}"
    )
    for batch in batches:
        for d in dims:
            if batch * d > 2**24:  # 65536 x 1024 would need several 256 MB tensors per step
                continue
            y0 = torch.ones(batch, d)
            euler, _ = overhead(
                lambda s, y0=y0: torchsde.sdeint(s, y0, ts, method="euler", dt=0.02)
            )
            native, pairs = overhead(
                lambda s, y0=y0: adaptive_sde.solve(s, y0, ts, rtol=1e-2, atol=1e-3, seed=0)
            )
            shared, _ = overhead(
                lambda s, y0=y0: torchsde.sdeint(
                    s, y0, ts, method="gtgf", rtol=1e-2, atol=1e-3, options={"seed": 0}
                )
            )
            rows.append(
                {
                    "batch": batch,
                    "d": d,
                    "euler_s": euler,
                    "gtgf_s": native,
                    "gtgf_sdeint_s": shared,
                    "gtgf_pairs": pairs,
                }
            )
            print(
                f"{batch:>6} {d:>5} {1e6 * euler:>14.1f} {1e6 * native:>13.1f} "
                f"{native / euler:>6.1f} {1e6 * shared:>20.1f} {shared / euler:>6.1f}"
            )
    save("overhead", {"rows": rows})


if __name__ == "__main__":
    main()
