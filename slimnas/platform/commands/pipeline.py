"""``slimnas run --config PATH`` and ``slimnas quickstart``: the pipeline job (train -> table -> search -> retrain)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from importlib import resources
from typing import Any

from slimnas.errors import InputError, shorten

__all__ = ["quickstart_source", "apply_overrides", "register"]


def quickstart_source() -> dict[str, Any]:
    """The embedded quickstart config (shipped inside the package, so it works from any working directory)."""
    import yaml

    text = resources.files("slimnas.platform.configs").joinpath("quickstart.yaml").read_text()
    return yaml.safe_load(text)


def apply_overrides(data: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """``["train.run.epochs=2", "search.methods=[slimming, random]"]`` applied to a copy of ``data`` (values are
    YAML)."""
    from slimnas.config import parse_yaml

    out = copy.deepcopy(data)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(part.strip() for part in parts):
            raise InputError(f"--set: expected KEY=VALUE (KEY like train.run.epochs), got {shorten(repr(pair))}")
        value = parse_yaml(text, f"--set {shorten(key)}", shorten(repr(text)))
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputError(f"--set {key}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _run(args: argparse.Namespace, source: Any) -> int:
    from slimnas.config import load_yaml
    from slimnas.platform.pipeline.config import STAGES, load_pipeline
    from slimnas.platform.pipeline.run import run_pipeline
    from slimnas.progress import stderr_echo

    unknown = sorted(set(args.force) - set(STAGES) - {"all"})
    if unknown:
        raise InputError(f"--force: unknown stage(s) {shorten(unknown)} (expected {', '.join(STAGES)} or all)")
    data = load_yaml(source) if not isinstance(source, dict) else source
    if not isinstance(data, dict):
        raise InputError("config: expected a mapping")
    if args.output is not None:
        if not args.output.strip():
            raise InputError("--output: empty; give a folder")
        data = {**data, "output": args.output}
    cfg = load_pipeline(apply_overrides(data, args.set))
    if args.check:
        from slimnas.platform.runtime.preflight import check_pipeline

        check_pipeline(cfg, args.force)
        print(f"config OK: pipeline '{cfg.name}' -> {cfg.output_dir}")
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the result; Ray Tune prints its tables there
        result = run_pipeline(cfg, force=args.force, restore=args.restore, echo=stderr_echo)
    print(result.summary_text())
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", nargs="+", default=[], metavar="STAGE",
                   help="redo these stages even when their outputs exist: train, table, search, retrain or all")
    p.add_argument("--restore", action="store_true", help="continue a killed search job in a new process")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.run.epochs=4 (repeatable; values are YAML)")
    p.add_argument("--output", default=None, help="output folder (overrides the config's)")
    p.add_argument("--check", action="store_true", help="validate the config and its inputs, then exit")


def register(sub) -> None:
    p = sub.add_parser("run", help="run a pipeline config: train the supernet, build the latency table, search")
    p.add_argument("--config", required=True, help="pipeline YAML (see slimnas/platform/configs/quickstart.yaml)")
    _common(p)
    p.set_defaults(func=lambda args: _run(args, args.config))

    p = sub.add_parser("quickstart", help="the whole pipeline on embedded defaults (digits, tiny space, local Ray)")
    _common(p)
    p.set_defaults(func=lambda args: _run(args, quickstart_source()))
