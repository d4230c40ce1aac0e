"""The Brownian register's cost per step against torch.randn and torchsde's BrownianInterval.

One "step" of the register is what the integration loop asks of it: ``horizon``, ``increment``
and ``commit``, with about a third of the steps rejected (so bridges and pending intervals are
exercised). torchsde's BrownianInterval is queried along an increasing grid, as a fixed-step
solver does. All figures are per step, in the same process, as ratios to one ``torch.randn`` of
the same size. Run: ``python benchmarks/brownian_cost.py``.
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (sys.path)
import torch
import torchsde
from _common import save

from adaptive_sde import BrownianRegister


def per_call(fn, repeats: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def register_step(batch: int, m: int, dtype: torch.dtype):
    reg = BrownianRegister(batch, m, seed=0, dtype=dtype)
    state = {"t": torch.zeros(batch, dtype=dtype)}
    gen = torch.Generator().manual_seed(0)
    h = torch.full((batch,), 1e-3, dtype=dtype)

    def step():
        t = state["t"]
        t_next = torch.minimum(t + h, reg.horizon(None, t))
        reg.increment(None, t, t_next)
        accept = torch.rand(batch, generator=gen) < 0.67
        reg.commit(None, accept)
        state["t"] = torch.where(accept, t_next, t)

    return step


def interval_step(batch: int, m: int, dtype: torch.dtype, steps: int):
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=1.0, size=(batch, m), dtype=dtype, levy_area_approximation="none", entropy=0
    )
    state = {"k": 0}

    def step():
        k = state["k"] % steps
        bm(k / steps, (k + 1) / steps)
        state["k"] += 1

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rows = []
    print(
        f"{'batch x m':>12} {'dtype':>8} {'randn us':>9} {'register us':>12} {'ratio':>6} "
        f"{'BrownianInterval us':>20} {'ratio':>6}"
    )
    for batch, m in ((1024, 64), (64, 64), (16384, 16), (1024, 1)):
        for dtype in (torch.float32, torch.float64):
            randn = per_call(
                lambda b=batch, mm=m, d=dtype: torch.randn(b, mm, dtype=d), args.repeats
            )
            reg = per_call(register_step(batch, m, dtype), args.repeats)
            bi = per_call(interval_step(batch, m, dtype, 4 * args.repeats), args.repeats)
            rows.append(
                {
                    "batch": batch,
                    "m": m,
                    "dtype": str(dtype),
                    "randn_s": randn,
                    "register_s": reg,
                    "interval_s": bi,
                }
            )
            print(
                f"{f'{batch} x {m}':>12} {str(dtype)[6:]:>8} {1e6 * randn:>9.1f} "
                f"{1e6 * reg:>12.1f} {reg / randn:>6.1f} {1e6 * bi:>20.1f} {bi / randn:>6.1f}"
            )
    save("brownian_cost", {"rows": rows})


if __name__ == "__main__":
    main()
