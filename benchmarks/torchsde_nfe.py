"""Evaluations needed to reach a strong error: gtgf against torchsde's own methods.

The benchmark lives in ``adaptive_sde._bench.analytic`` (also ``adaptive-sde bench analytic``);
this script runs it and writes benchmarks/results/torchsde_nfe.json.
Run: ``python benchmarks/torchsde_nfe.py [--paths 200] [--quick]``.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (sys.path)
from _common import save

from adaptive_sde._bench import analytic


def main() -> None:
    parser = argparse.ArgumentParser(
        description=analytic.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paths", type=int, default=None, help="default 200 (100 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer problems and sweep points")
    args = parser.parse_args()
    result = analytic.run(quick=args.quick, paths=args.paths)
    for caption, table in analytic.tables(result):
        print(f"\n{caption}\n{table}")
    print(f"\nwritten to {save('torchsde_nfe', result)}")


if __name__ == "__main__":
    main()
