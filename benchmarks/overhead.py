"""The solver's own cost: wall time outside the user's drift and diffusion, per evaluation.

The benchmark lives in ``adaptive_sde._bench.overhead`` (also ``adaptive-sde bench overhead``);
this script runs it and writes benchmarks/results/overhead.json.
Run: ``python benchmarks/overhead.py [--quick]``.
"""

from __future__ import annotations

import _common  # noqa: F401  (sys.path)
from _common import run_packaged

from adaptive_sde._bench import overhead

if __name__ == "__main__":
    run_packaged(overhead, "overhead")
