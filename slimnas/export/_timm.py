"""The ``timm`` format: a winner shaped like timm's EfficientFormer as a timm checkpoint.

timm's ``EfficientFormer`` takes ``depths``, ``embed_dims`` and ``num_vit`` (MB3D blocks closing the last stage) and
fixes its attention grid at 7x7, so an arch is *timm-shaped* when it is an EfficientFormer at 224 px whose only MB3D
blocks close the last stage (at least one), with at least one block in every stage.
slimnas's ``build_model`` keeps timm's module names, so its state_dict is timm's. A preset's shape (L1, L3, L7) loads
with ``timm.create_model('efficientformer_l1', num_classes=N)`` alone; other timm-shaped archs need the ``depths``,
``embed_dims`` and ``num_vit`` that ``config.json`` records (``timm.create_model('local-dir:PATH')`` reads them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimnas.errors import ExportError, InputError, shorten
from slimnas.search_spaces import Arch

from ._check import Check, compare
from ._formats import META_FILE
from ._source import ExportSource

__all__ = ["timm_shape", "write_timm", "TIMM_WEIGHTS"]

#: The weights file timm's ``save_for_hf`` writes (a state_dict; ``torch.load(weights_only=True)`` reads it).
TIMM_WEIGHTS = "pytorch_model.bin"


def timm_shape(arch: Arch) -> tuple[str, dict[str, Any]]:
    """``(timm model name, model_args)`` of a timm-shaped arch (``model_args`` empty for a preset's shape); an
    :class:`InputError` saying why for any other arch."""
    from slimnas.search_spaces.efficientformer import PRESETS

    why = None
    if arch.family != "efficientformer":
        why = f"it is a {arch.family} network, not an EfficientFormer"
    elif arch.img_size != 224:
        why = f"its input is {arch.img_size} px (timm's EfficientFormer fixes the attention grid at 224 px)"
    elif any(arch.num_3d[:-1]):
        why = "it has MB3D blocks before the last stage (timm's has them only at the end of the last stage)"
    elif arch.num_3d[-1] < 1:
        why = "its last stage has no MB3D block (timm's EfficientFormer ends in at least one)"
    elif min(arch.depths) < 1:
        why = "a stage has no blocks"
    if why:
        raise InputError(f"--format timm: the arch {shorten(str(arch), 120)} is not shaped like timm's "
                         f"EfficientFormer: {why}; export it as torch, torch-export, onnx or coreml")
    args = {"depths": list(arch.depths), "embed_dims": list(arch.widths), "num_vit": int(arch.num_3d[-1])}
    for name, preset in PRESETS.items():
        if (list(preset["depths"]), list(preset["widths"]), preset["num_3d"]) == (
                args["depths"], args["embed_dims"], args["num_vit"]):
            return f"efficientformer_{name}", {}
    return "efficientformer_l1", args


def write_timm(source: ExportSource, module: Any, path: Path, metadata: dict[str, Any]) -> Check:
    """``path/``: timm's ``save_for_hf`` of timm's model holding the winner's weights (``pytorch_model.bin`` and
    ``config.json`` with the class count, input channels and, for a non-preset shape, ``model_args``), and the export
    metadata; checked by ``timm.create_model('local-dir:PATH', pretrained=True)`` against the network."""
    import timm
    from timm.models import save_for_hf

    from ._writers import metadata_json

    name, args = timm_shape(source.arch)
    what = f"timm ({timm.__version__}) {name}"
    try:
        model = timm.create_model(name, num_classes=source.num_classes, in_chans=source.in_chans, **args).eval()
        model.load_state_dict(module.state_dict())
        save_for_hf(model, str(path), model_args={"num_classes": source.num_classes, "in_chans": source.in_chans,
                                                  **args})
        (path / META_FILE).write_text(metadata_json(metadata))
        loaded = timm.create_model(f"local-dir:{path}", pretrained=True).eval()
    except Exception as exc:  # noqa: BLE001 - any failure of timm is the same error, in one line
        text = " ".join(str(exc).split())
        raise ExportError(f"{what} failed: {type(exc).__name__}: {shorten(text, 300)}") from None
    diff = compare(what, source.model, loaded, [source.input_shape(2)])
    return Check(diff, f"{what} from local-dir, batch 2")

