"""``slimnas space`` and ``slimnas arch``: inspect search spaces and archs."""

from __future__ import annotations

import argparse
import json

from slimnas.errors import InputError, shorten
from slimnas.platform.commands._args import int_in

#: The most classes a classifier head may have (``--num-classes``).
MAX_CLASSES = 1_000_000


def read_arch(path: str, what: str = "--arch"):
    """An arch from a JSON file (one line of error naming the file or the field)."""
    from slimnas.config import read_text_file
    from slimnas.search_spaces import Arch

    text = read_text_file(path, what, max_bytes=2**20)
    try:
        return Arch.from_json(text)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        message = " ".join(str(exc).split()).removeprefix("arch: ")
        raise InputError(f"{what}: {shorten(path, 160)}: {shorten(message, 300)}") from None


def _check_model_fits(arch, num_classes: int) -> None:
    """Refuse an arch whose weights (and attention-bias tables) cannot fit in memory, before building it."""
    from slimnas.platform.runtime.preflight import memory_bytes

    params = sum(12 * w * w * len(b) for w, b in zip(arch.widths, arch.blocks)) + num_classes * arch.widths[-1]
    tokens = (arch.img_size // 32) ** 2
    need = 4 * params + 8 * tokens * tokens * max(1, sum(arch.num_3d))
    have = memory_bytes()
    if have and need > have:
        raise InputError(f"--arch: the model of {arch} needs at least {need / 2**30:.1f} GiB; this machine has "
                         f"{have / 2**30:.1f} GiB")


def _space(args: argparse.Namespace) -> int:
    from slimnas.search_spaces import SearchSpace

    space = SearchSpace.preset(args.name)
    info = space.to_dict()
    info["num_archs"] = space.num_archs()
    info["max_arch"] = space.max_arch().to_dict()
    print(json.dumps(info, indent=2))
    return 0


def _arch(args: argparse.Namespace) -> int:
    from slimnas.search_spaces import Arch, SearchSpace

    arch = Arch.preset(args.preset) if args.preset else read_arch(args.arch)
    info = {"arch": arch.to_dict(), "depths": list(arch.depths), "num_3d": list(arch.num_3d)}
    if args.space:
        space = SearchSpace.preset(args.space)
        space.check(arch)
        info["space"] = space.name
    if args.params:
        _check_model_fits(arch, args.num_classes)

        model = arch.space_family.build_model(arch, num_classes=args.num_classes)
        info["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 4)
    print(json.dumps(info, indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("space", help="show a search space preset")
    p.add_argument("name", help="l7 | l3 | l1 | tiny")
    p.set_defaults(func=_space)

    p = sub.add_parser("arch", help="show (and validate) an arch")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--preset", help="l1 | l3 | l7")
    group.add_argument("--arch", help="path to an arch JSON file")
    p.add_argument("--space", help="check that the arch lies in this space preset")
    p.add_argument("--params", action="store_true", help="build the model and count its parameters")
    p.add_argument("--num-classes", type=int_in(1, MAX_CLASSES), default=1000)
    p.set_defaults(func=_arch)
