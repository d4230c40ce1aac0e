"""Shared bits of the benchmark scripts: the repository root on sys.path, JSON output."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the problems of tests/problems.py are shared with the tests

RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, str]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "threads": str(torch.get_num_threads()),
    }


def save(name: str, payload: dict) -> Path:
    """Write ``payload`` with the machine's description to benchmarks/results/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
