"""The Tune trainable that evaluates one candidate subnet: supernet weights, BN recalibrated, top-1 on validation.

The supernet's weights travel once through the object store (``tune.with_parameters``) and each worker process
builds the supernet and its evaluation data once, then keeps them for every later trial (``reuse_actors``; a search
job runs all its runs in one Tune experiment, :mod:`~slimnas.platform.tune.multiplex`, so a worker serves every run).
Evaluation is :class:`~slimnas.trainers.Evaluator`'s: extract the subnet, re-estimate its BatchNorm statistics on
the calibration images, count correct top-1 predictions batch by batch. After each batch the trial reports the running
counts (for :class:`~slimnas.platform.tune.scheduler.EarlyStopScheduler`); the last report carries ``accuracy``.

Timing. Every report carries ``eval_s``, the evaluation's **own time** so far: the seconds this worker spent
computing it (extracting the subnet, re-estimating its BatchNorm statistics, the validation batches up to this one),
measured with ``time.perf_counter`` inside the worker; not counted: the worker's one-time set-up (building the
supernet, loading the data) and the time ``tune.report`` waits for Tune to take a report. The first report of a worker
that has just set up carries that set-up's seconds as ``setup_s``. A search stage's overhead is its wall time against
the sum of its evaluations' own times (``docs/benchmarks.md``).
"""

from __future__ import annotations

import time
from typing import Any

from ray import tune

__all__ = ["evaluation_payload", "evaluate_candidate"]

_WORKER: dict[str, Any] = {}


def evaluation_payload(supernet: Any, data: dict[str, Any], eval_images: int | None, key: str) -> dict[str, Any]:
    """What every evaluation trial needs (put in the object store once by ``tune.with_parameters``)."""
    return {"key": key, "space": supernet.space.to_dict(), "num_classes": supernet.num_classes,
            "state_dict": {k: v.detach().cpu() for k, v in supernet.state_dict().items()},
            "data": data, "eval_images": eval_images}


def _evaluator(payload: dict[str, Any]):
    if _WORKER.get("key") == payload["key"]:
        return _WORKER["evaluator"], _WORKER["images"]
    started = time.perf_counter()
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
    evaluator = Evaluator(supernet, data.val, data.calib, cache=True)
    _WORKER.clear()
    _WORKER.update(key=payload["key"], evaluator=evaluator, images=data.images, batches=len(data.val),
                   setup_s=time.perf_counter() - started)
    return evaluator, data.images


def evaluate_candidate(config: dict[str, Any], payload: dict[str, Any]) -> None:
    """Evaluate ``config["arch"]``, reporting running counts and own time after each validation batch."""
    from slimnas.search_spaces import Arch

    evaluator, images = _evaluator(payload)
    setup_s = _WORKER.pop("setup_s", None)  # reported once, by the first trial of a fresh worker
    batches_total = _WORKER["batches"]
    steps = evaluator.evaluate_progress(Arch.from_dict(config["arch"]))
    own = 0.0
    while True:
        started = time.perf_counter()
        step = next(steps, None)
        own += time.perf_counter() - started
        if step is None:
            return
        correct, seen, batches = step
        report = {"correct": correct, "seen": seen, "total": images, "batches_done": batches,
                  "batches_total": batches_total, "eval_s": own}
        if setup_s is not None:
            report["setup_s"], setup_s = setup_s, None
        if batches == batches_total:
            report["accuracy"] = correct / seen
        tune.report(report)
