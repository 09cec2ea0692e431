"""The ``slimnas`` command line.

Every command validates its input before doing work. Bad input (a field, a path, a file) ends in one line on stderr
naming what is wrong and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from slimnas import __version__
from slimnas.errors import SlimnasError
from slimnas.platform.commands import MODULES

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"slimnas: error: {message}\n")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="slimnas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"slimnas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in MODULES:
        importlib.import_module(f"slimnas.platform.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    command = getattr(args, "full_command", args.command)
    try:
        return func(args)
    except (SlimnasError, ValueError) as exc:
        print(f"slimnas {command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"slimnas {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
