"""``slimnas profile MODEL [MODEL ...]``: where a network's latency goes, operator category by category and block by
block, on this machine (the EfficientFormer paper's latency analysis, Section 3 and Fig. 2). See
:mod:`slimnas.profile`."""

from __future__ import annotations

import argparse
import datetime
import difflib
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimnas.errors import InputError, shorten
from slimnas.platform.commands._args import int_in

if TYPE_CHECKING:
    from slimnas.profile.sources import ModelSource

#: The most calls profiled per model (``--runs``).
MAX_RUNS = 10_000


def resolve_source(spec: str, img_size: int | None = None) -> ModelSource:
    """The :class:`~slimnas.profile.sources.ModelSource` a MODEL argument names: a winner folder, an arch JSON file,
    a preset or a timm model name, in that order; :class:`InputError` naming it when it is none of them."""
    from slimnas.platform.commands.models import read_arch
    from slimnas.profile.sources import ModelSource  # noqa: F811 - the runtime import of the annotation's class
    from slimnas.search_spaces import DEFAULT_FAMILY, Arch, get_family

    path = Path(spec)
    if path.is_dir():
        from slimnas.winners import CARD_FILE, ModelCard

        card = ModelCard.load(path / CARD_FILE)
        return ModelSource(spec, "winner", card.arch)
    if spec.endswith(".json") or path.is_file():
        return ModelSource(spec, "arch", read_arch(spec, "MODEL"))
    presets = get_family(DEFAULT_FAMILY).arch_presets
    if spec.lower() in presets:
        return ModelSource(spec, "preset", Arch.preset(spec, img_size=img_size or 224))
    import timm

    if timm.is_model(spec):
        return ModelSource(spec, "timm")
    close = difflib.get_close_matches(spec, timm.list_models(), n=3, cutoff=0.75)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(f"MODEL {shorten(spec)!r}: not a timm model name, a slimnas preset ({' | '.join(sorted(presets))})"
                     f", an arch JSON file or a winner folder{hint}")


def _check_backend(args: argparse.Namespace):
    from slimnas.latency.backends import get_backend
    from slimnas.profile.run import PROFILED_BACKENDS

    if args.backend not in PROFILED_BACKENDS:
        raise InputError(f"--backend: cannot profile on {args.backend!r} (profiled backends: "
                         f"{', '.join(PROFILED_BACKENDS)})")
    settings: dict[str, Any] = {}
    if args.threads is not None:
        if args.backend == "torch-cuda":
            raise InputError("--threads: not a setting of backend torch-cuda")
        settings["threads"] = args.threads
    backend = get_backend(args.backend, **settings)
    backend.check()  # e.g. torch-cuda without a GPU: one line, exit 2
    return backend


def _profile(args: argparse.Namespace) -> int:
    from slimnas.latency.builder import MAX_BATCH
    from slimnas.platform.commands.lut import protocol_from
    from slimnas.platform.runtime.preflight import check_output_dir

    backend = _check_backend(args)
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise InputError(f"--batch-size: must be from 1 to {MAX_BATCH}, got {args.batch_size}")
    protocol = protocol_from(args)
    sources = [resolve_source(spec, args.img_size) for spec in args.models]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise InputError(f"MODEL: two models are named {next(n for n in names if names.count(n) > 1)!r}")
    if args.out:
        check_output_dir(args.out, "--out")
    if args.mlflow_experiment is None and args.tracking_uri:
        raise InputError("--tracking-uri: needs --mlflow-experiment")

    from slimnas.profile.records import ProfileReport
    from slimnas.profile.run import profile_model

    profiles = []
    for source in sources:
        print(f"profiling {source.name} on {backend.name} ({backend.device_name()}, threads {backend.threads}, "
              f"batch {args.batch_size})", file=sys.stderr)
        profile = profile_model(source, backend, runs=args.runs, protocol=protocol, batch=args.batch_size,
                                img_size=args.img_size, form=args.form)
        profiles.append(profile)
        print(_describe(profile, args.top))
    report = ProfileReport(backend=backend.name, device=backend.device_name(),
                           created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           command=_command(args), protocol=protocol.to_dict(),
                           versions=backend.versions(), models=tuple(profiles))
    paths = _write(report, Path(args.out)) if args.out else {}
    if args.mlflow_experiment:
        _log_mlflow(report, paths, args.mlflow_experiment, args.tracking_uri)
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces the report (models and the settings that change the numbers)."""
    words = ["slimnas", "profile", *args.models, "--backend", args.backend, "--runs", str(args.runs)]
    for flag, value in (("--threads", args.threads), ("--img-size", args.img_size), ("--form", args.form)):
        if value is not None:
            words += [flag, str(value)]
    if args.batch_size != 1:
        words += ["--batch-size", str(args.batch_size)]
    return shlex.join(words)


def _describe(p, top: int) -> str:
    """A model's breakdown as text: categories, blocks, and the whole-network check."""
    from slimnas.profile.categories import LABELS

    lines = [f"== {p.model} ({p.source}, {p.form}) on {p.backend}, {p.img_size}px, batch {p.batch}",
             f"   measured {p.measured_ms:.3f} ms ({p.statistic} under the protocol, pass spread "
             f"{p.measured_spread:.1%}); categories sum {p.profiled_ms:.3f} ms, {p.agreement:+.1%} from the "
             f"unprofiled calls between the profiled ones ({p.unprofiled_ms:.3f} ms); a profiled call took "
             f"{p.profiled_wall_ms:.3f} ms (profiler overhead {p.profiler_overhead_ms:+.3f} ms); {p.runs} calls "
             f"profiled, {p.dropped_runs} dropped as disturbed"]
    if p.cost is not None:
        lines.append(f"   profiler overhead removed: {p.overhead_removed_ms:.3f} ms per call "
                     f"({p.cost.per_event_us:.2f} us x {p.events_per_call:.0f} operator events"
                     + (f", {p.cost.per_scope_us:.2f} us x {p.scopes_per_call:.0f} unit scopes" if p.scopes_per_call
                        else "") + f"; {p.cost.how})")
    for row in p.categories:
        lines.append(f"   {LABELS[row.category]:<30} {row.ms:9.3f} ms {row.share:7.1%}")
    lines.append("   by block:")
    for row in p.blocks:
        where = f"S{row.stage + 1}" if row.stage is not None else ""
        lines.append(f"   {where:>8} {row.block:<18} {row.type_name:<22} {row.ms:9.3f} ms {row.share:7.1%}")
    if p.unknown_ops:
        lines.append(f"   other (no category): {', '.join(p.unknown_ops[:top])}"
                     + (f" and {len(p.unknown_ops) - top} more" if len(p.unknown_ops) > top else ""))
    return "\n".join(lines)


def _write(report, out: Path) -> dict[str, Path]:
    """CSV, JSON and the figure into ``out`` (the figure rendered before anything is written)."""
    import io

    import matplotlib.pyplot as plt

    from slimnas._io import atomic_write_bytes
    from slimnas.profile.figure import breakdown_figure
    from slimnas.profile.records import write_report

    fig = breakdown_figure(report.models, f"{report.backend} on {report.device}, {report.created}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    plt.close(fig)
    paths = write_report(report, out)
    paths["figure"] = atomic_write_bytes(out / "breakdown.png", buffer.getvalue())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return paths


def _log_mlflow(report, paths: dict[str, Path], experiment: str, uri: str | None) -> None:
    """One run per ``slimnas profile``: per model and category ``<model>.<category>_ms`` metrics, the measured
    latencies, and the files as artifacts."""
    import re

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from slimnas.platform.tracking.store import default_tracking_uri, ensure_experiment

    uri = uri or default_tracking_uri()
    client = MlflowClient(uri)
    run = client.create_run(ensure_experiment(uri, experiment), run_name=f"profile {report.backend}",
                            tags={"slimnas.kind": "profile"})
    rid = run.info.run_id

    def key(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", text)

    metrics = []
    for p in report.models:
        metrics.append(Metric(key(f"{p.model}.measured_ms"), p.measured_ms, 0, 0))
        metrics.append(Metric(key(f"{p.model}.profiled_ms"), p.profiled_ms, 0, 0))
        metrics.append(Metric(key(f"{p.model}.overhead_removed_ms"), p.overhead_removed_ms, 0, 0))
        metrics += [Metric(key(f"{p.model}.{r.category}_ms"), r.ms, 0, 0) for r in p.categories]
    params = [Param("backend", report.backend), Param("device", report.device[:500]),
              Param("models", ",".join(p.model for p in report.models)[:6000])]
    for start in range(0, len(metrics), 500):
        client.log_batch(rid, metrics=metrics[start:start + 500], params=params if start == 0 else [])
    for path in paths.values():
        client.log_artifact(rid, str(path), "profile")
    client.set_terminated(rid, "FINISHED")
    print(f"logged MLflow run {rid} in experiment {experiment!r} at {uri}")


def register(sub) -> None:
    from slimnas.platform.commands.lut import _measurement_args

    p = sub.add_parser("profile", help="latency breakdown of networks by operator category and by block")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="a timm model name (random weights), a slimnas preset (l1 | l3 | l7), an arch JSON file or a "
                        "search job's winner folder")
    p.add_argument("--backend", default="torch-cpu", help="torch-cpu | torch-cuda | onnxruntime (default: torch-cpu)")
    p.add_argument("--threads", type=int_in(1, 4096), default=None, help="CPU threads (default: torch's setting)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--img-size", type=int_in(16, 4096), default=None,
                   help="input size (timm models and presets; default: the model's own)")
    p.add_argument("--form", choices=["fused", "eager"], default=None,
                   help="slimnas networks' module form (default: the backend's, as in its latency tables)")
    p.add_argument("--runs", type=int_in(1, MAX_RUNS), default=20, help="profiled calls per model (default: 20)")
    p.add_argument("--out", default=None, help="write categories.csv, blocks.csv, profile.json and breakdown.png here")
    p.add_argument("--top", type=int_in(1, 1000), default=20, help="name at most this many unknown operators")
    p.add_argument("--mlflow-experiment", default=None, help="log the breakdown to this MLflow experiment")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///./mlflow.db)")
    _measurement_args(p, build=True)
    p.set_defaults(func=_profile)
