"""Command-line flags derived from a latency backend's settings model (``Backend.Settings``).

A command that takes ``--backend NAME`` calls :func:`add_backend_flags` on its parser: before the arguments are
parsed, the backend they name is looked up in :data:`slimnas.registry.BACKENDS` and each field of its ``Settings``
becomes a flag (``compute_units`` -> ``--compute-units``), with the field's description and default as help, its
choices (a ``Literal``) or its type and range checked while parsing: a bad value is one line naming the flag and
exit 2, before the command starts. The settings of the other built-in backends are refused by name ("not a setting
of backend X"). Without ``--backend``, ``--help`` lists every built-in backend's settings. :func:`backend_settings`
reads the given flags back as the ``get_backend`` settings (flags not given: the model's defaults).
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from slimnas.errors import InputError, shorten

__all__ = ["add_backend_flags", "backend_settings", "setting_flag"]

#: The namespace attribute holding the settings flags parsed (field name -> dest).
_FIELDS = "backend_setting_fields"


def setting_flag(field: str) -> str:
    """The flag of a settings field (``compute_units`` -> ``--compute-units``)."""
    return "--" + field.replace("_", "-")


def _dest(field: str) -> str:
    return f"backend_setting_{field}"


def _parser_of(name: str, info: FieldInfo) -> Callable[[str], Any]:
    """An argparse type that validates one field of a settings model (pydantic's lax mode converts the text)."""
    annotation: Any = info.annotation
    adapter = TypeAdapter(Annotated[tuple([annotation, *info.metadata])] if info.metadata else annotation)

    def parse(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            message = " ".join(exc.errors()[0].get("msg", "invalid value").split())
            raise argparse.ArgumentTypeError(f"{message} (got {shorten(repr(text))})") from None

    parse.__name__ = name
    return parse


def _add_flag(group, field: str, info: FieldInfo, owner: str) -> None:
    flag = setting_flag(field)
    default = "" if info.default is None else f" (default: {info.default})"
    help_text = f"{owner}: {info.description or field}{default}"
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
    if info.annotation is bool:
        group.add_argument(flag, dest=_dest(field), action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
    elif choices and all(isinstance(c, str) for c in choices):
        group.add_argument(flag, dest=_dest(field), choices=choices, default=None, help=help_text)
    else:
        group.add_argument(flag, dest=_dest(field), type=_parser_of(field, info), default=None, metavar=field.upper(),
                           help=help_text)


class _NotASetting(argparse.Action):
    """A flag of another backend's settings: refused, naming the chosen backend's own."""

    def __init__(self, option_strings, dest, backend: str = "", own: Sequence[str] = (), **kwargs) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.backend, self.own = backend, own

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"argument {option_string}: not a setting of backend {self.backend} (its settings: "
                     f"{', '.join(self.own) or 'none'})")


def _named_backend(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--backend="):
            return arg.split("=", 1)[1]
    return None


def _add_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    from slimnas.latency.backends import BACKENDS, backend_class

    name = _named_backend(argv)
    if name is None and not {"-h", "--help"} & set(argv):
        return  # argparse says --backend is missing
    builtins = [backend_class(n) for n in BACKENDS.builtins]
    taken = set(parser._option_string_actions)  # the command's own flags
    if name is None:  # --help: every built-in backend's settings
        group = parser.add_argument_group("backend settings (--backend NAME --help: that backend's)")
        owners: dict[str, list[str]] = {}
        for cls in builtins:
            for field in cls.Settings.model_fields:
                owners.setdefault(field, []).append(cls.name)
        for field, names in owners.items():
            cls = next(c for c in builtins if c.name == names[0])
            _add_flag(group, field, cls.Settings.model_fields[field], ", ".join(names))
        return
    try:
        chosen = backend_class(name)
    except InputError as exc:
        parser.error(f"argument --backend: {str(exc).removeprefix('backend: ')}")
    fields = chosen.Settings.model_fields
    clash = sorted(setting_flag(f) for f in fields if setting_flag(f) in taken)
    if clash:
        parser.error(f"argument --backend: backend {name}'s settings {', '.join(clash)} clash with this command's "
                     f"own flags")
    group = parser.add_argument_group(f"settings of backend {name}")
    for field, info in fields.items():
        _add_flag(group, field, info, name)
    own = [setting_flag(f) for f in fields]
    others = {f for cls in builtins for f in cls.Settings.model_fields} - set(fields)
    for field in sorted(others):
        if setting_flag(field) not in taken:
            parser.add_argument(setting_flag(field), dest=_dest(field), action=_NotASetting, backend=name, own=own)
    parser.set_defaults(**{_FIELDS: tuple(fields)})


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` (a command with a ``--backend`` flag) take the named backend's settings as flags (see the
    module docstring). The flags are added when the parser parses, once it sees which backend is named."""
    parse = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        argv = list(sys.argv[1:] if args is None else args)
        if not getattr(parser, "_backend_flags_added", False):
            parser._backend_flags_added = True  # type: ignore[attr-defined]
            _add_flags(parser, argv)
        return parse(argv, namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def backend_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The backend settings given on the command line (fields whose flag was not given are left out)."""
    fields = getattr(args, _FIELDS, ())
    return {f: getattr(args, _dest(f)) for f in fields if getattr(args, _dest(f), None) is not None}
