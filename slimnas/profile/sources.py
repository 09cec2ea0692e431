"""The models ``slimnas profile`` breaks down: a timm model name (random weights: latency does not depend on them), a
slimnas preset (``l1 | l3 | l7``), an arch JSON file, or a search job's winner folder
(:func:`slimnas.winners.load_winner`). The CLI resolves a MODEL argument to a :class:`ModelSource` before any work
(``slimnas.platform.commands.profile.resolve_source``); :func:`build_source` builds its network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimnas.errors import InputError, shorten

__all__ = ["ModelSource", "build_source"]


@dataclass(frozen=True)
class ModelSource:
    """A resolved MODEL argument."""

    spec: str  # what the user wrote
    kind: str  # timm | preset | arch | winner
    arch: Any = None  # the slimnas Arch (preset, arch, winner)

    @property
    def name(self) -> str:
        """How the model is named in tables and figures."""
        if self.kind in ("arch", "winner"):
            path = Path(self.spec)
            return path.stem if self.kind == "arch" else path.name
        return self.spec


def build_source(source: ModelSource, form: str, batch: int, img_size: int | None) -> tuple[Any, Any, int]:
    """``(model in eval mode, example input, input size)`` of a source; slimnas networks in ``form`` (fused |
    eager), timm models as timm builds them, with random weights."""
    import torch

    from slimnas.latency.modules import network_module

    if source.kind == "timm":
        model = _timm_model(source.spec, img_size)
        size = img_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        example = torch.randn(batch, 3, size, size)
        if img_size is not None:
            _check_runs(model, example[:1], source.spec, size)
        return model, example, size
    if source.kind == "winner":
        from slimnas.winners import load_winner

        model, card = load_winner(source.spec)
        if form == "fused":
            model = card.arch.space_family.deploy(model)
        return model.eval(), torch.randn(batch, card.in_chans, card.img_size, card.img_size), card.img_size
    arch = source.arch
    model, example = network_module(arch, batch, form)
    return model, example, arch.img_size


def _check_runs(model: Any, example: Any, name: str, size: int) -> None:
    """One call at the asked input size: a model built for one resolution (attention biases) refuses others."""
    import torch

    try:
        with torch.inference_mode():
            model(example)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise InputError(f"--img-size: {name} does not run at {size}px ({shorten(first, 200)})") from None


def _timm_model(name: str, img_size: int | None) -> Any:
    import timm

    if img_size is None:
        return timm.create_model(name, pretrained=False).eval()
    try:
        return timm.create_model(name, pretrained=False, img_size=img_size).eval()
    except TypeError:  # a model without an img_size argument (convolutional: any size)
        return timm.create_model(name, pretrained=False).eval()
