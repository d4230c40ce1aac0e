"""``adaptive-sde bench``: the benchmarks, from an installed package.

- ``analytic``: evaluations per sample to reach a strong error, gtgf against torchsde's euler,
  milstein and srk, on SDEs with exact solutions;
- ``gmm``: sample quality against score evaluations on Gaussian mixtures with exact scores
  (the adaptive sampler, the paper's configuration, Euler-Maruyama, the probability-flow ODE);
- ``overhead``: wall time outside the user's f and g per evaluation, as a ratio to torchsde's
  euler, for batch 1 to 65536 and d 1 to 1024;
- ``all``: the three.

Each writes ``<name>.json`` (every number, with the machine) and ``<name>.png`` into ``--out``
and prints its tables; ``--page FILE`` also writes the Markdown benchmark page. ``--quick`` runs
smaller sizes (seconds to tens of seconds each).
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from adaptive_sde._bench import analytic, gmm, overhead
from adaptive_sde._bench.page import write_page
from adaptive_sde._bench.report import save_json

BENCHMARKS: dict[str, ModuleType] = {m.NAME: m for m in (analytic, gmm, overhead)}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmarks: JSON, PNG plots and tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("which", nargs="?", default="all", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for tests")
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="folder for JSON and PNG (default: .)"
    )
    parser.add_argument("--page", type=Path, help="also write the Markdown benchmark page here")
    parser.set_defaults(run=run)


def run_benchmark(module: ModuleType, out: Path, quick: bool) -> tuple[dict[str, Any], Path, float]:
    """Run one benchmark, print its tables, write its JSON and PNG; (result, PNG, seconds)."""
    start = time.perf_counter()
    result = module.run(quick=quick)
    seconds = time.perf_counter() - start
    print(f"\n== {module.TITLE} ({seconds:.0f} s)")
    for caption, table in module.tables(result):
        print(f"\n{caption}\n{table}")
    out.mkdir(parents=True, exist_ok=True)
    json_path = save_json(
        out / f"{module.NAME}.json", {"quick": quick, "seconds": seconds, **result}
    )
    png = module.plot(result, out / f"{module.NAME}.png")
    print(f"\nwritten: {json_path}, {png}")
    return result, png, seconds


def run(args: argparse.Namespace) -> None:
    names = list(BENCHMARKS) if args.which == "all" else [args.which]
    runs = []
    for name in names:
        module = BENCHMARKS[name]
        runs.append((module, *run_benchmark(module, args.out, args.quick)))
    if args.page is not None:
        options = ["--quick"] if args.quick else []
        threads = os.environ.get("OMP_NUM_THREADS")  # part of the conditions: say so
        command = f"OMP_NUM_THREADS={threads} " if threads else ""
        command += "adaptive-sde bench " + shlex.join(
            [args.which, *options, "--out", str(args.out), "--page", str(args.page)]
        )
        path = write_page(args.page, command, runs, args.quick)
        print(f"page: {path}")
