"""Relative latency targets: fractions of the predicted latency of the arch slimming starts from.

A sweep's targets mean something only below where the search starts: a target at or above the start arch's latency is
met before any slimming step, and every budgeted baseline then gets slimming's one evaluation ("equal budgets"). So
``targets_relative`` (the pipeline's ``search.targets_relative``) are fractions of the *slimming start arch*'s
predicted latency, not of the space's largest network: with every fraction below 1, every target needs slimming steps.

The start arch is :func:`slimnas.search.start_arch` of the supernet's importance (``start="alpha"``, what the
``slimming`` method starts from: every slot active at maximum width, each stage's MB4D/MB3D split the most probable
under the supernet's alpha). It is defined by the supernet alone, so it is the reference whether or not slimming is
among the job's methods: a job comparing baselines only gets the same targets as one that includes slimming.

:func:`resolve_relative_targets` returns a :class:`~slimnas.platform.stages.search_config.TargetsReference` (the
fractions, the reference arch, its predicted latency), which goes into the search job's config: the job checks its
targets against it, records it in ``results.json`` and MLflow, and prints it with the comparison. Plain Python: the
supernet's importance and a latency function are given (no torch here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from slimnas.platform.stages.search_config import TargetsReference
from slimnas.search import start_arch

if TYPE_CHECKING:
    from slimnas.search_spaces import Arch, Importance, SearchSpace

__all__ = ["resolve_relative_targets", "reference_text"]

#: The start rule of the ``slimming`` methods (:func:`slimnas.search.start_arch`'s default).
SLIMMING_START = "alpha"


def resolve_relative_targets(fractions: Sequence[float], space: SearchSpace, importance: Importance | None,
                             predict: Callable[[list[Arch]], Sequence[float]], predictor: str = "table",
                             start: str = SLIMMING_START) -> TargetsReference:
    """The targets ``fractions`` of the predicted latency (``predict``: archs -> ms) of slimming's start arch
    (:func:`~slimnas.search.start_arch` of ``space`` and the supernet's ``importance``; see the module docstring).
    ``predictor`` names what ``predict`` is (``table`` or ``calibrated``), for the record."""
    arch = start_arch(space, importance, start)
    predicted = float(predict([arch])[0])
    return TargetsReference(fractions=list(fractions), start=start, arch=arch.to_dict(), predicted_ms=predicted,
                            predictor=predictor)


def reference_text(ref: TargetsReference) -> str:
    """One line: the targets, the fractions and the reference they are fractions of."""
    from slimnas.search_spaces import Arch

    targets = ", ".join(f"{t:g}" for t in ref.targets_ms())
    fractions = ", ".join(f"{f:g}" for f in sorted(set(ref.fractions), reverse=True))
    return (f"targets {targets} ms = {fractions} x {ref.predicted_ms:.4g} ms, the {ref.predictor}-predicted latency "
            f"of slimming's start arch ({ref.start}): {Arch.from_dict(ref.arch)}")
