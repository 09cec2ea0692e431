"""Project exceptions. The CLI turns every one of them (and ``ValueError`` from validation) into one line, exit 2."""

from __future__ import annotations

__all__ = ["SlimnasError", "ConfigError", "InputError"]


class SlimnasError(Exception):
    """Base class of slimnas's own errors."""


class ConfigError(SlimnasError, ValueError):
    """A configuration field is wrong; the message names the field."""


class InputError(SlimnasError, ValueError):
    """An input (a path, a file, an address) is missing or malformed; the message names it."""
