"""``slimnas lut build | validate | show | explain | import-measurements``: latency lookup tables."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

from slimnas.errors import InputError
from slimnas.platform.commands._args import float_in, int_in
from slimnas.platform.commands._backend_flags import add_backend_flags, backend_settings
from slimnas.platform.commands.models import MAX_CLASSES
from slimnas.progress import ProgressLine


def _space(name: str, img_size: int | None):
    from slimnas.search_spaces import SearchSpace

    space = SearchSpace.preset(name)
    if img_size is not None and img_size != space.img_size:
        space = dataclasses.replace(space, img_size=img_size, name=f"{space.name}@{img_size}")
    return space


def protocol_from(args: argparse.Namespace, base=None):
    """The measurement protocol of the command line's ``--stat/--passes/...`` flags (unset flags: ``base``'s, or the
    defaults)."""
    from slimnas.latency.protocol import Protocol

    return (base or Protocol()).replace(
        statistic=getattr(args, "stat", None), passes=args.passes, samples=args.samples, pass_ms=args.pass_ms,
        warmup_ms=args.warmup_ms, tolerance=args.tolerance, extra_passes=args.extra_passes,
        quiet_passes=args.quiet_passes, settle_retries=args.settle_retries,
        reference_networks=args.reference_networks)


def _backend(args: argparse.Namespace):
    """The backend ``--backend`` names, with the settings its flags give (see :mod:`._backend_flags`)."""
    from slimnas.latency.backends import get_backend

    return get_backend(args.backend, **backend_settings(args))


def _build(args: argparse.Namespace) -> int:
    from slimnas.latency.builder import MAX_BATCH, build_table
    from slimnas.platform.runtime.preflight import check_batch_fits, check_output_dir, check_output_file

    if not 1 <= args.batch_size <= MAX_BATCH:
        raise InputError(f"--batch-size: must be from 1 to {MAX_BATCH}, got {args.batch_size}")
    out = Path(args.out)
    check_output_file(out, "--out")
    protocol = protocol_from(args)
    space = _space(args.space, args.img_size)
    backend = _backend(args)
    if backend.host_memory:
        check_batch_fits(args.batch_size, space.img_size, "--batch-size")
    if args.backend == "coreml" and backend.unavailable_reason() and backend.can_convert() is None:
        if not args.bundle:
            raise InputError(f"backend coreml: {backend.unavailable_reason()}")
        check_output_dir(args.bundle, "--bundle")
        return _write_bundle(args, space, backend)
    backend.check()
    if out.exists() and not args.force:
        raise InputError(f"lut: {out} exists; choose another --out or pass --force to replace it")
    from slimnas.latency.modules import resolve_rotation_mb

    if args.rotation_mb != "auto":
        resolve_rotation_mb(args.rotation_mb, space)
    if args.calibrate_networks is not None and not 0 <= args.calibrate_networks <= 100_000:
        raise InputError(f"--calibrate-networks: must be from 0 to 100000, got {args.calibrate_networks}")
    for name in ("cover", "max_networks"):
        if not 1 <= getattr(args, name) <= 100_000:
            raise InputError(f"--{name.replace('_', '-')}: must be from 1 to 100000, got {getattr(args, name)}")
    printer = ProgressLine("lut build")
    print(f"building {out}: space {space.name} at {space.img_size}px, {backend.name} on {backend.device_name()}, "
          f"batch {args.batch_size}, threads {backend.threads}", file=sys.stderr)
    table = build_table(space, backend, out, batch=args.batch_size, form=args.form, num_classes=args.num_classes,
                        protocol=protocol, rotation_mb=args.rotation_mb, harness=args.harness, cover=args.cover,
                        max_networks=args.max_networks, calibrate_networks=args.calibrate_networks,
                        fill=args.fill, keep_journal=args.keep_journal, resume=not args.no_resume,
                        overwrite=args.force, on_progress=printer)
    print(f"wrote {out}: {len(table)} entries ({table.meta.describe()})")
    return 0


def _write_bundle(args: argparse.Namespace, space, backend) -> int:
    from slimnas.latency.bundle import write_bundle
    from slimnas.latency.validate import validation_archs

    networks = validation_archs(space, args.num_networks, args.seed)
    manifest = write_bundle(space, args.bundle, batch=args.batch_size, compute_units=backend.compute_units,
                            form=args.form or "eager", num_classes=args.num_classes, networks=networks,
                            on_progress=ProgressLine("coreml bundle").count)
    print(f"wrote the Core ML benchmark bundle {manifest.parent} ({manifest}); time it on the device, then run "
          f"`slimnas lut import-measurements --bundle {args.bundle} --measurements FILE --out {args.out}`")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from slimnas.config import read_text_file
    from slimnas.latency.table import LatencyTable
    from slimnas.latency.validate import backend_for, compare_tables, validate_measured, validate_table
    from slimnas.platform.runtime.preflight import check_output_dir

    if not 0 <= args.num_archs <= 100_000:
        raise InputError(f"--num-archs: must be from 0 to 100000, got {args.num_archs}")
    table = LatencyTable.load(args.lut)
    out_dir = Path(args.out_dir or Path(args.lut).with_suffix("").as_posix() + "-validation")
    if not args.against:
        check_output_dir(out_dir, "--out-dir")
    if args.measurements:
        read_text_file(args.measurements, "--measurements", max_bytes=256 * 2**20)
    if args.against:
        other = LatencyTable.load(args.against)
        result = compare_tables(table, other, num_archs=args.num_archs, seed=args.seed)
        print(json.dumps({"against": args.against, **result}, indent=2))
        return 0
    if args.measurements:
        if not args.bundle:
            raise InputError("--bundle: needed with --measurements")
        from slimnas.latency.bundle import import_measurements

        _, networks = import_measurements(args.bundle, args.measurements, device=table.meta.device,
                                          allow_partial=True)
        if not networks:
            raise InputError(f"--measurements: no measured networks of the bundle in {args.measurements}")
        report = validate_measured(table, networks, args.calibrate_fraction, args.seed)
    else:
        if getattr(args, "stat", None) not in (None, table.stat):
            raise InputError(f"--stat: the table predicts the {table.stat}; validation measures that")
        protocol = protocol_from(args, table.meta.measurement_protocol())
        backend = backend_for(table)
        print(f"validating {args.lut} ({table.meta.describe()}) on {args.num_archs} random archs + presets",
              file=sys.stderr)
        report = validate_table(table, backend, num_archs=args.num_archs, seed=args.seed,
                                calibrate_fraction=args.calibrate_fraction, protocol=protocol,
                                on_progress=ProgressLine("lut validate"))
    paths = report.write(out_dir)
    print(json.dumps({"summary": report.summary, "files": {k: str(v) for k, v in paths.items()}}, indent=2))
    return 0


def _show(args: argparse.Namespace) -> int:
    from slimnas.latency.table import LatencyTable
    from slimnas.platform.commands.models import read_arch
    from slimnas.search_spaces import Arch

    table = LatencyTable.load(args.lut, stat=args.stat)
    info = {"meta": table.meta.to_dict(), "statistic": table.stat, "overhead_ms": table.meta.overhead_ms,
            "entries": len(table),
            "entries_by_kind": dict(Counter(p.kind for p in table.entries)),
            "missing_for_space": len(table.missing_for_space())}
    arch = None
    if args.preset:
        arch = Arch.preset(args.preset, img_size=table.meta.img_size, slots=table.space.slots,
                           family=table.space.family)
    elif args.arch:
        arch = read_arch(args.arch)
    if arch is not None:
        info["arch"] = str(arch)
        info["predicted_ms"] = table.predict(arch)
        info["breakdown_ms"] = [[str(p), round(v, 4)] for p, v in table.breakdown(arch)]
    print(json.dumps(info, indent=2))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from slimnas.latency.table import LatencyTable
    from slimnas.platform.commands.models import read_arch
    from slimnas.profile.explain import explain, format_explanation
    from slimnas.search_spaces import Arch

    table = LatencyTable.load(args.lut)
    if args.preset:
        try:
            arch = Arch.preset(args.preset, img_size=table.meta.img_size, slots=table.space.slots,
                               family=table.space.family)
        except ValueError as exc:
            raise InputError(f"--preset: {args.preset} does not fit the table's space {table.space.name} ({exc})"
                             ) from None
    else:
        arch = read_arch(args.arch)
    missing = table.missing(arch)  # also checks the input size
    if missing:
        raise InputError(f"--arch: the table has no entry for {missing[0]} ({len(missing)} parts missing)")
    protocol = protocol_from(args, table.meta.measurement_protocol())
    print(f"explaining {args.lut} ({table.meta.describe()}) for {arch}", file=sys.stderr)
    result = explain(table, arch, protocol, runs=args.runs, on_progress=ProgressLine("lut explain"))
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_explanation(result, args.top))
    return 0


def _import(args: argparse.Namespace) -> int:
    from slimnas.config import read_text_file
    from slimnas.latency.bundle import import_measurements
    from slimnas.platform.runtime.preflight import check_output_file

    out = Path(args.out)
    check_output_file(out, "--out")
    if out.exists() and not args.force:
        raise InputError(f"--out: {out} exists; pass --force to replace it")
    if Path(args.measurements).exists():  # a missing one is named by import_measurements, after the bundle
        read_text_file(args.measurements, "--measurements", max_bytes=256 * 2**20)
    table, networks = import_measurements(args.bundle, args.measurements, device=args.device,
                                          allow_partial=args.allow_partial)
    table.save(out)
    print(f"wrote {out}: {len(table)} entries ({table.meta.describe()}); {len(networks)} measured networks in the "
          f"bundle for `slimnas lut validate --lut {out} --bundle {args.bundle} --measurements {args.measurements}`")
    return 0


def _measurement_args(p: argparse.ArgumentParser, build: bool) -> None:
    """The protocol flags (see slimnas.latency.protocol); unset flags keep the defaults (build) or the table's."""
    from slimnas.latency.protocol import STATISTICS, Protocol

    d = Protocol()
    where = "default" if build else "default: the table's"
    if build:
        p.add_argument("--stat", choices=STATISTICS, default=None,
                       help=f"the statistic a latency is ({where}: {d.statistic}; see slimnas.latency.protocol)")
    p.add_argument("--passes", type=int, default=None, help=f"interleaved passes ({where}: {d.passes})")
    p.add_argument("--samples", type=int, default=None,
                   help=f"at least this many single-call samples per item and pass ({where}: {d.samples})")
    p.add_argument("--pass-ms", type=float, default=None,
                   help=f"at least this much sampling per item and pass ({where}: {d.pass_ms:g} ms)")
    p.add_argument("--warmup-ms", type=float, default=None, help=f"warm-up per item and pass ({where}: "
                   f"{d.warmup_ms:g} ms)")
    p.add_argument("--tolerance", type=float, default=None, help=f"a pass this far off the median of the item's "
                   f"passes is disturbed and dropped ({where}: {d.tolerance:g})")
    p.add_argument("--extra-passes", type=int, default=None,
                   help=f"most re-measurement passes for items with many disturbed passes ({where}: "
                        f"{d.extra_passes})")
    p.add_argument("--quiet-passes", type=int, default=None,
                   help=f"a latency pools this many passes of an item, those with the lowest statistic, 0: every "
                        f"accepted pass ({where}: {d.quiet_passes}; see slimnas.latency.protocol)")
    p.add_argument("--settle-retries", type=int, default=None,
                   help=f"a session of network timings disturbed throughout is measured again this many times at "
                        f"most ({where}: {d.settle_retries})")
    p.add_argument("--reference-networks", type=int, default=None,
                   help=f"fixed networks timed alongside for the machine's speed, 0: none ({where}: "
                        f"{d.reference_networks}; see slimnas.latency.reference)")


def register(sub) -> None:
    from slimnas.latency.context import FILLS

    lut = sub.add_parser("lut", help="latency lookup tables: build, validate, show, explain, import-measurements")
    lsub = lut.add_subparsers(dest="lut_command", required=True, parser_class=type(lut))

    p = lsub.add_parser("build", help="time every part of a space on a backend (resumable)")
    p.add_argument("--space", required=True, help="l7 | l3 | l1 | tiny")
    p.add_argument("--backend", required=True, help="torch-cpu | torch-cuda | onnxruntime | coreml | a plug-in's "
                   "(slimnas.registry.BACKENDS); its settings are flags (--backend NAME --help lists them)")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--img-size", type=int_in(32, 4096), default=None, help="input size (default: the space's)")
    p.add_argument("--form", choices=["fused", "eager"], default=None, help="module form (default: the backend's)")
    p.add_argument("--bundle", default=None, help="coreml off macOS: write a benchmark bundle to this folder")
    p.add_argument("--num-networks", type=int_in(0, 100_000), default=20,
                   help="coreml bundle: random validation networks")
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0)
    p.add_argument("--num-classes", type=int_in(1, MAX_CLASSES), default=1000)
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--no-resume", action="store_true", help="ignore (and replace) an interrupted build's journal")
    p.add_argument("--keep-journal", action="store_true", help="keep the finished build's journal (every sample) as "
                   "OUT.journal.jsonl")
    p.add_argument("--rotation-mb", default="auto", help="parts timed alone: rotate copies with this many MiB of "
                   "weights, so weights come from memory as inside a network; 'auto': the space's largest network's "
                   "weights, at most 32 (see slimnas.latency.modules)")
    p.add_argument("--harness", choices=["context", "isolated"], default=None, help="where parts are timed: inside "
                   "covering networks, or each alone (default: context where the backend can; see "
                   "slimnas.latency.context)")
    p.add_argument("--cover", type=int, default=2, help="context: each part in this many covering networks")
    p.add_argument("--max-networks", type=int, default=96, help="context: at most this many covering networks "
                   "(parts left out get entries as --fill says)")
    p.add_argument("--fill", choices=list(FILLS), default="fitted", help="context: entries of parts no covering "
                   "network holds, fitted on the covered parts of their kind and stage, or timed alone and scaled "
                   "(isolated; slower). Default: fitted")
    p.add_argument("--calibrate-networks", type=int, default=None, help="whole networks timed to calibrate the "
                   "table's predictor, per part when at least as many as the parts (default when parts are timed "
                   "alone: 1.4 per part up to 300 parts, else 24; 0 in context)")
    _measurement_args(p, build=True)
    add_backend_flags(p)  # --threads, --dtype, --provider, ...: the named backend's settings model
    p.set_defaults(func=_build, full_command="lut build")

    p = lsub.add_parser("validate", help="compare a table with measured whole networks")
    p.add_argument("--lut", required=True)
    p.add_argument("--num-archs", type=int, default=50)
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0)
    p.add_argument("--calibrate-fraction", type=float_in(0, 1), default=0.3, help="share of random archs fitting the "
                   "calibrated predictor (the rest and the presets are held out)")
    p.add_argument("--out-dir", default=None, help="where the CSV, PNG and JSON go (default: next to the table)")
    p.add_argument("--bundle", default=None, help="coreml: the bundle whose networks were measured")
    p.add_argument("--measurements", default=None, help="coreml: the device's measurements file")
    p.add_argument("--against", default=None, help="another table of the space: report how far the two tables' "
                   "predictions disagree on --num-archs random archs (repeatability), instead of measuring")
    p.add_argument("--stat", default=None, help=argparse.SUPPRESS)
    _measurement_args(p, build=False)
    p.set_defaults(func=_validate, full_command="lut validate")

    p = lsub.add_parser("show", help="a table's metadata, completeness, and an arch's predicted latency")
    p.add_argument("--lut", required=True)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", help="predict a preset (l1 | l3 | l7) at the table's input size")
    group.add_argument("--arch", help="predict an arch from a JSON file")
    p.add_argument("--stat", default=None, help="predict with another statistic than the table's protocol's "
                   "(median | mean | p25 | p10 | p90 | min)")
    p.set_defaults(func=_show, full_command="lut show")

    p = lsub.add_parser("explain", help="an arch's parts: the table's entries next to their measured in-network time")
    p.add_argument("--lut", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--arch", help="an arch JSON file")
    group.add_argument("--preset", help="a preset (l1 | l3 | l7) at the table's input size")
    p.add_argument("--runs", type=int_in(1, 10_000), default=20, help="onnxruntime: profiled calls (default: 20)")
    p.add_argument("--top", type=int_in(1, 1000), default=3, help="name this many parts with the largest errors")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    _measurement_args(p, build=False)
    p.set_defaults(func=_explain, full_command="lut explain")

    p = lsub.add_parser("import-measurements", help="a table from a Core ML bundle and the device's measurements")
    p.add_argument("--bundle", required=True)
    p.add_argument("--measurements", required=True, help="JSON or CSV measurements file")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default=None, help="device name (if the measurements file does not give it)")
    p.add_argument("--allow-partial", action="store_true", help="accept measurements that miss some parts")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_import, full_command="lut import-measurements")
