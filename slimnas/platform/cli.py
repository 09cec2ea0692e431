"""The ``slimnas`` command line.

Every command validates its input before doing work. Bad input (a field, a path, a file) ends in one line on stderr
naming what is wrong and exit status 2, never a traceback. The commands check explicitly, naming the field; as a last
guard, an ``OSError`` about a path (no space left, permission denied, a name too long) and a ``MemoryError`` (a size
that cannot fit) also end in one line and exit 2. A line is at most :data:`MAX_LINE` characters.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from slimnas import __version__
from slimnas.errors import SlimnasError, os_error_reason, shorten
from slimnas.platform.commands import MODULES

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2
#: The longest error line printed (longer messages are cut in the middle).
MAX_LINE = 600


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"slimnas: error: {shorten(' '.join(message.split()), MAX_LINE)}\n")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return shorten(text, MAX_LINE) if text else type(exc).__name__


def _os_error_line(exc: OSError) -> str:
    """``<path>: <reason>`` of an ``OSError`` that names a path."""
    names = [shorten(str(n), 160) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {os_error_reason(exc)}"


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
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"slimnas {command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError as exc:
        print(f"slimnas {command}: error: out of memory{': ' + _one_line(exc) if str(exc) else ''} (a size in the "
              f"input too large for this machine?)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"slimnas {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
