"""Long-lived evaluator actors: one per trial slot of a search job, each with the supernet and the data loaded once.

A search job's Tune experiment runs ~100 evaluations of ~0.5 s each. Evaluating inside Tune's trial actors tied the
loaded supernet to Tune's actor cache, which (Ray 2.60, ``TuneController._cleanup_cached_actors``) evicts every idle
trial actor but one whenever no trial is staged -- at every round barrier of slimming, at every pause of a baseline's
ask -- so one worker ended up evaluating everything, one trial at a time. Here the loaded supernet lives in plain Ray
actors that the job owns: :class:`EvaluatorPool` starts one per trial slot (``num_cpus``/``num_gpus`` as a trial
had: scheduled by resources, on any node of a cluster), each builds its :class:`Evaluation` once from the payload put
in the object store once, and the pool kills them at the end of the job, also on error (they are owned by the driver,
so a killed driver takes them with it). An evaluator that dies (its node lost) is restarted by Ray and sets up again;
the trial using it then starts its evaluation over (:func:`~slimnas.platform.tune.trainable.evaluate_on_evaluator`).

The Tune trials are thin (:func:`~slimnas.platform.tune.trainable.evaluate_on_evaluator`): a trial reserves no CPU,
names its evaluator in its config (``config["evaluator"]``, a slot the searcher assigns:
:class:`~slimnas.platform.tune.multiplex.MultiplexSearcher`), and drives it batch by batch: :meth:`_Evaluator.begin`
(the arch; computes the first validation batch) then :meth:`_Evaluator.step` per batch, each returning the running
counts, which the trial reports to Tune. A trial stopped early simply stops calling: its evaluator is free at once
(the next ``begin`` drops the unfinished evaluation; no batch is computed that no trial asked for). Every call names
the evaluation (a token), so a late call of a finished trial cannot advance another trial's evaluation.

Timing: ``eval_s`` is measured inside the evaluator (``time.perf_counter`` around the computing only: extracting the
subnet, re-estimating its BatchNorm statistics, the validation batches); ``setup_s`` (building the :class:`Evaluation`)
comes once per evaluator, with its first evaluation. ``evaluator_pid`` and the wall-clock ``eval_started``/``eval_now``
stamps of each step let a test (and a reader of the trials' ``result.json``) see which evaluator ran what, and when.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

__all__ = ["Evaluation", "EvaluatorPool", "EVALUATOR_NAMESPACE", "evaluator_slots"]

log = logging.getLogger(__name__)

#: The Ray namespace of the evaluator actors (named, so that a trial finds its evaluator by the name in its config).
EVALUATOR_NAMESPACE = "slimnas"


class Evaluation(Protocol):
    """What an evaluator serves: ``progress(arch)`` yields ``(correct, seen, batches)`` after each validation batch
    (the last one is the whole evaluation) of ``batches`` batches holding ``images`` images."""

    images: int
    batches: int

    def progress(self, arch: dict[str, Any]) -> Iterator[tuple[int, int, int]]: ...

    def network(self, arch: dict[str, Any]) -> Any:
        """The network ``progress`` scores for ``arch``, ready to save (state and counts)."""
        ...


class _Evaluator:
    """The actor (see the module docstring). ``build(payload)`` makes its :class:`Evaluation`, once."""

    def __init__(self, build: Callable[[Any], Evaluation], payload: Any) -> None:
        self._build, self._payload = build, payload
        self._evaluation: Evaluation | None = None
        self._setup_s: float | None = None  # set up, not yet reported
        self._setup_total = 0.0
        self._token: str | None = None
        self._steps: Iterator[tuple[int, int, int]] | None = None
        self._own = self._started = 0.0
        self._log: list[dict[str, Any]] = []  # every evaluation begun: token, batches computed, own time

    def setup(self) -> float:
        """Build the evaluation (once); the seconds that took."""
        if self._evaluation is None:
            started = time.perf_counter()
            self._evaluation = self._build(self._payload)
            self._payload = None
            self._setup_s = time.perf_counter() - started
            self._setup_total = self._setup_s
        return self._setup_total

    def begin(self, token: str, arch: dict[str, Any]) -> dict[str, Any] | None:
        """Drop the evaluation in progress (if any), start evaluating ``arch`` as ``token``; its first batch."""
        self.setup()
        self._drop()
        self._token, self._own, self._started = token, 0.0, time.time()
        self._steps = self._evaluation.progress(arch)
        self._log.append({"token": token, "batches": 0, "eval_s": 0.0})
        report = self.step(token)
        if report is not None and self._setup_s is not None:
            report["setup_s"], self._setup_s = self._setup_s, None
        return report

    def step(self, token: str) -> dict[str, Any] | None:
        """The next batch of ``token``'s evaluation: the running counts; ``None`` once it has ended (or another
        evaluation replaced it)."""
        if token != self._token or self._steps is None:
            return None
        started = time.perf_counter()
        step = next(self._steps, None)
        self._own += time.perf_counter() - started
        if step is None:
            self._drop()
            return None
        correct, seen, batches = step
        self._log[-1].update(batches=batches, eval_s=self._own)
        total = self._evaluation.batches
        if batches >= total:
            self._drop()  # the evaluation is complete: the evaluator is free
        return {"correct": correct, "seen": seen, "total": self._evaluation.images, "batches_done": batches,
                "batches_total": total, "eval_s": self._own, "evaluator_pid": os.getpid(),
                "eval_started": self._started, "eval_now": time.time()}

    def _drop(self) -> None:
        if self._steps is not None and hasattr(self._steps, "close"):
            self._steps.close()  # ends the generator's contexts (e.g. its forked random state) now
        self._token, self._steps = None, None

    def network(self, arch: dict[str, Any]) -> Any:
        """``arch``'s network as this evaluator evaluates it (:meth:`Evaluation.network`), for saving."""
        self.setup()
        return self._evaluation.network(arch)

    def history(self) -> list[dict[str, Any]]:
        """Every evaluation this evaluator began: its token, the batches computed and their own time."""
        return list(self._log)

    def pid(self) -> int:
        return os.getpid()


def evaluator_slots(cpus_per_trial: float, gpus_per_trial: float = 0.0, max_concurrent: int | None = None) -> int:
    """How many evaluators a job starts: ``max_concurrent`` if set, else as many trials as the cluster's resources
    hold now (at least one). Evaluators beyond what the cluster can place wait (an autoscaling cluster adds nodes for
    them); trials only go to evaluators Ray has placed (:meth:`EvaluatorPool.ready`), so a waiting one holds up
    nothing."""
    import ray

    if max_concurrent is not None:
        return max_concurrent
    total = ray.cluster_resources()
    fits = [int(total.get("CPU", 0.0) // cpus_per_trial)] if cpus_per_trial > 0 else []
    if gpus_per_trial > 0:
        fits.append(int(total.get("GPU", 0.0) // gpus_per_trial))
    return max(1, min(fits)) if fits else 1


class EvaluatorPool:
    """``count`` evaluator actors, each ``build(payload)`` once (``payload`` travels once through the object store),
    with ``resources`` (Tune's spelling: ``cpu``, ``gpu``, others custom) each. Start with :meth:`start` (or ``with``:
    closed on exit); :attr:`names` are what trials put in ``config["evaluator"]``, :meth:`ready` those that can take one
now; :meth:`close` kills them."""

    def __init__(self, build: Callable[[Any], Evaluation], payload: Any, count: int,
                 resources: dict[str, float] | None = None, prefix: str = "slimnas-eval") -> None:
        if count < 1:
            raise ValueError(f"count: expected at least one evaluator, got {count}")
        self.build, self.payload, self.count = build, payload, count
        self.resources = dict(resources or {"cpu": 1.0})
        run = uuid.uuid4().hex[:8]
        self.names = [f"{prefix}-{run}-{i}" for i in range(count)]
        self.actors: list[Any] = []
        self._setups: list[Any] = []
        self._placed: list[Any] = []
        self._ready: set[str] = set()
        self._checked: set[str] = set()

    def start(self) -> EvaluatorPool:
        """Create the actors and have them set up (asynchronously: a trial's first call waits for its evaluator)."""
        import ray

        resources = dict(self.resources)
        options: dict[str, Any] = {"num_cpus": resources.pop("cpu", 1.0), "num_gpus": resources.pop("gpu", 0.0),
                                   "namespace": EVALUATOR_NAMESPACE, "max_restarts": 3}  # e.g. its node lost
        if resources:
            options["resources"] = resources
        payload = ray.put(self.payload)  # once: every evaluator reads the same object
        self.payload = None
        actor_class = ray.remote(_Evaluator)
        for name in self.names:
            actor = actor_class.options(name=name, **options).remote(self.build, payload)
            self.actors.append(actor)
            self._placed.append(actor.pid.remote())  # answers once Ray has placed and created the actor
            self._setups.append(actor.setup.remote())
        return self

    def ready(self, wait_s: float = 0.0) -> set[str]:
        """The evaluators that can take a trial: those Ray has placed (a trial's first call then waits for the set-up,
        which overlaps the trial actor's start). With ``wait_s`` and none placed yet, waits up to that long for the
        first. Raises :class:`~slimnas.errors.SlimnasError` naming the evaluator when a set-up has failed."""
        import ray

        from slimnas.errors import SlimnasError

        self._ready |= self._done(self._placed, self._ready)
        if wait_s > 0 and not self._ready and self._placed:
            ray.wait(self._placed, num_returns=1, timeout=wait_s)
            self._ready |= self._done(self._placed, self._ready)
        for name in self._done(self._setups, self._checked):
            try:
                ray.get(self._setups[self.names.index(name)])
            except Exception as exc:  # noqa: BLE001 - the job stops with the evaluator's error
                raise SlimnasError(f"evaluator {name}: its set-up failed: {exc}") from exc
            self._checked.add(name)
        return set(self._ready)

    def _done(self, refs: list[Any], known: set[str]) -> set[str]:
        """The names (not in ``known``) whose ref in ``refs`` has a result now."""
        import ray

        waiting = [(name, ref) for name, ref in zip(self.names, refs) if name not in known]
        if not waiting:
            return set()
        done, _ = ray.wait([ref for _, ref in waiting], num_returns=len(waiting), timeout=0)
        return {name for name, ref in waiting if ref in done}

    def networks(self, archs: list[dict[str, Any]]) -> list[Any]:
        """Each arch's :meth:`Evaluation.network`, the archs dealt round-robin to the evaluators Ray has placed (they
        build them in parallel, each with the supernet and the data it evaluated with)."""
        import ray

        ready = self.ready()
        actors = [actor for name, actor in zip(self.names, self.actors) if name in ready] or self.actors
        return ray.get([actors[i % len(actors)].network.remote(arch) for i, arch in enumerate(archs)])

    def setup_seconds(self) -> list[float]:
        """Each evaluator's set-up time (waits for the set-ups; raises what a set-up raised)."""
        import ray

        return [float(s) for s in ray.get(self._setups)]

    def histories(self) -> dict[str, list[dict[str, Any]]]:
        """Each set-up evaluator's :meth:`_Evaluator.history` and process id, by name (tests, diagnostics)."""
        import ray

        ready = self.ready()
        named = [(name, actor) for name, actor in zip(self.names, self.actors) if name in ready]
        histories = ray.get([actor.history.remote() for _, actor in named])
        pids = ray.get([actor.pid.remote() for _, actor in named])
        return {name: [{**h, "pid": pid} for h in history]
                for (name, _), history, pid in zip(named, histories, pids)}

    def close(self) -> None:
        """Kill the evaluators (idempotent)."""
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - already gone, or Ray shut down: nothing left to end
                log.debug("evaluator already gone: %s", exc)
        self.actors, self._setups, self._placed, self._ready, self._checked = [], [], [], set(), set()

    def __enter__(self) -> EvaluatorPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
