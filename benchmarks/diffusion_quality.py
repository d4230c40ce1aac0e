"""Sample quality against score evaluations, on Gaussian mixtures with exact scores.

The benchmark lives in ``adaptive_sde._bench.gmm`` (also ``adaptive-sde bench gmm``); this
script runs it and writes benchmarks/results/diffusion_quality.json.
Run: ``python benchmarks/diffusion_quality.py [--quick]``.
"""

from __future__ import annotations

import _common  # noqa: F401  (sys.path)
from _common import run_packaged

from adaptive_sde._bench import gmm

if __name__ == "__main__":
    run_packaged(gmm, "diffusion_quality")
