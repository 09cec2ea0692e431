"""The pipeline's table stage: the lookup table of the supernet's space, built and validated, here or on a Ray node.

``latency.resources: null`` measures in this process (the quickstart: ``torch-cpu``); a mapping measures in one Ray
task with those resources (e.g. ``{"GPU": 1, "accelerator_type:V100": 0.01}``), on the device the table is for, and
the table and its validation files come back to the driver, which writes them (atomically) where the config says.
A new table and its validation replace the old ones together, once both are made (:func:`measure`): a build or
validation that fails leaves the earlier ones as they were.

Reuse: an existing table is used when it was measured with the settings the config asks for (backend, batch, dtype,
input size, threads, space, form, classes, backend options (weight rotation included), measurement protocol, harness
and cover; and, when measured here, the same device). A table measured under other settings is never replaced
silently: the stage stops with one line naming the first difference (``--force table`` rebuilds it). A validation is
reused when it belongs to this very table (same creation time) and was made with the same number of networks and
seed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimnas._io import atomic_write_bytes
from slimnas.errors import InputError
from slimnas.latency import LatencyTable
from slimnas.platform.pipeline.config import PipelineLatencySection
from slimnas.search_spaces import SearchSpace

__all__ = ["expected_settings", "reusable_table", "validation_is_current", "measure", "measure_on_ray", "staged_path",
           "publish_validation"]

_SETTINGS = ("backend", "batch", "dtype", "img_size", "threads", "space", "form", "num_classes", "in_chans",
             "options", "protocol", "harness")


def _backend(lat: PipelineLatencySection):
    from slimnas.latency.backends import get_backend

    return get_backend(lat.backend, **lat.backend_settings())


def expected_settings(lat: PipelineLatencySection, space: SearchSpace, num_classes: int) -> dict[str, Any]:
    """What a table made from ``lat`` records about itself (without the device)."""
    from slimnas.latency.backends import table_options
    from slimnas.latency.builder import calibration_archs, resolve_calibrate_networks, resolve_harness
    from slimnas.latency.modules import resolve_rotation_mb

    backend = _backend(lat)
    form = lat.form or backend.default_form
    harness = resolve_harness(lat.harness, backend)
    options = table_options(backend, resolve_rotation_mb(lat.rotation_mb, space, form, num_classes))
    networks = resolve_calibrate_networks(lat.calibrate_networks, space, harness, num_classes)
    return {"backend": backend.name, "batch": lat.batch, "dtype": backend.dtype, "img_size": space.img_size,
            "threads": backend.threads, "space": space.to_dict(), "form": form, "num_classes": num_classes,
            "in_chans": 3, "options": options, "protocol": lat.protocol.protocol().to_dict(), "harness": harness,
            "cover": lat.cover if harness == "context" else None,
            "max_networks": lat.max_networks if harness == "context" else None,
            "fill": lat.fill if harness == "context" else None,
            "calibrate_networks": len(calibration_archs(space, networks)) if networks else 0}


def _recorded_settings(table: LatencyTable) -> dict[str, Any]:
    meta = table.meta
    settings = {k: getattr(meta, k) for k in _SETTINGS}
    # as the protocol is read back (a table recorded before ``quiet_passes`` pooled every accepted pass)
    settings["protocol"] = meta.measurement_protocol().to_dict()
    settings.update({k: meta.notes.get(k) for k in ("cover", "max_networks", "fill")})
    settings["calibrate_networks"] = (meta.calibration or {}).get("networks", 0)
    return json.loads(json.dumps(settings))


def reusable_table(lat: PipelineLatencySection, path: Path, space: SearchSpace,
                   num_classes: int) -> LatencyTable | None:
    """The table at ``path`` when it matches ``lat``; ``None`` when there is none; ``InputError`` when it differs."""
    if not path.is_file():
        return None
    table = LatencyTable.load(path)
    want = json.loads(json.dumps(expected_settings(lat, space, num_classes)))
    have = _recorded_settings(table)
    for settings in (want, have):  # how network timings are retried is no part of how the table was measured
        settings["protocol"].pop("settle_retries", None)
    if lat.resources is None:
        want["device"], have["device"] = _backend(lat).device_name(), table.meta.device
    for key in want:
        if want[key] != have.get(key):
            name, old, new = key, have.get(key), want[key]
            if isinstance(old, dict) and isinstance(new, dict):  # name the first differing field inside
                name, old, new = next((f"{key}.{k}", old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                                      if old.get(k) != new.get(k))
            shown = "another space" if key == "space" else f"{name} {old!r}, the config asks for {new!r}"
            raise InputError(f"latency.table: {path} was measured with {shown}; pass --force table to rebuild it, "
                             f"or set latency.table to another file")
    return table


def validation_is_current(lat: PipelineLatencySection, table: LatencyTable, folder: Path) -> dict[str, Any] | None:
    """The summary of the validation in ``folder`` if it belongs to ``table`` and matches ``lat.validate``."""
    from slimnas.latency.validate import validation_archs

    file = folder / "validation.json"
    if not file.is_file():
        return None
    try:
        report = json.loads(file.read_text())
    except json.JSONDecodeError:
        return None
    meta, v = report.get("meta", {}), lat.validate_
    networks = len(validation_archs(table.space, v.num_archs, v.seed))
    if (meta.get("created"), meta.get("seed"), meta.get("num_networks")) != (table.meta.created, v.seed, networks):
        return None
    return report.get("summary")


def staged_path(path: Path) -> Path:
    """Where a table (or a validation folder) is made before it replaces ``path``: ``.<name>.staged`` beside it."""
    return path.with_name(f".{path.name}.staged")


def publish_validation(staged: Path, folder: Path) -> None:
    """Put the validation files made in ``staged`` in place of ``folder``'s (the old folder is removed last)."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staged.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def measure(lat: PipelineLatencySection, space: SearchSpace, num_classes: int, table_path: Path,
            validation_dir: Path, build: bool, validate: bool, fresh: bool = False,
            on_progress: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Build the table at ``table_path`` (``build``; ``fresh`` ignores an interrupted build's journal) and/or
    validate it into ``validation_dir``. ``on_progress(step, Progress)``. Returns the validation summary (or {}).

    Nothing is replaced before everything is made: a new table is built (its journal beside it) at
    :func:`staged_path` and validated into a staged folder; only then do both take the old ones' places. A build or
    validation that fails or is killed leaves the earlier table and validation as they were (and a killed build's
    journal, which the next build resumes from)."""
    from slimnas.latency import build_table, validate_table

    def progress(step: str):
        return None if on_progress is None else (lambda p: on_progress(step, p))

    target = staged_path(table_path) if build else table_path
    if build:
        table = build_table(space, _backend(lat), target, batch=lat.batch, form=lat.form,
                            num_classes=num_classes, protocol=lat.protocol.protocol(), rotation_mb=lat.rotation_mb,
                            harness=lat.harness, cover=lat.cover, max_networks=lat.max_networks,
                            calibrate_networks=lat.calibrate_networks, fill=lat.fill, resume=not fresh,
                            overwrite=True, on_progress=progress("table"))
    else:
        table = LatencyTable.load(table_path)
    summary: dict[str, Any] = {}
    folder = staged_path(validation_dir)
    if validate:
        v = lat.validate_
        report = validate_table(table, _backend(lat), num_archs=v.num_archs, seed=v.seed,
                                calibrate_fraction=v.calibrate_fraction, on_progress=progress("validate"))
        shutil.rmtree(folder, ignore_errors=True)
        report.write(folder)
        summary = report.summary
    if build:
        os.replace(target, table_path)
    if validate:
        publish_validation(folder, validation_dir)
    return summary


def _measure_remote(lat: dict[str, Any], space: dict[str, Any], num_classes: int, table: bytes | None,
                    build: bool, validate: bool) -> dict[str, Any]:
    """The Ray task: measure in a temporary folder and return the files' bytes."""
    from slimnas.progress import ProgressLine

    printers = {"table": ProgressLine("table", echo=print), "validate": ProgressLine("validate", echo=print,
                                                                                      what="network passes")}
    with tempfile.TemporaryDirectory(prefix="slimnas-lut-") as tmp:
        table_path, folder = Path(tmp) / "table.parquet", Path(tmp) / "validation"
        if table is not None:
            LatencyTable.from_bytes(table).save(table_path)
        summary = measure(PipelineLatencySection.model_validate(lat), SearchSpace.from_dict(space), num_classes,
                          table_path, folder, build, validate, fresh=True,
                          on_progress=lambda step, p: printers[step](p))
        files = {f.name: f.read_bytes() for f in folder.iterdir()} if folder.is_dir() else {}
        return {"table": table_path.read_bytes(), "files": files, "summary": summary}


def measure_on_ray(lat: PipelineLatencySection, space: SearchSpace, num_classes: int, table_path: Path,
                   validation_dir: Path, build: bool, validate: bool,
                   heartbeat: Callable[[float], None] | None = None) -> dict[str, Any]:
    """:func:`measure` in a Ray task placed by ``lat.resources``; the results are written here, atomically."""
    import time

    import ray

    resources = dict(lat.resources or {})
    options = {"num_cpus": resources.pop("CPU", 1), "num_gpus": resources.pop("GPU", 0), "max_retries": 1}
    if resources:
        options["resources"] = resources
    table = None if build else table_path.read_bytes()
    task = ray.remote(_measure_remote).options(**options)
    ref = task.remote(lat.model_dump(by_alias=True), space.to_dict(), num_classes, table, build, validate)
    start = time.perf_counter()
    while not ray.wait([ref], timeout=30.0)[0]:
        if heartbeat is not None:
            heartbeat(time.perf_counter() - start)
    out = ray.get(ref)
    folder = staged_path(validation_dir)  # both replace the old ones only once everything is here
    shutil.rmtree(folder, ignore_errors=True)
    for name, data in out["files"].items():
        atomic_write_bytes(folder / name, data)
    if build:
        LatencyTable.from_bytes(out["table"]).save(table_path)
    if out["files"]:
        publish_validation(folder, validation_dir)
    return out["summary"]
