"""``slimnas quickstart``: the main job on embedded defaults."""

from __future__ import annotations

import argparse


def _quickstart(args: argparse.Namespace) -> int:
    from slimnas.platform.quickstart import run_smoke

    run_smoke(steps=args.steps, seed=args.seed)
    return 0


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="the main job on embedded defaults (currently a smoke run)")
    p.add_argument("--steps", type=int, default=20, help="supernet training steps per sampling mode")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_quickstart)
