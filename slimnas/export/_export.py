""":func:`export_winner`: check, write in a staging folder, rename into place."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimnas.errors import InputError, shorten

from ._check import Check
from ._formats import EXPORT_FORMAT, ExportFormat, get_format
from ._source import ExportSource

__all__ = ["ExportResult", "export_winner", "check_export", "export_metadata", "module_in_form"]

#: The module forms an export can take (see :mod:`slimnas.latency.modules`).
FORMS = ("eager", "fused")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_winner` wrote: the format, the path (a file, or a folder for ``torch``, ``timm`` and
    ``coreml``'s package), the module form exported, the input it takes (``batch`` ``"dynamic"`` or a number), the
    files written, their total size, how the export was checked, and the seconds it took."""

    format: str
    path: Path
    form: str
    input_shape: tuple[int, int, int]  # channels, height, width
    batch: str
    files: tuple[str, ...]
    size_bytes: int
    check: Check
    seconds: float

    def lines(self) -> list[str]:
        """What the CLI prints: where, what, how it was checked (or the one line saying why it was not run)."""
        c, h, w = self.input_shape
        out = [f"wrote {self.path} ({self.format}, {self.form} form, input float32 ({self.batch}, {c}, {h}, {w}), "
               f"{self.size_bytes / 2**20:.1f} MiB, {self.seconds:.1f} s)"]
        if self.check.max_abs_diff is not None:
            out.append(f"checked: {self.check.on}: outputs within {self.check.max_abs_diff:.2g} of the network's")
        if self.check.note:
            out.append(f"note: {self.check.note}")
        return out


def export_metadata(source: ExportSource, fmt: ExportFormat, form: str) -> dict[str, Any]:
    """What every export records about itself (JSON): the network (family, arch, class count, input), the form and
    format, where it came from, the slimnas version, and the winner's model card (``None`` for plain files)."""
    import slimnas

    c, s = source.in_chans, source.img_size
    return {"format": EXPORT_FORMAT, "exported_as": fmt.name, "form": form, "family": source.arch.family,
            "arch": source.arch.to_dict(), "num_classes": source.num_classes, "in_chans": c, "img_size": s,
            "input": {"name": "input", "dtype": "float32", "shape": ["batch", c, s, s]},
            "output": {"name": "output", "dtype": "float32", "shape": ["batch", source.num_classes]},
            "source": source.origin, "slimnas_version": slimnas.__version__,
            "model_card": None if source.card is None else source.card.to_dict()}


def module_in_form(source: ExportSource, form: str) -> Any:
    """The network in ``form``: ``eager`` (the ``build_model`` network itself) or ``fused`` (its family's deployment
    form, :meth:`~slimnas.search_spaces.SpaceFamily.deploy`)."""
    if form not in FORMS:
        raise InputError(f"form: expected one of {FORMS}, got {shorten(repr(form))}")
    return source.model if form == "eager" else source.arch.space_family.deploy(source.model)


def check_export(fmt: str, out: str | os.PathLike, overwrite: bool = False,
                 source: ExportSource | None = None) -> tuple[ExportFormat, Path]:
    """The format and the output path, checked before any work: a known format, ``--out`` ending as the format
    requires, not there already unless ``overwrite``; with ``source``, that the format can take it (timm: a
    timm-shaped arch) and its converter is installed. :class:`InputError` naming the field otherwise."""
    spec = get_format(fmt)
    path = Path(out).expanduser()
    shown = shorten(os.fspath(out), 160)
    if spec.suffix and path.suffix != spec.suffix:
        raise InputError(f"--out: {shown}: the {spec.name} format writes a {spec.suffix} file; name it "
                         f"*{spec.suffix}")
    if spec.suffix == "" and path.suffix in (".onnx", ".pt2", ".mlpackage", ".pt", ".pth", ".bin"):
        raise InputError(f"--out: {shown}: the {spec.name} format writes a folder of files; give a folder name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise InputError(f"--out: {shown} exists; remove it, give another path, or replace it (--force)")
    if source is not None:
        if spec.name == "timm":
            from ._timm import timm_shape

            timm_shape(source.arch)
        if spec.name == "coreml":
            from slimnas.latency.backends import CoreMLBackend

            reason = CoreMLBackend.can_convert()
            if reason:
                raise InputError(f"--format coreml: {reason}")
        if spec.name in ("onnx", "onnx-blocked"):
            try:
                import onnx  # noqa: F401
            except ImportError:
                raise InputError(f"--format {spec.name}: onnx is not installed (pip install onnx onnxruntime)"
                                 ) from None
    return spec, path


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A path to write ``out``'s content at, in a staging folder beside ``out``; renamed over ``out`` (an existing
    ``out`` moved away first) when the block ends without error. The staging folder is removed in every case, and a
    folder made for ``out`` is removed again when the block fails."""
    made = []
    parent = out.parent.resolve()
    for folder in [parent, *parent.parents]:
        if folder.exists():
            break
        made.append(folder)
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{out.name[:200]}.{secrets.token_hex(4)}.export"
    staging.mkdir()
    done = False
    try:
        yield staging / out.name
        if out.exists() or out.is_symlink():
            os.replace(out, staging / ".replaced")
        os.replace(staging / out.name, out)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for folder in made:  # innermost first
                try:
                    folder.rmdir()
                except OSError:
                    break


def _writer(name: str) -> Callable[..., Check]:
    from . import _writers
    from ._timm import write_timm

    return {"torch": _writers.write_torch, "torch-export": _writers.write_torch_export,
            "onnx": _writers.write_onnx, "onnx-blocked": _writers.write_onnx_blocked, "coreml": _writers.write_coreml,
            "timm": write_timm}[name]


def export_winner(source: ExportSource, fmt: str, out: str | os.PathLike, *, form: str | None = None,
                  overwrite: bool = False) -> ExportResult:
    """Export ``source`` as ``fmt`` to ``out`` (see :mod:`slimnas.export`): checked first (:func:`check_export`),
    written in a staging folder beside ``out`` and renamed into place only once the written model ran on its runtime
    against the network (where this machine can run it). ``form`` overrides the format's form (``eager`` or
    ``fused``). A failed exporter raises :class:`~slimnas.errors.ExportError` and leaves nothing behind."""
    started = time.perf_counter()
    spec, path = check_export(fmt, out, overwrite, source)
    if form is not None and spec.name in ("torch", "timm") and form != "eager":
        raise InputError(f"form: a {spec.name} export holds the eager network's state_dict, not the {form} form")
    form = form or spec.resolved_form()
    module = module_in_form(source, form)
    metadata = export_metadata(source, spec, form)
    with _staged(path) as target:
        check = _writer(spec.name)(source, module, target, metadata)
        files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) if target.is_dir() \
            else [target.name]
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) if target.is_dir() \
            else target.stat().st_size
    batch = "1" if spec.name == "coreml" else "dynamic"
    return ExportResult(spec.name, path, form, (source.in_chans, source.img_size, source.img_size), batch,
                        tuple(files), size, check, time.perf_counter() - started)
