"""A search job's winners as MLflow models, and their names in the model registry.

Each winner chosen by ``tracking.models`` (``all``, ``best``: the comparison's ``*`` per target, ``none``) is logged
on its child run as an MLflow model of the pytorch flavour, format ``pt2``: a ``torch.export`` program of the saved
network (:func:`slimnas.load_winner`'s model, BatchNorm statistics recalibrated), so loading it runs no pickle and
needs neither slimnas nor its code; with a tensor signature (``float32 [-1, C, H, W] -> [-1, classes]``, the batch
dynamic), an input example, the model card (``model.json``) as an extra file and in the metadata. Loading:
``mlflow.pyfunc.load_model(uri).predict(images)`` (a float32 array ``N x C x H x W``) returns the logits that
``slimnas.load_winner(folder)[0](images)`` returns; ``mlflow.pytorch.load_model(uri)`` returns the network.
The child run's metrics (top-1, latencies, ``meets_target``) are logged before the model, so the model carries them
too (the experiment's *Models* tab lists them). Winners that share an arch (the same network) are exported once: the
later child runs link the same model as their output. Each child run is tagged ``slimnas.model_uri``.

Logging needs no network: the requirements are given (``torch``, ``numpy``, ``mlflow`` at the installed versions),
never inferred, and the input example is not re-served at logging time. Cost: torch.export traces each network,
about 2-4 s per network of the ``tiny`` space on 2 shared cores, plus 5-12 s once per process (the exporter's first
use; measured 2026-11-30: 4 winners, 3 networks, 16-24 s with the machine under a load of 5).

With ``tracking.onnx_models`` each of those networks is also logged as an MLflow model of the onnx flavour,
``model-onnx`` on the same child run: the file ``slimnas export --format onnx`` writes (the graph the ``onnxruntime``
latency tables time; checked in ONNX Runtime within 1e-4 of the network before it is logged), with the same signature,
example and card. ``mlflow.pyfunc.load_model(uri).predict(images)`` then runs it in ONNX Runtime. Its URI is the
child run's tag ``slimnas.onnx_model_uri``. The registry holds the pytorch models.

``tracking.registered_model`` (a name template, :func:`~slimnas.platform.stages.search_config.registered_name`)
registers logged winners: every one when the template names ``{method}``, else the best per target. Each is a new
version of the registered model of that name (created if needed), tagged with its method, target and top-1.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Any

from slimnas.platform.stages.comparison import BEST, best_marks
from slimnas.platform.stages.search_config import registered_name
from slimnas.winners import CARD_FILE, load_winner, winner_folder, winner_name

__all__ = ["LoggedWinner", "log_winner_models", "chosen_for_models", "MODEL_NAME", "MODEL_URI_TAG", "ONNX_MODEL_NAME",
           "ONNX_MODEL_URI_TAG"]

#: The logged model's name on its run (``runs:/<child run>/model``).
MODEL_NAME = "model"
#: The child run's tag holding its model's URI (``models:/<model id>``).
MODEL_URI_TAG = "slimnas.model_uri"
#: The ONNX model's name on its run, and the child run's tag holding its URI (``tracking.onnx_models``).
ONNX_MODEL_NAME = "model-onnx"
ONNX_MODEL_URI_TAG = "slimnas.onnx_model_uri"


@dataclass(frozen=True)
class LoggedWinner:
    """One winner logged as an MLflow model: its child run, the model's id and URI, and its registry version
    (``registered``: ``(name, version)``, ``None`` when it was not registered)."""

    label: str  # method@target ms
    run_id: str
    model_id: str
    model_uri: str
    registered: tuple[str, int] | None = None
    onnx_model_uri: str | None = None  # the onnx flavour's model (tracking.onnx_models), else None


def chosen_for_models(results: Sequence[Any], which: str) -> list[Any]:
    """The results (:class:`~slimnas.platform.stages.search.MethodResult`) whose winners ``which`` (``all``,
    ``best``, ``none``) logs: answered ones; for ``best`` the first marked best at each target. Loosest target
    first, methods in the job's order."""
    if which == "none":
        return []
    marks = best_marks(results)
    chosen, targets_done = [], set()
    for i in sorted(range(len(results)), key=lambda i: -results[i].target_ms):
        r = results[i]
        if r.arch is None:
            continue
        if which == "all":
            chosen.append(r)
        elif marks[i] == BEST and r.target_ms not in targets_done:
            chosen.append(r)
            targets_done.add(r.target_ms)
    return chosen


@contextmanager
def _fluent(uri: str, experiment_id: str) -> Iterator[None]:
    """MLflow's fluent API (``log_model``, ``register_model``) on ``uri`` and in experiment ``experiment_id`` for the
    block (``log_model`` puts a model in the fluent API's experiment, not its run's: ``Default`` unless told), without
    its artifact progress bars (one per model, in the job's output); the process's own settings restored after."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # the one scoped switch MLflow has

    settings = {"MLFLOW_EXPERIMENT_ID": experiment_id, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _requirements(names: Sequence[str] = ("torch", "numpy", "mlflow")) -> list[str]:
    """What serving a model needs (default: a ``pt2`` model), pinned to what is installed (no inference: no
    subprocess, no network)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def _signature_and_example(card: Any) -> tuple[Any, Any]:
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    size, chans = card.img_size, card.in_chans
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, chans, size, size))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, card.num_classes))]))
    # a batch of 2: torch.export keeps a dimension of size 1 static, and the batch must stay dynamic
    example = np.random.default_rng(0).standard_normal((2, chans, size, size)).astype(np.float32)
    return signature, example


def _log_model(uri: str, experiment_id: str, run_id: str, folder: Path, tags: Mapping[str, str]) -> Any:
    """Log the winner saved in ``folder`` as a ``pt2`` model on ``run_id`` (of ``experiment_id``); MLflow's
    ``ModelInfo``."""
    import mlflow.pytorch

    model, card = load_winner(folder)
    signature, example = _signature_and_example(card)
    with _fluent(uri, experiment_id), warnings.catch_warnings():
        # the attention blocks fill a bias cache on their first call: harmless in an exported program
        warnings.filterwarnings("ignore", message=r"The tensor attributes .* were assigned during export")
        return mlflow.pytorch.log_model(
            model, name=MODEL_NAME, run_id=run_id, signature=signature, input_example=example,
            serialization_format="pt2", pip_requirements=_requirements(), extra_files=[str(folder / CARD_FILE)],
            metadata={"slimnas_model_card": card.to_dict()}, tags=dict(tags), validate_serving_input=False)


def _log_onnx_model(uri: str, experiment_id: str, run_id: str, folder: Path, tags: Mapping[str, str]) -> Any:
    """Log the winner saved in ``folder`` as an onnx-flavour model on ``run_id``: what ``slimnas export --format
    onnx`` writes (checked in ONNX Runtime); MLflow's ``ModelInfo``."""
    import tempfile

    import mlflow.onnx
    import onnx

    from slimnas.export import export_winner, source_from_folder

    source = source_from_folder(folder)
    signature, example = _signature_and_example(source.card)
    with tempfile.TemporaryDirectory(prefix="slimnas-onnx-") as work:
        written = export_winner(source, "onnx", Path(work) / "model.onnx")
        proto = onnx.load(str(written.path))
    with _fluent(uri, experiment_id):
        return mlflow.onnx.log_model(
            proto, name=ONNX_MODEL_NAME, run_id=run_id, signature=signature, input_example=example,
            pip_requirements=_requirements(("onnx", "onnxruntime", "numpy", "mlflow")),
            extra_files=[str(folder / CARD_FILE)], save_as_external_data=False,
            metadata={"slimnas_model_card": source.card.to_dict()}, tags=dict(tags))


def _registers_each_method(template: str) -> bool:
    return any(f == "method" for _, f, _, _ in Formatter().parse(template))


def log_winner_models(uri: str, results: Sequence[Any], run_ids: Mapping[str, str], job_dir: Path,
                      tracking: Any, job_name: str) -> list[LoggedWinner]:
    """Log the winners ``tracking.models`` chooses (see the module docstring) from ``job_dir/winners/`` on their
    child runs (``run_ids``: :func:`~slimnas.winners.winner_name` -> run id), and register them under
    ``tracking.registered_model``; returns what was logged, in logging order."""
    import mlflow
    from mlflow.entities import LoggedModelOutput
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    template = tracking.registered_model
    chosen = chosen_for_models(results, tracking.models)
    to_register = set()
    if template is not None:
        picked = chosen if _registers_each_method(template) else chosen_for_models(results, "best")
        to_register = {winner_name(r.method, r.target_ms) for r in picked}
    by_arch: dict[str, Any] = {}  # arch JSON -> the model logged for it
    onnx_by_arch: dict[str, Any] = {}  # arch JSON -> its onnx model (tracking.onnx_models)
    logged = []
    for r in chosen:
        label = winner_name(r.method, r.target_ms)
        rid = run_ids[label]
        folder = winner_folder(job_dir, r.method, r.target_ms)
        key = (folder / "arch.json").read_text()
        info = by_arch.get(key)
        tags = {"slimnas.method": r.method, "slimnas.target_ms": f"{r.target_ms:g}"}
        if info is None:
            experiment_id = client.get_run(rid).info.experiment_id
            info = by_arch[key] = _log_model(uri, experiment_id, rid, folder, tags)
            if tracking.onnx_models:
                onnx_by_arch[key] = _log_onnx_model(uri, experiment_id, rid, folder, tags)
        else:  # the same network: this run's output is the model already logged
            client.log_outputs(rid, [LoggedModelOutput(info.model_id, step=0)] + (
                [LoggedModelOutput(onnx_by_arch[key].model_id, step=0)] if key in onnx_by_arch else []))
        model_uri = f"models:/{info.model_id}"
        client.set_tag(rid, MODEL_URI_TAG, model_uri)
        onnx_uri = f"models:/{onnx_by_arch[key].model_id}" if key in onnx_by_arch else None
        if onnx_uri is not None:
            client.set_tag(rid, ONNX_MODEL_URI_TAG, onnx_uri)
        registered = None
        if label in to_register:
            name = registered_name(template, job=tracking.job or job_name, experiment=tracking.experiment,
                                   target=r.target_ms, method=r.method)
            with _fluent(uri, client.get_run(rid).info.experiment_id):
                version = mlflow.register_model(model_uri, name, await_registration_for=0, tags={
                    "slimnas.method": r.method, "slimnas.target_ms": f"{r.target_ms:g}",
                    "slimnas.top1": f"{r.top1:.6g}", "slimnas.run_id": rid})
            registered = (name, int(version.version))
        logged.append(LoggedWinner(label, rid, info.model_id, model_uri, registered, onnx_uri))
    return logged
