"""Running one search method as a Ray Tune experiment (each candidate evaluation is a trial).

The trainable gets ``config = {"candidate_id", "arch", "latency_ms", "method"}`` and reports, after each validation
batch, ``correct``, ``seen`` and ``total`` (images), ``batches_done`` and ``batches_total``, and at the end the same
plus ``accuracy``. (Tune's metric for the searcher is ``seen``, present in every report; the searcher itself reads
``accuracy``, or the bound a trial was stopped on.)

``restore=True`` continues a killed driver's experiment, in this or a new process:

- the searcher's state file says the algorithm had finished: nothing runs, the algorithm is loaded from it;
- Tune saved the experiment: ``Tuner.restore``; finished trials keep their results, and the candidates that were in
  flight are evaluated again from the searcher's own state file (unfinished Tune trials are not resumed, so nothing
  is told twice). The restored searcher is given ``algorithm`` -- built by this driver, on this Ray session's latency
  service -- before the experiment goes on (nothing Tune pickled holds a live Ray handle: see
  :mod:`~slimnas.platform.tune.searcher`);
- the driver was killed before Tune saved anything: a new experiment, continuing from the state file if there is one.

The algorithm passed in must be built as the first run built it (same method, space, targets, seed); its state is
then replaced by the saved one.

The early-stop scheduler is built with the experiment's searcher; no registry of live searchers links them. A
restored experiment's searcher and scheduler are the ones ``Tuner.restore`` unpickled (together, from
``tuner.pkl``, so the scheduler holds that searcher); the runner reads the searcher back from the restored tuner to
attach the algorithm.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from slimnas.errors import SlimnasError
from slimnas.platform.tune.scheduler import EarlyStopScheduler
from slimnas.platform.tune.searcher import AskTellSearcher, read_state
from slimnas.search import SearchAlgorithm

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

    def outcome(searcher: AskTellSearcher) -> TuneOutcome:
        return TuneOutcome(algorithm, searcher, dict(searcher.counters) if early_stop else {}, str(experiment))

    saved = read_state(state_path) if restore else None
    if saved is not None and saved["algorithm"]["finished"]:
        searcher = AskTellSearcher(algorithm, name, state_path, max_concurrent=max_concurrent_trials)
        searcher.resume_from_state_file()
        log.info("%s: finished before; restored from %s", name, state_path)
        return outcome(searcher)
    trainable = tune.with_resources(trainable, resources or {"cpu": 1})
    restored = _restored_tuner(experiment, trainable, algorithm, max_concurrent_trials) if restore else None
    if restored is not None:
        tuner, searcher = restored
    else:
        if saved is None:
            state_path.unlink(missing_ok=True)
        shutil.rmtree(experiment, ignore_errors=True)  # a partial experiment Tune cannot restore
        searcher = AskTellSearcher(algorithm, name, state_path, max_concurrent=max_concurrent_trials)
        if saved is not None:
            searcher.resume_from_state_file()
        scheduler = EarlyStopScheduler(searcher, rule=rule, z=z) if early_stop else FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1, reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
        )
    tuner.fit()
    if not algorithm.finished:  # Tune ends an experiment only when the searcher says FINISHED (or it was stopped)
        raise SlimnasError(f"{name}: the Tune experiment ended with the search unfinished ({algorithm.evaluations} "
                           f"evaluations); rerun with --restore to continue it")
    return outcome(searcher)


def _restored_tuner(experiment: Path, trainable: Any, algorithm: SearchAlgorithm,
                    max_concurrent: int | None) -> tuple[tune.Tuner, AskTellSearcher] | None:
    """``Tuner.restore`` of ``experiment`` and its searcher, attached to ``algorithm``; ``None`` when Tune saved no
    experiment there, or saved one it cannot read back (the searcher's state file is then all there is to go on)."""
    # Tune syncs its experiment state to the storage folder when the experiment starts; a driver killed before that
    # left only tuner.pkl, from which Tune would restart the experiment its own way: start a new one instead
    if not tune.Tuner.can_restore(str(experiment)) or not any(experiment.glob("experiment_state-*.json")):
        return None
    try:
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=False,
                                   resume_errored=False, restart_errored=False)
    except Exception as exc:  # noqa: BLE001 - e.g. a torn or foreign tuner.pkl: continue from our own state file
        log.warning("%s: Tune's saved experiment cannot be restored (%s: %s); continuing from the searcher's state "
                    "file", experiment.name, type(exc).__name__, exc)
        return None
    searcher = _unpickled_searcher(tuner)
    if searcher is None or searcher.attached:  # not unpickled by this restore
        log.warning("%s: the saved experiment holds no slimnas searcher; continuing from the state file",
                    experiment.name)
        return None
    searcher.attach(algorithm, max_concurrent)
    return tuner, searcher


def _unpickled_searcher(tuner: tune.Tuner) -> AskTellSearcher | None:
    """The searcher a restored ``tuner`` unpickled from ``tuner.pkl`` (its scheduler holds the same object).

    Tune has no public accessor for a restored tuner's ``TuneConfig``; should its private layout change, this returns
    ``None`` and the experiment continues from the searcher's state file instead (nothing is lost but Tune's own
    record of the finished trials)."""
    config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
    searcher = getattr(config, "search_alg", None)
    return searcher if isinstance(searcher, AskTellSearcher) else None
