"""What a search job's Tune trial runs: a thin call to a long-lived evaluator that holds the supernet and the data.

The supernet's weights and the data settings travel once through the object store (:func:`evaluation_payload`); each
evaluator actor of the job (:mod:`~slimnas.platform.tune.evaluators`) builds a :class:`SupernetEvaluation` from it
once (:func:`supernet_evaluation`: the supernet, the validation and calibration batches) and keeps it for every
evaluation of the job. Evaluation is :class:`~slimnas.trainers.Evaluator`'s: extract the subnet, re-estimate its
BatchNorm statistics on the calibration images, count correct top-1 predictions batch by batch.

The Tune trial (:func:`evaluate_on_evaluator`) reserves no CPU: it asks the evaluator named in ``config["evaluator"]``
for the candidate's batches one at a time and reports, after each, the running counts (``correct``, ``seen``,
``total``, ``batches_done``, ``batches_total``) for :class:`~slimnas.platform.tune.scheduler.EarlyStopScheduler`; the
last report carries ``accuracy``. A trial the scheduler stops ends at its report (Tune's function API), so it asks for
no further batch and the evaluator is free at once.

Timing. Every report carries ``eval_s``, the evaluation's **own time** so far: the seconds the evaluator spent
computing it (extracting the subnet, re-estimating its BatchNorm statistics, the validation batches up to this one),
measured with ``time.perf_counter`` inside the evaluator; not counted: the evaluator's one-time set-up (building the
supernet, loading the data), the calls between trial and evaluator and the time ``tune.report`` waits for Tune to take
a report. The first evaluation of an evaluator carries that set-up's seconds as ``setup_s``. A search stage's overhead
is its wall time against the sum of its evaluations' own times (``docs/benchmarks.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ray import tune

__all__ = ["evaluation_payload", "supernet_evaluation", "SupernetEvaluation", "EvaluatedNetwork",
           "evaluate_on_evaluator", "THIN_TRIAL_RESOURCES"]

#: A thin trial's Tune resources: no CPU (its evaluator holds the trial slot's CPUs), a token of memory, since Tune
#: refuses a trial that requests nothing at all.
THIN_TRIAL_RESOURCES: dict[str, float] = {"cpu": 0.0, "memory": float(2**20)}

_HANDLES: dict[str, Any] = {}  # evaluator name -> actor handle, per trial process

#: How often an evaluator may die and come back (Ray restarts it) while one trial uses it.
RESTARTS = 2


def evaluation_payload(supernet: Any, data: dict[str, Any], eval_images: int | None, key: str) -> dict[str, Any]:
    """What every evaluator needs (put in the object store once by the pool)."""
    return {"key": key, "space": supernet.space.to_dict(), "num_classes": supernet.num_classes,
            "state_dict": {k: v.detach().cpu() for k, v in supernet.state_dict().items()},
            "data": data, "eval_images": eval_images}


@dataclass
class SupernetEvaluation:
    """An :class:`~slimnas.platform.tune.evaluators.Evaluation` on the supernet's weights: ``images`` validation
    images in ``batches`` batches."""

    evaluator: Any  # slimnas.trainers.Evaluator
    images: int
    batches: int
    data: Any  # slimnas.trainers.EvaluationData: the batches the evaluator scores on

    def progress(self, arch: dict[str, Any]) -> Iterator[tuple[int, int, int]]:
        from slimnas.search_spaces import Arch

        return self.evaluator.evaluate_progress(Arch.from_dict(arch))

    def network(self, arch: dict[str, Any]) -> EvaluatedNetwork:
        """The network :meth:`progress` scores for ``arch`` (subnet extracted, BatchNorm statistics re-estimated),
        scored again on the same batches: what a job saves as its winner."""
        from slimnas.search_spaces import Arch
        from slimnas.trainers import count_correct

        model = self.evaluator.calibrated(Arch.from_dict(arch))
        correct, total = count_correct(model, self.data.val)
        calib_images = sum(int((b[0] if isinstance(b, (tuple, list)) else b).shape[0]) for b in self.data.calib)
        return EvaluatedNetwork({k: v.detach().cpu() for k, v in model.state_dict().items()}, int(correct),
                                int(total), calib_images)


@dataclass(frozen=True)
class EvaluatedNetwork:
    """A network as an evaluator evaluated it: its state_dict, its top-1 counts on the evaluation images and the
    calibration images its BatchNorm statistics were re-estimated on."""

    state_dict: dict[str, Any]
    correct: int
    total: int
    calib_images: int


def supernet_evaluation(payload: dict[str, Any]) -> SupernetEvaluation:
    """Build the supernet and the evaluation data of ``payload`` (in an evaluator, once; torch on one thread)."""
    import torch

    from slimnas.search_spaces import SearchSpace
    from slimnas.trainers import Evaluator, evaluation_data

    torch.set_num_threads(1)
    space = SearchSpace.from_dict(payload["space"])
    with torch.random.fork_rng(devices=[]):
        supernet = space.space_family.supernet(space, num_classes=payload["num_classes"])
    supernet.load_state_dict(payload["state_dict"])
    supernet.eval()
    data = evaluation_data(payload["data"], space.img_size, payload["eval_images"])
    return SupernetEvaluation(Evaluator(supernet, data.val, data.calib, cache=True), data.images, len(data.val), data)


def _evaluator(name: str) -> Any:
    import ray

    from slimnas.platform.tune.evaluators import EVALUATOR_NAMESPACE

    handle = _HANDLES.get(name)
    if handle is None:
        handle = _HANDLES[name] = ray.get_actor(name, namespace=EVALUATOR_NAMESPACE)
    return handle


def evaluate_on_evaluator(config: dict[str, Any]) -> None:
    """Evaluate ``config["arch"]`` on the evaluator ``config["evaluator"]``, reporting after each validation batch.

    An evaluator that died (its node lost) comes back (``max_restarts``) and sets up again: the evaluation starts over
    on it, its batches already reported are not reported again (the evaluation is deterministic), up to
    :data:`RESTARTS` times."""
    import ray
    from ray.exceptions import RayActorError

    evaluator = _evaluator(config["evaluator"])
    token = f"{config.get('run', '')}#{config['candidate_id']}#{tune.get_context().get_trial_id()}"
    reported = 0
    for attempt in range(RESTARTS + 1):
        try:
            report = ray.get(evaluator.begin.remote(token, config["arch"]))
            while report is not None:
                done = report["batches_done"] >= report["batches_total"]
                if done:
                    report["accuracy"] = report["correct"] / report["seen"]
                if report["batches_done"] > reported:
                    tune.report(report)  # a stopped trial ends here
                    reported = report["batches_done"]
                if done:
                    return
                report = ray.get(evaluator.step.remote(token))
            return
        except RayActorError:
            if attempt == RESTARTS:
                raise
