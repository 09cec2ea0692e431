"""``slimnas export``: a winner as a deployable model (:mod:`slimnas.export`).

The winner comes from a search job's folder (``--job DIR --method M --target T``; a pipeline's output folder works
too), from a winner's folder (``--winner DIR``: ``<job>/winners/<method>@<target>ms``), from an MLflow run (``--run
ID``: a winner's child run, or the search job's run with ``--method``/``--target``; ``--tracking-uri`` as for the
other commands), or from files (``--arch ARCH.json --weights WEIGHTS.pt``, the class
count read from the weights unless ``--num-classes``). Everything is checked before any work: the format, ``--out``,
the job and its winners (an unknown method or target lists the known ones), the run, the files.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from slimnas.errors import InputError, shorten
from slimnas.platform.commands._args import float_in, int_in
from slimnas.platform.commands.models import MAX_CLASSES


def _source_args(args: argparse.Namespace) -> None:
    """The flags that go together, checked: one source and the flags it takes."""
    if args.job is not None and (args.method is None or args.target is None):
        raise InputError("--job: give the winner with --method and --target (e.g. --method slimming --target 1.5)")
    if args.arch is not None and args.weights is None:
        raise InputError("--arch: give the weights with --weights WEIGHTS.pt")
    if args.arch is None and (args.weights is not None or args.num_classes is not None):
        raise InputError(f"{'--weights' if args.weights is not None else '--num-classes'}: goes with --arch")
    if (args.arch is not None or args.winner is not None) and (args.method is not None or args.target is not None):
        raise InputError(f"--method/--target: go with --job or --run, not {'--arch' if args.arch else '--winner'}")
    if args.tracking_uri is not None and args.run is None:
        raise InputError("--tracking-uri: goes with --run")


def _run_winner(run_id: str, tracking_uri: str | None, method: str | None, target: float | None,
                into: Path) -> Path:
    """The winner files (``model.json``, ``weights.pt``) of an MLflow run, downloaded into ``into``."""
    from slimnas.platform.runtime.preflight import check_tracking_uri
    from slimnas.platform.tracking.uri import default_tracking_uri
    from slimnas.winners import CARD_FILE, WEIGHTS_FILE, winner_name

    uri = default_tracking_uri(tracking_uri)
    what = "--tracking-uri"
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).expanduser().is_file():
        raise InputError(f"{what}: no MLflow store at {shorten(uri, 160)} (run from the folder holding mlflow.db, "
                         f"or give --tracking-uri)")
    check_tracking_uri(uri, what)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InputError(f"--run: no run {shorten(repr(run_id))} in {shorten(uri, 160)}") from None
    if run.data.tags.get("slimnas.method") is None:  # the search job's run: pick the child
        children = client.search_runs([run.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{run.info.run_id}'", max_results=5000)
        known = {winner_name(c.data.tags["slimnas.method"], float(c.data.tags["slimnas.target_ms"])): c
                 for c in children if "slimnas.method" in c.data.tags and "slimnas.target_ms" in c.data.tags}
        if not known:
            raise InputError(f"--run: {run_id} is neither a winner's run nor a search job's run with winners")
        if method is None or target is None:
            raise InputError(f"--run: {run_id} is a search job's run: give --method and --target (its winners: "
                             f"{', '.join(sorted(known))})")
        chosen = known.get(winner_name(method, target))
        if chosen is None:
            raise InputError(f"--method/--target: no winner {winner_name(method, target)} in run {run_id} (its "
                             f"winners: {', '.join(sorted(known))})")
        run = chosen
    elif method is not None or target is not None:
        tags = run.data.tags
        if (method or tags["slimnas.method"]) != tags["slimnas.method"] or (
                target is not None and f"{target:g}" != tags.get("slimnas.target_ms")):
            raise InputError(f"--method/--target: run {run_id} is the winner "
                             f"{tags['slimnas.method']}@{tags.get('slimnas.target_ms')}ms")
    rid = run.info.run_id
    names = {a.path for a in client.list_artifacts(rid)}
    if CARD_FILE not in names or WEIGHTS_FILE not in names:
        raise InputError(f"--run: run {rid} has no winner artifacts ({CARD_FILE}, {WEIGHTS_FILE}); its search "
                         f"found no answer there")
    for name in (CARD_FILE, WEIGHTS_FILE):
        client.download_artifacts(rid, name, str(into))
    return into


def _export(args: argparse.Namespace) -> int:
    from slimnas.export import (
        check_export,
        export_winner,
        find_winner,
        job_dir_of,
        source_from_files,
        source_from_folder,
    )
    from slimnas.platform.runtime.preflight import check_output_dir

    _source_args(args)
    spec, out = check_export(args.format, args.out, args.force)
    check_output_dir(out.parent, "--out", shown_as=args.out)
    source: Any
    if args.job is not None:
        ref = find_winner(job_dir_of(args.job), args.method, args.target)
        source = source_from_folder(ref.folder)
    elif args.winner is not None:
        source = source_from_folder(args.winner)
    elif args.arch is not None:
        source = source_from_files(args.arch, args.weights, args.num_classes)
    else:
        with tempfile.TemporaryDirectory(prefix="slimnas-export-") as tmp:
            source = source_from_folder(_run_winner(args.run, args.tracking_uri, args.method, args.target,
                                                    Path(tmp)))
        source = dataclasses.replace(source, origin=f"MLflow run {args.run}")
    check_export(spec.name, out, args.force, source)  # the format takes this arch; its converter is here
    result = export_winner(source, spec.name, out, overwrite=args.force)
    for line in result.lines():
        print(line)
    return 0


def register(sub) -> None:
    from slimnas.export import FORMAT_NAMES, FORMATS

    p = sub.add_parser("export", help="export a search winner for deployment (torch, torch.export, ONNX, Core ML, "
                                      "timm)",
                       description=__doc__.splitlines()[0] + " Formats: " + "; ".join(
                           f"{f.name}: {f.summary}" for f in FORMATS.values()))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--job", help="a search job's output folder (or a pipeline's), with --method and --target")
    source.add_argument("--winner", help="a saved winner's folder (<job>/winners/<method>@<target>ms)")
    source.add_argument("--run", help="an MLflow run id: a winner's child run, or a search job's run (with --method "
                                      "and --target)")
    source.add_argument("--arch", help="an arch JSON file (or a winner's model.json), with --weights")
    p.add_argument("--method", help="the winner's search method, e.g. slimming")
    p.add_argument("--target", type=float_in(0, 1e9, low_open=True), help="the winner's latency target in ms")
    p.add_argument("--weights", help="a state_dict file (torch.load with weights_only=True), with --arch")
    p.add_argument("--num-classes", type=int_in(1, MAX_CLASSES), default=None,
                   help="the class count (default: read from the weights)")
    p.add_argument("--tracking-uri", default=None, help="the MLflow store of --run (default: $MLFLOW_TRACKING_URI, "
                                                        "else sqlite:///./mlflow.db)")
    p.add_argument("--format", required=True, choices=FORMAT_NAMES, help="the export format")
    p.add_argument("--out", required=True, help="where to write: a .onnx/.pt2/.mlpackage path, or a folder for "
                                                "torch and timm")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_export)

