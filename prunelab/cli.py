"""The ``prunelab`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ._version import __version__

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """An error to print as one line (no traceback), exiting with status 2."""


def _cmd_strategies(args: argparse.Namespace) -> int:
    from .strategies import strategy_table

    table = strategy_table()
    print(table.to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunelab", description="Understand and plan neural-network pruning."
    )
    parser.add_argument("--version", action="version", version=f"prunelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    strategies = sub.add_parser("strategies", help="list the registered pruning strategies")
    strategies.set_defaults(func=_cmd_strategies)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"prunelab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
