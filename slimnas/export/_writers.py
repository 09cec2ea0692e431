"""The writers of the ``torch``, ``torch-export``, ``onnx`` and ``coreml`` formats (``timm``: :mod:`._timm`).

Each writer gets the source, the module to export (in the format's form), the path to write (inside a staging folder:
:func:`slimnas.export.export_winner` renames it into place) and the export metadata; it writes, reads back what it
wrote, runs it on the format's runtime against the eager network where this machine can, and returns the
:class:`~._check.Check`. A failing exporter raises :class:`~slimnas.errors.ExportError`; nothing falls back to another
exporter.
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path
from typing import Any

from slimnas.errors import ExportError, shorten
from slimnas.winners import ARCH_FILE, WEIGHTS_FILE, read_state_dict, save_winner

from ._check import CHECK_BATCH, Check, compare, inputs
from ._formats import META_FILE
from ._source import ExportSource

__all__ = ["write_torch", "write_torch_export", "write_onnx", "write_onnx_blocked", "write_coreml", "metadata_json",
           "CARD_KEY", "EXPORT_KEY"]

#: The metadata keys of the ONNX model (``metadata_props``) and the Core ML package (``user_defined_metadata``).
CARD_KEY, EXPORT_KEY = "slimnas.model_card", "slimnas.export"


def metadata_json(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, indent=1, sort_keys=False) + "\n"


def _failure(what: str, exc: BaseException) -> ExportError:
    text = " ".join(str(exc).split())
    return ExportError(f"{what} failed: {type(exc).__name__}{': ' + shorten(text, 300) if text else ''}")


def _metadata_props(source: ExportSource, metadata: dict[str, Any]) -> dict[str, str]:
    props = {EXPORT_KEY: json.dumps(metadata)}
    if source.card is not None:
        props[CARD_KEY] = json.dumps(source.card.to_dict())
    return props


def write_torch(source: ExportSource, module: Any, path: Path, metadata: dict[str, Any]) -> Check:
    """``path/``: ``weights.pt``, ``arch.json``, ``model.json`` (a winner's card: :func:`slimnas.load_winner` loads
    the folder) and the export metadata; checked by rebuilding the network from the files."""
    state = module.state_dict()
    if source.card is not None:
        save_winner(path, state, source.card)
    else:
        import torch

        path.mkdir(parents=True)
        torch.save({k: v.detach().cpu() for k, v in state.items()}, path / WEIGHTS_FILE)
        (path / ARCH_FILE).write_text(json.dumps(source.arch.to_dict(), indent=1) + "\n")
    (path / META_FILE).write_text(metadata_json(metadata))
    rebuilt = source.arch.space_family.build_model(source.arch, num_classes=source.num_classes,
                                                   in_chans=source.in_chans)
    rebuilt.load_state_dict(read_state_dict(path / WEIGHTS_FILE))
    rebuilt.eval()
    diff = compare("torch (weights.pt reloaded)", source.model, rebuilt, [source.input_shape(2)])
    return Check(diff, "PyTorch, batch 2")


def write_torch_export(source: ExportSource, module: Any, path: Path, metadata: dict[str, Any]) -> Check:
    """``path``: ``torch.export.save`` of the program of ``module`` with a dynamic batch dimension (traced at batch
    2), the export metadata as its extra file ``slimnas-export.json``; checked by loading it back."""
    import torch

    what = f"torch.export (torch {torch.__version__})"
    try:
        batch = torch.export.Dim("batch", min=1, max=65536)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the .pt2 writer's notes on weight grouping
            program = torch.export.export(module, (inputs(source.input_shape(2)),), dynamic_shapes=({0: batch},))
            torch.export.save(program, path, extra_files={META_FILE: metadata_json(metadata)})
            loaded = torch.export.load(path).module()
    except Exception as exc:  # noqa: BLE001 - any failure of the exporter is the same error, in one line
        raise _failure(what, exc) from None
    diff = compare(what, source.model, loaded, [source.input_shape(3), source.input_shape(1)])
    return Check(diff, "torch.export program, batch 3 and 1")


def write_onnx_blocked(source: ExportSource, module: Any, path: Path, metadata: dict[str, Any]) -> Check:
    """:func:`write_onnx` with MB4D's mixer in ONNX Runtime's blocked-layout form
    (:func:`~slimnas.search_spaces.onnx_blocked_layout`, as the ``onnxruntime`` backend times it with ``layout:
    blocked``); the same checks."""
    from slimnas.search_spaces import onnx_blocked_layout

    with onnx_blocked_layout():
        return write_onnx(source, module, path, metadata)


def write_onnx(source: ExportSource, module: Any, path: Path, metadata: dict[str, Any]) -> Check:
    """``path``: :func:`~slimnas.latency.backends.export_onnx` of ``module`` (the ``onnxruntime`` latency backend's
    exporter: the same graph its tables time), the model card and export metadata in ``metadata_props``;
    ``onnx.checker`` (full check) must pass; checked in ONNX Runtime (the backend's session settings) on a batch of
    8 and of 1."""
    import onnx

    from slimnas.latency.backends import ONNXRuntimeBackend, export_onnx

    proto = onnx.load_from_string(export_onnx(module, inputs(source.input_shape(1))))
    onnx.helper.set_model_props(proto, _metadata_props(source, metadata))
    proto.doc_string = f"slimnas {source.arch.family} network {source.arch} ({metadata['form']} form)"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker's errors have several types
        raise _failure(f"onnx.checker (onnx {onnx.__version__})", exc) from None
    data = proto.SerializeToString()
    path.write_bytes(data)
    backend = ONNXRuntimeBackend(threads=1)
    reason = backend.unavailable_reason()
    if reason:
        return Check(None, "", f"not run here: {reason}")
    import onnxruntime as ort

    session = backend.session(path.read_bytes())
    what = f"ONNX Runtime {ort.__version__}"
    diff = compare(what, source.model, lambda x: session.run(None, {"input": x.numpy()})[0],
                   [source.input_shape(CHECK_BATCH), source.input_shape(1)])
    return Check(diff, f"{what} (CPU), batch {CHECK_BATCH} and 1")


def write_coreml(source: ExportSource, module: Any, path: Path, metadata: dict[str, Any]) -> Check:
    """``path``: the ML Program of :meth:`CoreMLBackend.convert <slimnas.latency.backends.CoreMLBackend.convert>`
    (the ``coreml`` latency backend's conversion, batch 1, float32) with the model card and export metadata in its
    user-defined metadata. Prediction needs macOS: elsewhere the package is converted and saved, not run."""
    from slimnas.latency.backends import CoreMLBackend

    backend = CoreMLBackend()
    versions = backend.versions()
    what = f"Core ML conversion (coremltools {versions.get('coremltools', '?')})"
    example = inputs(source.input_shape(1))
    try:
        model = backend.convert(module, example)
        for key, value in _metadata_props(source, metadata).items():
            model.user_defined_metadata[key] = value
        model.short_description = f"slimnas {source.arch.family} network {source.arch}"
        model.save(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure of the converter is the same error, in one line
        raise _failure(what, exc) from None
    if platform.system() != "Darwin":
        return Check(None, "", f"Core ML prediction needs macOS: converted and saved, not run here "
                               f"({platform.system()})")
    import coremltools as ct

    loaded = ct.models.MLModel(str(path))
    diff = compare("Core ML", source.model, lambda x: loaded.predict({"input": x.numpy()})["output"],
                   [source.input_shape(1)])
    return Check(diff, "Core ML (macOS), batch 1")
