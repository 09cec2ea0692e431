"""Running one search method as a Ray Tune experiment (each candidate evaluation is a trial).

The trainable gets ``config = {"candidate_id", "arch", "latency_ms", "method"}`` and reports, after each validation
batch, ``correct``, ``seen`` and ``total`` (images), ``batches_done`` and ``batches_total``, and at the end the same
plus ``accuracy``. (Tune's metric for the searcher is ``seen``, present in every report; the searcher itself reads
``accuracy``, or the bound a trial was stopped on.)

``restore=True`` continues a killed driver's experiment with ``Tuner.restore``: finished trials keep their results,
and the candidates that were in flight are evaluated again from the searcher's own state file (unfinished Tune
trials are not resumed, so nothing runs twice).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from slimnas.search import SearchAlgorithm

from .scheduler import EarlyStopScheduler, live_scheduler_stats
from .searcher import AskTellSearcher, live_searcher

__all__ = ["run_tune", "TuneOutcome"]

log = logging.getLogger(__name__)


@dataclass
class TuneOutcome:
    algorithm: SearchAlgorithm
    searcher: AskTellSearcher
    early_stop: dict[str, int]
    experiment_path: str


def run_tune(
    algorithm: SearchAlgorithm,
    trainable: Callable[[dict[str, Any]], None],
    name: str,
    storage_path: str | os.PathLike,
    *,
    early_stop: bool = True,
    rule: str = "confident",
    z: float = 3.0,
    resources: dict[str, float] | None = None,
    max_concurrent_trials: int | None = None,
    restore: bool = False,
) -> TuneOutcome:
    """Run (or, with ``restore``, continue) ``algorithm`` as the Tune experiment ``storage_path/name``."""
    # Tune's newer console output prints experiment tables even at verbose=0; the legacy reporter honours it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    storage = Path(storage_path).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    experiment = storage / name
    state_path = storage / f"{name}.searcher.json"
    scheduler = EarlyStopScheduler(name, rule=rule, z=z) if early_stop else FIFOScheduler()
    trainable = tune.with_resources(trainable, resources or {"cpu": 1})
    if restore and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=False,
                                   resume_errored=False, restart_errored=False)
        searcher = live_searcher(name)
        if searcher is None:
            raise RuntimeError(f"{name}: the restored experiment has no slimnas searcher")
    else:
        if restore:
            log.info("%s: nothing to restore at %s; starting fresh", name, experiment)
        state_path.unlink(missing_ok=True)
        searcher = AskTellSearcher(algorithm, name, state_path, max_concurrent=max_concurrent_trials)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1, reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
        )
    tuner.fit()
    searcher = live_searcher(name) or searcher
    stats = (live_scheduler_stats(name) or {}) if early_stop else {}
    return TuneOutcome(searcher.algorithm, searcher, stats, str(experiment))
