"""Losses of the recipe: label smoothing or mixup/cutmix soft targets, and DeiT hard distillation from a timm teacher.

Hard distillation (Touvron et al. 2021, used by the paper, Sec. 5.1): the student has a classification head and a
distillation head; ``loss = (1 - a) * base(head(x), y) + a * CE(head_dist(x), argmax teacher(x))`` with ``a = 0.5``.
The teacher sees the same (mixed) images as the student.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimnas.errors import InputError

from ._config import DistillConfig

__all__ = ["base_criterion", "DistillationLoss", "load_teacher", "local_pretrained_file"]

log = logging.getLogger(__name__)


def base_criterion(aug: dict[str, Any], mixup_active: bool) -> nn.Module:
    """timm's choice: soft-target CE under mixup/cutmix (smoothing is in the targets), else label smoothing."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active:
        return SoftTargetCrossEntropy()
    if aug["smoothing"] > 0:
        return LabelSmoothingCrossEntropy(smoothing=aug["smoothing"])
    return nn.CrossEntropyLoss()


class DistillationLoss(nn.Module):
    """``base`` on the class head, optionally plus hard distillation on the distillation head."""

    def __init__(self, base: nn.Module, teacher: nn.Module | None = None, alpha: float = 0.5) -> None:
        super().__init__()
        self.base, self.alpha = base, alpha
        # Not a registered submodule: never saved, never switched to train mode, never trained.
        object.__setattr__(self, "teacher", teacher)

    def forward(self, inputs: torch.Tensor, outputs, targets: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            if isinstance(outputs, tuple):
                outputs = (outputs[0] + outputs[1]) / 2
            return self.base(outputs, targets)
        logits, logits_dist = outputs
        with torch.no_grad():
            teacher_labels = self.teacher(inputs).argmax(dim=1)
        return ((1 - self.alpha) * self.base(logits, targets)
                + self.alpha * F.cross_entropy(logits_dist.float(), teacher_labels))


def local_pretrained_file(model_name: str) -> str | None:
    """Path of timm's pretrained weights for ``model_name`` in the local Hugging Face cache, if present."""
    import timm
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(timm.models.get_arch_name(model_name) if "." not in model_name else model_name)
    except Exception:  # noqa: BLE001
        cfg = None
    if cfg is None or not getattr(cfg, "hf_hub_id", None):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"distill.teacher_weights: cannot read {path} ({type(exc).__name__})") from None
    for wrapper in ("model", "state_dict", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"distill.teacher_weights: {path} does not hold a state_dict")
    return state


def load_teacher(cfg: DistillConfig, num_classes: int, device: torch.device) -> nn.Module:
    """The frozen teacher in eval mode on ``device`` (see :class:`DistillConfig` for where weights come from)."""
    import timm

    if not timm.is_model(cfg.teacher_model):
        raise InputError(f"distill.teacher_model: unknown timm model {cfg.teacher_model!r}")
    if cfg.teacher_weights:
        path = Path(cfg.teacher_weights).expanduser()
        if not path.is_file():
            raise InputError(f"distill.teacher_weights: no such file {path}")
        model = timm.create_model(cfg.teacher_model, pretrained=False, num_classes=num_classes)
        try:
            model.load_state_dict(_read_state_dict(path), strict=True)
        except RuntimeError as exc:
            last = str(exc).strip().splitlines()[-1].strip()
            raise InputError(f"distill.teacher_weights: {path} does not fit {cfg.teacher_model} with "
                             f"{num_classes} classes ({last})") from None
    else:
        local = local_pretrained_file(cfg.teacher_model)
        if local is None:
            raise InputError(f"distill.teacher_model: no local pretrained weights for {cfg.teacher_model!r} "
                             f"(nothing is downloaded); give distill.teacher_weights")
        model = timm.create_model(cfg.teacher_model, pretrained=True, num_classes=num_classes,
                                  pretrained_cfg_overlay={"file": local})
    model.requires_grad_(False)
    log.info("teacher %s loaded (%d classes)", cfg.teacher_model, num_classes)
    return model.to(device).eval()
