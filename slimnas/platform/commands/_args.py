"""Argument types of the CLI that check ranges while parsing: a bad value is one line (``argument --X: ...``) and
exit 2 from argparse, before a command starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from slimnas.errors import shorten

__all__ = ["int_in", "float_in", "port"]


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got "
                                             f"{shorten(repr(text))}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {shorten(value)}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number from ``low`` (excluded when ``low_open``) to ``high``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {shorten(repr(text))}") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            lo = f"above {low:g}" if low_open else f"from {low:g}"
            raise argparse.ArgumentTypeError(f"must be {lo} to {high:g}, got {shorten(text)}")
        return value

    parse.__name__ = "number"
    return parse


#: A TCP port.
port = int_in(1, 65535)
