"""Shared bits of the benchmark scripts: the repository root on sys.path, JSON output."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

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


def run_packaged(
    module: ModuleType,
    name: str,
    quick_help: str = "smaller sizes",
    add_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """The command line of a benchmark that lives in ``adaptive_sde._bench``: parse ``--quick``
    (and ``add_options``' arguments, passed to ``module.run`` by name), run it, print its tables
    and save its result as benchmarks/results/<name>.json."""
    parser = argparse.ArgumentParser(
        description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if add_options is not None:
        add_options(parser)
    result = module.run(**vars(parser.parse_args()))
    for caption, table in module.tables(result):
        print(f"\n{caption}\n{table}")
    print(f"\nwritten to {save(name, result)}")
