"""The export formats (plain Python: the CLI lists them without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass

from slimnas.errors import InputError, shorten

__all__ = ["ExportFormat", "FORMATS", "FORMAT_NAMES", "get_format", "EXPORT_FORMAT", "META_FILE"]

#: The ``format`` field of the export metadata (:func:`slimnas.export.export_metadata`).
EXPORT_FORMAT = "slimnas.export/1"
#: The export metadata's file in the formats written as folders (``torch``, ``timm``).
META_FILE = "slimnas-export.json"


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its name, what ``--out`` must end with (``""``: a folder of files), the module form it
    exports (``form``; or ``backend``: the form the latency backend of that name times, so that a latency table built
    on it predicts the exported file), what runs it, and one line on what is written."""

    name: str
    suffix: str
    runtime: str
    summary: str
    form: str = "eager"
    backend: str | None = None

    def resolved_form(self) -> str:
        """The module form exported: ``form``, or the latency backend's default form."""
        if self.backend is None:
            return self.form
        from slimnas.latency.backends import backend_class

        return backend_class(self.backend).default_form


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("torch", "", "PyTorch (slimnas.load_winner or build_model + load_state_dict)",
                 "a folder: weights.pt (state_dict), arch.json, model.json (the model card, for a winner), "
                 "slimnas-export.json"),
    ExportFormat("torch-export", ".pt2", "PyTorch (torch.export.load(path).module())",
                 "a torch.export program of the deployment form, dynamic batch", form="fused"),
    ExportFormat("onnx", ".onnx", "ONNX Runtime",
                 "an ONNX model (opset 17, dynamic batch) with the model card in its metadata_props",
                 backend="onnxruntime"),
    ExportFormat("onnx-blocked", ".onnx", "ONNX Runtime (CPU)",
                 "the onnx format's network with each MB4D mixer written so that ONNX Runtime's CPU provider keeps "
                 "its blocked layout (faster there; an onnxruntime latency table built with --layout blocked times "
                 "this file)", backend="onnxruntime"),
    ExportFormat("coreml", ".mlpackage", "Core ML (macOS/iOS)",
                 "a Core ML ML Program (.mlpackage, batch 1) with the model card in its user-defined metadata",
                 backend="coreml"),
    ExportFormat("timm", "", "timm (timm.create_model + load_state_dict, or 'local-dir:PATH')",
                 "a folder: pytorch_model.bin (timm's state_dict) and timm's config.json, for archs shaped like "
                 "timm's EfficientFormer"),
)}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)


def get_format(name: str) -> ExportFormat:
    """The format ``name``; :class:`InputError` listing the known ones."""
    if name not in FORMATS:
        raise InputError(f"--format: unknown format {shorten(repr(name))} (known: {', '.join(FORMATS)})")
    return FORMATS[name]
