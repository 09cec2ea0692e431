"""slimnas: latency-driven slimming NAS for EfficientFormer (Li et al., NeurIPS 2022), on Ray, tracked in MLflow.

Subpackages: ``search_spaces`` (what can be searched), ``latency`` (how fast), ``trainers`` (how good), ``search``
(the algorithms) and ``platform`` (composition: Ray Tune, MLflow, CLI). See ``docs/design.md`` for the dependency rule.
"""

__version__ = "0.1.0"
