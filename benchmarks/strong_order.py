"""Strong errors and fitted strong orders of the Gotta-Go-Fast pair with fixed steps.

Every problem of tests/problems.py, fixed steps of 1/8 ... 1/128 on one torchsde
BrownianInterval per problem (the same path for every step size), mean |X_N - X(T)| over the
paths. Run: ``python benchmarks/strong_order.py [--paths N]``.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (sys.path)
from _common import save

from tests.helpers import fitted_order, fixed_step_strong_error
from tests.problems import PROBLEMS

STEPS = (8, 16, 32, 64, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", type=int, default=10_000)
    args = parser.parse_args()
    rows = []
    print(f"{'problem':<32}" + "".join(f"{f'N={n}':>10}" for n in STEPS) + f"{'order':>8}")
    for problem in PROBLEMS:
        errors = [fixed_step_strong_error(problem, n, batch=args.paths) for n in STEPS]
        order = fitted_order([1 / n for n in STEPS], errors)
        rows.append(
            {
                "problem": problem.name,
                "steps": STEPS,
                "errors": errors,
                "order": order,
                "expected": problem.strong_order,
            }
        )
        print(f"{problem.name:<32}" + "".join(f"{e:>10.3g}" for e in errors) + f"{order:>8.2f}")
    print(f"\n{args.paths} paths per problem; written to {save('strong_order', {'rows': rows})}")


if __name__ == "__main__":
    main()
