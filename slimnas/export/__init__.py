"""Export a winner for deployment: :func:`export_winner` ``(source, format, out) ->`` :class:`ExportResult`.

The source (:class:`ExportSource`) is a saved winner (:func:`source_from_folder`; a job's winner:
:func:`job_dir_of` + :func:`find_winner`) or an arch and a state_dict (:func:`source_from_files`). ``slimnas export``
is the command line (``slimnas/platform/commands/export.py``; it also reads a winner from an MLflow run).

======================  ==========================================================================================
format                  what is written (and the module form, the one that runs fastest on its runtime)
======================  ==========================================================================================
``torch``               a folder: ``weights.pt`` (state_dict), ``arch.json``, ``model.json`` (a winner's card:
                        ``slimnas.load_winner(folder)`` loads it), ``slimnas-export.json``; the eager network's
                        weights (``deploy`` derives the fused form from them)
``torch-export``        ``.pt2``: a ``torch.export`` program of the **fused** (deployment) form, dynamic batch;
                        ``torch.export.load(path).module()(x)``. The fused form is the fast one in PyTorch (L1, 1
                        thread: 1.5-1.9x timm's eager model; as a program 1.25-1.5x timm's through torch.export)
``onnx``                ``.onnx``: opset 17, dynamic batch, ``onnx.checker`` passes, the model card and the export
                        metadata in ``metadata_props`` (``slimnas.model_card``, ``slimnas.export``). The form the
                        ``onnxruntime`` latency backend times (its ``default_form``, **eager**) through the same
                        exporter (:func:`slimnas.latency.backends.export_onnx`), so an ``onnxruntime`` table predicts
                        the file (the same graph as timm's export, as fast). The NHWC fused form is slower in ORT
                        (its 1x1 convs become MatMuls, which ORT runs slower than its blocked-layout convs)
``onnx-blocked``        ``.onnx``: the ``onnx`` format's network and checks, each MB4D mixer written as two
                        per-channel ``BatchNormalization`` scalings so that ORT's CPU provider keeps its blocked
                        NCHWc layout through the blocks (1 layout reorder in L1's optimized graph against 59), the
                        two heads as one ``Gemm``: L1 1.06x timm's export in ORT 1.32 (1 thread,
                        ``docs/benchmarks.md``, "Export"). The ``onnxruntime`` tables time the ``onnx`` graph, so
                        they over-estimate this file (0-20% on ``tiny``): a target they say is met stays met
``coreml``              ``.mlpackage`` (ML Program, float32, batch 1): the ``coreml`` backend's conversion and form
                        (**eager**: Core ML fuses on its own); the fused form converts too (a ``torch.lerp``
                        converter is registered). Prediction needs macOS: elsewhere it is converted, not run
``timm``                a folder timm reads: ``pytorch_model.bin`` + ``config.json``
                        (``timm.create_model('local-dir:PATH', pretrained=True)``, or
                        ``timm.create_model('efficientformer_l1', num_classes=N)`` + ``load_state_dict`` for a
                        preset's shape); only for archs shaped like timm's EfficientFormer, else one line saying why
======================  ==========================================================================================

Every export is checked before it is put in place: the written file is read back and run on its runtime (PyTorch,
ONNX Runtime, timm) against the eager network on the same inputs (ONNX: a batch of 8 and of 1; torch.export: 3 and 1;
torch and timm: 2), and must agree within 1e-4 (per unit of the largest logit); Core ML is converted and saved but
cannot run off macOS. The export is written in a staging folder beside ``--out`` and renamed into place: a failure (an
exporter error is :class:`~slimnas.errors.ExportError`, never followed by another exporter) leaves nothing behind. Bad
input (:class:`~slimnas.errors.InputError`) is found before any work by :func:`check_export` and the source readers.
"""

from __future__ import annotations

from slimnas._lazy import lazy_attributes

from ._formats import EXPORT_FORMAT, FORMAT_NAMES, FORMATS, META_FILE, ExportFormat, get_format

__all__ = ["export_winner", "check_export", "export_metadata", "module_in_form", "ExportResult", "ExportSource",
           "WinnerRef", "source_from_folder", "source_from_files", "job_dir_of", "job_winners", "find_winner",
           "Check", "ExportFormat", "FORMATS", "FORMAT_NAMES", "EXPORT_FORMAT", "META_FILE", "get_format",
           "timm_shape", "CARD_KEY", "EXPORT_KEY"]

_LAZY = {
    "export_winner": "._export", "check_export": "._export", "export_metadata": "._export",
    "module_in_form": "._export", "ExportResult": "._export",
    "ExportSource": "._source", "WinnerRef": "._source", "source_from_folder": "._source",
    "source_from_files": "._source", "job_dir_of": "._source", "job_winners": "._source", "find_winner": "._source",
    "Check": "._check", "timm_shape": "._timm", "CARD_KEY": "._writers", "EXPORT_KEY": "._writers",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
