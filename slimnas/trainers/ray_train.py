"""Ray Train adapter: run :func:`train_supernet` / :func:`train_arch` with DDP on the workers of a Ray cluster.

The only module of :mod:`slimnas.trainers` that imports ``ray``. A ``TorchTrainer`` starts ``distributed.num_workers``
workers (placed by ``accelerator_type``, e.g. the A100 training nodes, or by a ``label_selector``), initialises the
process group (``nccl`` on GPUs, ``gloo`` on CPUs) and runs the same loop as a single process, with:

- checkpoints in the run's storage: rank 0 writes each epoch's checkpoint to a local folder and reports it; Ray Train
  persists it under ``<storage_path>/<run.name>/`` (keeping ``run.keep_checkpoints``); every rank waits until the
  checkpoint is committed before the next epoch, so a crash never loses a finished epoch;
- resume after a worker failure: with ``FailureConfig(max_failures)`` the worker group restarts and every worker
  continues from the latest reported checkpoint (each rank restores its own RNG states);
- resume after a whole-job restart: running the same config again (same ``run.name`` and storage) continues at the
  epoch after the last checkpoint;
- callbacks: the caller passes *factories* (picklable callables returning a :class:`Callback`), called on every
  worker; a callback with ``rank0_only`` runs on rank 0 only. This module never imports the platform's tracking.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from slimnas.config import load_config

from ._callbacks import Callback, Result
from ._checkpoint import CHECKPOINT_FILE, load_checkpoint
from ._config import ArchTrainConfig, DistributedConfig, SupernetTrainConfig
from ._dist import DistContext
from ._train import model_from_checkpoint, train_arch, train_supernet

__all__ = ["fit_on_ray", "scaling_config", "run_config", "TrainingFailed"]

log = logging.getLogger(__name__)

CallbackFactory = Callable[[], Callback]
_CONFIGS = {"supernet": SupernetTrainConfig, "arch": ArchTrainConfig}


class TrainingFailed(RuntimeError):
    """The Ray Train job failed after its allowed restarts (``distributed.max_failures``)."""


def scaling_config(d: DistributedConfig) -> ScalingConfig:
    """Workers, GPUs and placement from the ``distributed`` section."""
    resources: dict[str, float] = {"CPU": d.cpus_per_worker}
    if d.use_gpu:
        resources["GPU"] = 1
    return ScalingConfig(num_workers=d.num_workers, use_gpu=d.use_gpu, resources_per_worker=resources,
                         accelerator_type=d.accelerator_type, label_selector=d.label_selector)


def storage_path(cfg: SupernetTrainConfig | ArchTrainConfig) -> str:
    path = cfg.distributed.storage_path or cfg.run.out_dir
    return path if "://" in path else str(Path(path).expanduser().resolve())


def run_config(cfg: SupernetTrainConfig | ArchTrainConfig) -> RunConfig:
    """The run's name and storage (a restart with the same pair resumes), failures allowed, checkpoints kept."""
    return RunConfig(name=cfg.run.name, storage_path=storage_path(cfg),
                     failure_config=FailureConfig(max_failures=cfg.distributed.max_failures),
                     checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints))


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train.torch

    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    dist = DistContext(context.get_world_rank(), context.get_world_size(), device)
    callbacks = [factory() for factory in config["callbacks"]]
    stored_run = f"{config['storage_path'].rstrip('/')}/{config['config']['run']['name']}"
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(Path(folder) / CHECKPOINT_FILE, "ray checkpoint")

    def report(metrics: dict[str, float], folder: Path | None) -> str | None:
        if folder is None:
            ray.train.report(metrics)
        else:
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(folder)),
                             checkpoint_dir_name=folder.name, delete_local_checkpoint_after_upload=False)
        # Wait (every rank) until the controller has committed this epoch's checkpoint: otherwise a worker that
        # dies right after an epoch can take the epoch's checkpoint down with it, and the restart begins earlier.
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        return None if folder is None else f"{stored_run}/{folder.name}/{CHECKPOINT_FILE}"

    local = Path(tempfile.mkdtemp(prefix="slimnas-ckpt-"))
    train = train_supernet if config["kind"] == "supernet" else train_arch
    try:
        train(config["config"], callbacks, dist=dist, resume_from=resume, report=report, checkpoint_to=local)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _last_line(exc: BaseException) -> str:
    """The innermost error line of a worker traceback (Ray's message holds the whole traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if ("Error" in line or "Exception" in line) and ":" in line
              and not line.startswith(("File ", "Traceback", "["))]
    return errors[-1] if errors else (lines[-1] if lines else type(exc).__name__)


def fit_on_ray(cfg: SupernetTrainConfig | ArchTrainConfig | Any, kind: str = "supernet",
               callback_factories: Sequence[CallbackFactory] = ()) -> Result:
    """Train on Ray (connecting with ``ray.init(address=distributed.address)`` unless Ray is initialised).

    Returns a :class:`Result` whose ``model`` is loaded from the final checkpoint in storage and whose
    ``history`` is the run's full per-epoch history (across restarts). Raises :class:`TrainingFailed` when the job
    fails for good.
    """
    if kind not in _CONFIGS:
        raise ValueError(f"kind: expected one of {sorted(_CONFIGS)}, got {kind!r}")
    cfg = load_config(_CONFIGS[kind], cfg)
    d = cfg.distributed
    if not ray.is_initialized():
        ray.init(address=d.address)
    backend = d.backend if d.backend != "auto" else ("nccl" if d.use_gpu else "gloo")
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"kind": kind, "config": cfg.model_dump(mode="json"), "callbacks": list(callback_factories),
                           "storage_path": storage_path(cfg)},
        torch_config=TorchConfig(backend=backend),
        scaling_config=scaling_config(d),
        run_config=run_config(cfg),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise TrainingFailed(f"training failed on Ray: {_last_line(exc)}") from exc
    if result.error is not None:
        raise TrainingFailed(f"training failed on Ray: {result.error}") from result.error
    if result.checkpoint is None:
        raise TrainingFailed("training on Ray reported no checkpoint")
    with result.checkpoint.as_directory() as folder:
        ckpt = load_checkpoint(Path(folder) / CHECKPOINT_FILE, "ray checkpoint")
    where = result.checkpoint.path
    file = Path(where) / CHECKPOINT_FILE if "://" not in storage_path(cfg) else f"{where}/{CHECKPOINT_FILE}"
    return Result(model_from_checkpoint(ckpt), list(ckpt["history"]), file, int(ckpt["epoch"]))
