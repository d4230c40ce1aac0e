"""The ``adaptive-sde`` command: one subcommand per module of this package.

Each subcommand module has ``add_parser(subparsers)``, which registers its parser and sets
``run`` (a function of the parsed arguments) as the parser's default.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from adaptive_sde._cli import bench, demo, sample_gmm


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptive-sde",
        description="The Gotta-Go-Fast adaptive SDE solver: demonstration, benchmarks, sampling.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, bench, sample_gmm):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)
