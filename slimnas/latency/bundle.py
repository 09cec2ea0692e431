"""Core ML benchmark bundles: measure on an iPhone what cannot be measured here.

The paper's latencies come from Core ML on an iPhone 12 (Sec. 5). Where Core ML models cannot be timed (anything but
macOS), ``write_bundle`` converts every table part, plus a set of whole networks for validation, to ``.mlpackage``
files and writes a ``manifest.json``. The user times each package on the device (Xcode's Core ML performance report,
or a small app) and writes a measurements file; ``import_measurements`` turns it into a :class:`LatencyTable` (and the
network measurements into a validation report).

Bundle layout::

    DIR/manifest.json            format, the table metadata, and one record per part and per network
    DIR/parts/<id>.mlpackage     one per table entry (input name "input", output name "output")
    DIR/networks/<id>.mlpackage  one per validation network
    DIR/README.md                what to measure and the measurements file format

Measurements file (JSON)::

    {"device": "iPhone 12 (A14), iOS 17.1", "results": {"<id>": {"median_ms": 0.41, "mean_ms": 0.43,
     "p10_ms": 0.39, "p90_ms": 0.47, "std_ms": 0.02, "count": 1000}, ...}}

or CSV with columns ``id, median_ms`` and optionally ``mean_ms, p10_ms, p90_ms, std_ms, count`` (the device is then
given on the command line). Only ``median_ms`` is required; missing statistics default to the median (std 0).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimnas.config import atomic_write_text, read_json_file
from slimnas.errors import InputError
from slimnas.search_spaces import Arch, SearchSpace

from ._parts import Part, parts_of_space
from ._timing import Timing
from .table import LatencyTable, TableMeta

__all__ = ["write_bundle", "read_manifest", "read_measurements", "import_measurements", "BUNDLE_FORMAT"]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "slimnas-coreml-bundle"
_README = """# slimnas Core ML benchmark bundle

Time every package under `parts/` and `networks/` on the target device with the compute units named in
`manifest.json` (`meta.notes.compute_units`), batch {batch}, and write a measurements file:

```json
{{"device": "iPhone 12 (A14), iOS 17.1",
 "results": {{"<id>": {{"median_ms": 0.41, "mean_ms": 0.43, "p10_ms": 0.39, "p90_ms": 0.47, "std_ms": 0.02,
                       "count": 1000}}}}}}
```

(`<id>` is the package name without `.mlpackage`; only `median_ms` is required.) Then:

    slimnas lut import-measurements --bundle THIS_DIR --measurements measurements.json --out table.parquet

Each package has one input named `input` (shape in `manifest.json`) and one output named `output`.
"""


def _part_id(part: Part) -> str:
    return f"{part.kind}-s{part.stage}-{part.c_in}-{part.c_out}"


def write_bundle(
    space: SearchSpace,
    out_dir: str | os.PathLike,
    batch: int = 1,
    compute_units: str = "all",
    form: str = "eager",
    num_classes: int = 1000,
    networks: Sequence[tuple[str, Arch]] = (),
    parts: Sequence[Part] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Convert every part (and ``networks``) to Core ML packages under ``out_dir``; returns the manifest path.

    Conversion resumes: packages already in ``out_dir`` are kept. The manifest is written last, atomically.
    """
    from .backends import CoreMLBackend
    from .modules import network_module, part_module

    backend = CoreMLBackend(compute_units=compute_units)
    reason = backend.can_convert()
    if reason:
        raise InputError(f"backend coreml: {reason}")
    root = Path(out_dir)
    (root / "parts").mkdir(parents=True, exist_ok=True)
    (root / "networks").mkdir(parents=True, exist_ok=True)
    todo = list(parts) if parts is not None else parts_of_space(space, num_classes)
    total = len(todo) + len(networks)
    records, nets = [], []
    for i, part in enumerate(todo, start=1):
        ident = _part_id(part)
        module, example = part_module(part, space.img_size, batch, form, family=space.family)
        _convert(backend, module, example, root / "parts" / f"{ident}.mlpackage")
        records.append({"id": ident, "kind": part.kind, "stage": part.stage, "c_in": part.c_in,
                        "c_out": part.c_out, "file": f"parts/{ident}.mlpackage", "input_shape": list(example.shape)})
        if on_progress:
            on_progress(i, total, str(part))
    for j, (name, arch) in enumerate(networks, start=1):
        ident = f"net-{j:03d}-{name}"
        module, example = network_module(arch, batch, form, num_classes)
        _convert(backend, module, example, root / "networks" / f"{ident}.mlpackage")
        nets.append({"id": ident, "name": name, "arch": arch.to_dict(), "file": f"networks/{ident}.mlpackage",
                     "input_shape": list(example.shape)})
        if on_progress:
            on_progress(len(todo) + j, total, name)
    meta = TableMeta(backend="coreml", device="", batch=batch, dtype="float32", img_size=space.img_size,
                     threads=None, space=space.to_dict(), form=form, num_classes=num_classes,
                     options=backend.options(), versions=backend.versions(),
                     notes={"compute_units": compute_units})
    manifest = {"format": BUNDLE_FORMAT, "version": 1, "meta": meta.to_dict(), "parts": records, "networks": nets}
    atomic_write_text(root / "README.md", _README.format(batch=batch))
    return atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=1))


def _convert(backend, module, example, path: Path) -> None:
    if path.exists():
        return
    tmp = path.with_name(f".tmp-{path.name}")  # Core ML requires the .mlpackage extension
    shutil.rmtree(tmp, ignore_errors=True)
    backend.convert(module, example).save(str(tmp))
    os.replace(tmp, path)


def read_manifest(bundle: str | os.PathLike) -> dict[str, Any]:
    path = Path(bundle) / "manifest.json"
    if not path.is_file():
        raise InputError(f"--bundle: no manifest.json in {bundle}")
    return read_json_file(path, "--bundle", BUNDLE_FORMAT, "slimnas Core ML bundle manifest")


def read_measurements(path: str | os.PathLike) -> tuple[str | None, dict[str, Timing]]:
    """``(device, {id: timing})`` from a JSON or CSV measurements file."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"--measurements: no such file {file}")
    text = file.read_text()
    device: str | None = None
    if file.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "id" not in rows[0] or "median_ms" not in rows[0]:
            raise InputError(f"--measurements: {file} needs the columns 'id' and 'median_ms'")
        raw = {row["id"]: row for row in rows}
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise InputError(f"--measurements: {file} is neither valid JSON nor a .csv file") from None
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise InputError(f"--measurements: {file} needs a 'results' mapping of id -> timings")
        device = data.get("device")
        raw = data["results"]
    def number(row: dict, key: str, default: float) -> float:
        return float(row[key]) if row.get(key) not in (None, "") else default

    results = {}
    for ident, row in raw.items():
        try:
            median = float(row["median_ms"])
            timing = Timing(median=median, mean=number(row, "mean_ms", median), p10=number(row, "p10_ms", median),
                            p90=number(row, "p90_ms", median), std=number(row, "std_ms", 0.0),
                            count=int(number(row, "count", 1)))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"--measurements: {file}: entry {ident!r} needs a numeric 'median_ms'") from None
        if not median > 0:
            raise InputError(f"--measurements: {file}: entry {ident!r} has a non-positive median_ms")
        results[str(ident)] = timing
    return device, results


def import_measurements(bundle: str | os.PathLike, measurements: str | os.PathLike, device: str | None = None,
                        allow_partial: bool = False) -> tuple[LatencyTable, list[tuple[str, Arch, Timing]]]:
    """The table (and measured validation networks) from a bundle and the device's measurements file."""
    manifest = read_manifest(bundle)
    measured_device, results = read_measurements(measurements)
    device = device or measured_device
    if not device:
        raise InputError("--device: name the device the measurements come from (the file does not)")
    entries: dict[Part, Timing] = {}
    missing = []
    for record in manifest["parts"]:
        part = Part(record["kind"], record["stage"], record["c_in"], record["c_out"])
        if record["id"] in results:
            entries[part] = results[record["id"]]
        else:
            missing.append(record["id"])
    if missing and not allow_partial:
        raise InputError(f"--measurements: no timing for {len(missing)} part(s) of the bundle, e.g. {missing[0]!r}")
    known = {r["id"] for r in manifest["parts"]} | {n["id"] for n in manifest["networks"]}
    unknown = sorted(set(results) - known)
    if unknown:
        raise InputError(f"--measurements: {unknown[0]!r} is not in the bundle ({len(unknown)} unknown id(s))")
    import datetime as dt

    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    meta = TableMeta.from_dict({**manifest["meta"], "device": device, "created": created})
    networks = [(n["name"], Arch.from_dict(n["arch"]), results[n["id"]])
                for n in manifest["networks"] if n["id"] in results]
    return LatencyTable(entries, meta), networks
