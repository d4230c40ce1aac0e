"""The ``adaptive-sde`` command: one subcommand per module of this package.

Each subcommand module has ``add_parser(subparsers)``, which registers its parser and sets
``run`` (a function of the parsed arguments) as the parser's default. A subcommand's description
is its module docstring, written for the API docs (reST roles, double backticks); the parser
shows it as plain text.

A user's mistake (a bad argument the library refuses, a rerun with other settings into the same
``--out``) ends with one line, ``adaptive-sde: error: <message>``, and exit status 2, as
argparse does for a bad command line; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

import adaptive_sde
from adaptive_sde._cli import bench, demo, sample_gmm
from adaptive_sde._solution import SolveError

PROG = "adaptive-sde"
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, SolveError, OSError)
"""What the library raises for a caller's mistake: shown as one line unless ``--debug``."""
DEBUG_HELP = "on an error, show the full traceback instead of one line"
EXIT_USER_ERROR = 2  # argparse's status for a bad command line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# :role:`~a.b.c` -> c, :role:`a.b` -> a.b, :role:`title <a.b>` -> title; ``x`` -> x
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(?P<body>[^`]+)`")
_LITERAL = re.compile(r"``(?P<body>[^`]+)``")


def _role_text(match: re.Match[str]) -> str:
    body = match["body"]
    titled = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", body)
    if titled:
        return titled["title"]
    if body.startswith("~"):
        return body[1:].rsplit(".", 1)[-1]
    return body


def plain(text: str | None) -> str | None:
    """``text`` (a docstring) without reST markup: roles as their names, literals unquoted."""
    if text is None:
        return None
    return _LITERAL.sub(lambda m: m["body"], _ROLE.sub(_role_text, text))


def _plain_parser(parser: argparse.ArgumentParser) -> None:
    """The parser's description, epilog and argument help as plain text, recursively."""
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help)
            for sub in action.choices.values():
                _plain_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The Gotta-Go-Fast adaptive SDE solver: demonstration, benchmarks, sampling.",
        epilog="A mistake in the arguments or settings ends with one line, "
        f"'{PROG}: error: ...', and exit status {EXIT_USER_ERROR}; --debug shows the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {adaptive_sde.__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=DEBUG_HELP,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, bench, sample_gmm):
        module.add_parser(subparsers)
    for sub in subparsers.choices.values():  # also after the command: sample-gmm ... --debug
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    _plain_parser(parser)
    return parser


def _one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message's lines joined)."""
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.debug:
        args.run(args)
        return
    try:
        args.run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except USER_ERRORS as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
