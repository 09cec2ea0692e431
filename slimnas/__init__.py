"""slimnas: latency-driven slimming NAS for EfficientFormer (Li et al., NeurIPS 2022), on Ray, tracked in MLflow.

Subpackages: ``search_spaces`` (what can be searched), ``latency`` (how fast), ``trainers`` (how good), ``search``
(the algorithms) and ``platform`` (composition: Ray Tune, MLflow, CLI). See ``docs/design.md`` for the dependency rule.

:func:`load_winner` (``slimnas.load_winner(folder) -> (model, card)``) loads a search job's saved winner
(:mod:`slimnas.winners`).
"""

from slimnas._lazy import lazy_attributes

__version__ = "0.1.0"
__all__ = ["load_winner", "ModelCard", "__version__"]

_LAZY = {"load_winner": ".winners", "ModelCard": ".winners"}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
