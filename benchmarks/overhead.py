"""The solver's own cost: wall time outside the user's drift and diffusion, per evaluation.

The benchmark lives in ``adaptive_sde._bench.overhead`` (also ``adaptive-sde bench overhead``);
this script runs it and writes benchmarks/results/overhead.json.
Run: ``python benchmarks/overhead.py [--quick]``.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (sys.path)
from _common import save

from adaptive_sde._bench import overhead


def main() -> None:
    parser = argparse.ArgumentParser(
        description=overhead.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = overhead.run(quick=args.quick)
    for caption, table in overhead.tables(result):
        print(f"\n{caption}\n{table}")
    print(f"\nwritten to {save('overhead', result)}")


if __name__ == "__main__":
    main()
