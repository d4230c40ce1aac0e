"""Evaluations needed to reach a strong error: gtgf against torchsde's own methods.

The benchmark lives in ``adaptive_sde._bench.analytic`` (also ``adaptive-sde bench analytic``);
this script runs it and writes benchmarks/results/torchsde_nfe.json.
Run: ``python benchmarks/torchsde_nfe.py [--paths 200] [--quick]``.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (sys.path)
from _common import run_packaged

from adaptive_sde._bench import analytic


def _paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paths", type=int, default=None, help="default 200 (100 with --quick)")


if __name__ == "__main__":
    run_packaged(analytic, "torchsde_nfe", "fewer problems and sweep points", _paths)
