"""``adaptive-sde bench``: the benchmarks, from an installed package.

The benchmark page (docs/benchmarks.md) is built from three:

- ``analytic``: evaluations per sample to reach a strong error, gtgf against torchsde's euler,
  milstein and srk, on SDEs with exact solutions;
- ``gmm``: sample quality against score evaluations on Gaussian mixtures with exact scores
  (the adaptive sampler, the paper's configuration, Euler-Maruyama, the probability-flow ODE);
- ``overhead``: wall time outside the user's f and g per evaluation, as a ratio to torchsde's
  euler, for batch 1 to 65536 and d 1 to 1024.

The others check a claim of the docs:

- ``strong_order``: strong errors and fitted strong orders with fixed steps, every SDE with an
  exact solution;
- ``unbiasedness``: the Ornstein-Uhlenbeck variance with the Brownian register against a
  Brownian motion that redraws after rejections, and the moments of a GBM;
- ``sign_bias``: the bias of the mean that shared signs cause on Itô general noise, and that
  decoupled signs remove;
- ``double_well_steps``: large accepted steps with additive noise, against fine-step
  Euler-Maruyama in a double well;
- ``sampler_memory``: peak memory of sample() without and with an autograd graph (needs
  diffusers);
- ``gpu_check``: the overhead measurements and the diffusion sampler's throughput on a CUDA
  device (without one it says so and measures nothing; ``--device cpu`` runs it on the CPU).

``all`` runs the three of the page (analytic, gmm, overhead), the others run by name.

Each writes ``<name>.json`` (every number, with the machine) and ``<name>.png`` into ``--out``
and prints its tables; ``--page FILE`` also writes the Markdown benchmark page. ``--quick`` runs
smaller sizes (seconds to tens of seconds each); ``--paths N`` sets the Monte-Carlo paths of
the benchmarks that have them (analytic, strong_order, unbiasedness, sign_bias,
double_well_steps), ``--device`` the device of those that take one (overhead, gpu_check).
"""

from __future__ import annotations

import argparse
import inspect
import os
import shlex
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from adaptive_sde._bench import (
    analytic,
    double_well_steps,
    gmm,
    gpu_check,
    overhead,
    sampler_memory,
    sign_bias,
    strong_order,
    unbiasedness,
)
from adaptive_sde._bench.page import write_page
from adaptive_sde._bench.report import save_json

PAGE = (analytic, gmm, overhead)  # what ``all`` runs: the benchmark page's modules
CHECKS = (strong_order, unbiasedness, sign_bias, double_well_steps, sampler_memory, gpu_check)
BENCHMARKS: dict[str, ModuleType] = {m.NAME: m for m in (*PAGE, *CHECKS)}
ALL = [m.NAME for m in PAGE]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmarks: JSON, PNG plots and tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "which",
        nargs="?",
        default="all",
        choices=[*BENCHMARKS, "all"],
        help=f"one benchmark, or all: {', '.join(ALL)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for tests")
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="folder for JSON and PNG (default: .)"
    )
    parser.add_argument("--page", type=Path, help="also write the Markdown benchmark page here")
    parser.add_argument(
        "--paths",
        type=_positive,
        help="Monte-Carlo paths, for the benchmarks that have them (default: each its own)",
    )
    parser.add_argument(
        "--device", help="torch device, for the benchmarks that take one (default: each its own)"
    )
    parser.set_defaults(run=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def takes(module: ModuleType, option: str) -> bool:
    """Whether the benchmark's ``run`` has the argument ``option`` (``paths``, ``device``)."""
    return option in inspect.signature(module.run).parameters


def run_benchmark(
    module: ModuleType, out: Path, quick: bool, **options: Any
) -> tuple[dict[str, Any], Path, float]:
    """Run one benchmark, print its tables, write its JSON and PNG; (result, PNG, seconds).
    ``options`` (``paths``, ``device``) go to the benchmarks that take them; None is left out."""
    options = {k: v for k, v in options.items() if v is not None and takes(module, k)}
    start = time.perf_counter()
    result = module.run(quick=quick, **options)
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
    names = ALL if args.which == "all" else [args.which]
    modules = [BENCHMARKS[name] for name in names]
    if args.paths is not None and not any(takes(m, "paths") for m in modules):
        raise ValueError(f"--paths: {args.which} has no Monte-Carlo paths to set")
    if args.device is not None and not any(takes(m, "device") for m in modules):
        raise ValueError(f"--device: {args.which} runs on the CPU only")
    runs = []
    for module in modules:
        run_ = run_benchmark(module, args.out, args.quick, paths=args.paths, device=args.device)
        runs.append((module, *run_))
    if args.page is not None:
        options = ["--quick"] if args.quick else []
        for flag, value in (("--paths", args.paths), ("--device", args.device)):
            if value is not None:
                options += [flag, str(value)]
        threads = os.environ.get("OMP_NUM_THREADS")  # part of the conditions: say so
        command = f"OMP_NUM_THREADS={threads} " if threads else ""
        command += "adaptive-sde bench " + shlex.join(
            [args.which, *options, "--out", str(args.out), "--page", str(args.page)]
        )
        path = write_page(args.page, command, runs, args.quick)
        print(f"page: {path}")
