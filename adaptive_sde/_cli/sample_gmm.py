"""``adaptive-sde sample_gmm``: (under construction)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("sample-gmm", help="(under construction)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    raise SystemExit("adaptive-sde sample-gmm: not implemented yet")
