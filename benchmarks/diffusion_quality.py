"""Sample quality against score evaluations, on Gaussian mixtures with exact scores.

The benchmark lives in ``adaptive_sde._bench.gmm`` (also ``adaptive-sde bench gmm``); this
script runs it and writes benchmarks/results/diffusion_quality.json.
Run: ``python benchmarks/diffusion_quality.py [--quick]``.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (sys.path)
from _common import save

from adaptive_sde._bench import gmm


def main() -> None:
    parser = argparse.ArgumentParser(
        description=gmm.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = gmm.run(quick=args.quick)
    for caption, table in gmm.tables(result):
        print(f"\n{caption}\n{table}")
    print(f"\nwritten to {save('diffusion_quality', result)}")


if __name__ == "__main__":
    main()
