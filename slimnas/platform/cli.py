"""The ``slimnas`` command line.

Every command validates its input before doing work. Bad input (a field, a path, a file) ends in one line on stderr
naming what is wrong and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from slimnas import __version__
from slimnas.errors import SlimnasError

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"slimnas: error: {message}\n")


def _read_arch(path: str):
    from slimnas.search_spaces.efficientformer import Arch

    file = Path(path)
    if not file.is_file():
        raise SlimnasError(f"--arch: no such file {path}")
    return Arch.from_json(file.read_text())


def _cmd_space(args: argparse.Namespace) -> int:
    from slimnas.search_spaces.efficientformer import SearchSpace

    space = SearchSpace.preset(args.name)
    info = space.to_dict()
    info["num_archs"] = space.num_archs()
    info["max_arch"] = space.max_arch().to_dict()
    print(json.dumps(info, indent=2))
    return 0


def _cmd_arch(args: argparse.Namespace) -> int:
    from slimnas.search_spaces.efficientformer import Arch, SearchSpace

    arch = Arch.preset(args.preset) if args.preset else _read_arch(args.arch)
    info = {"arch": arch.to_dict(), "depths": list(arch.depths), "num_3d": list(arch.num_3d)}
    if args.space:
        space = SearchSpace.preset(args.space)
        space.check(arch)
        info["space"] = space.name
    if args.params:
        from slimnas.search_spaces.efficientformer import build_model

        model = build_model(arch, num_classes=args.num_classes)
        info["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 4)
    print(json.dumps(info, indent=2))
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from slimnas.platform.quickstart import run_smoke

    run_smoke(steps=args.steps, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="slimnas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"slimnas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("quickstart", help="the main job on embedded defaults (currently a smoke run)")
    p.add_argument("--steps", type=int, default=20, help="supernet training steps per sampling mode")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("space", help="show a search space preset")
    p.add_argument("name", help="l7 | l3 | l1 | tiny")
    p.set_defaults(func=_cmd_space)

    p = sub.add_parser("arch", help="show (and validate) an arch")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--preset", help="l1 | l3 | l7")
    group.add_argument("--arch", help="path to an arch JSON file")
    p.add_argument("--space", help="check that the arch lies in this space preset")
    p.add_argument("--params", action="store_true", help="build the model and count its parameters")
    p.add_argument("--num-classes", type=int, default=1000)
    p.set_defaults(func=_cmd_arch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (SlimnasError, ValueError) as exc:
        print(f"slimnas {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"slimnas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
