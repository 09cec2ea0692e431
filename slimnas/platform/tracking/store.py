"""MLflow tracking of training runs: a :class:`~slimnas.trainers.Callback` that logs to an MLflow tracking store.

:class:`MLflowCallback` logs the flattened config as params, every epoch's metrics (``train_loss``, ``val_top1``,
``alpha_entropy``, ``tau``, ``images_per_s``, ``lr``, ...) at step = epoch, a heatmap of ``softmax(alpha)`` per
MetaPath every ``tracking.figure_every`` epochs and after the last, and at the end the final checkpoint, the search
space (``space.json``), the arch (``arch.json``, arch runs) and the config (``config.yaml``) as artifacts.

Every experiment slimnas creates is a model-training experiment (:func:`ensure_experiment`: tag
``mlflow.experimentKind = custom_model_development``), so MLflow 3's UI opens it on its runs, not on the GenAI
overview it shows for an experiment without that tag.

A run is tagged with its run folder (``slimnas.run_key``); a process that resumes a run (a restarted Ray worker
group, a restarted job) continues logging into the same MLflow run. MLflow is imported only when the callback starts,
so the trainers and Ray workers never import it unless tracking is on. It uses ``MlflowClient`` with an explicit
tracking URI (no global MLflow state). Default store: ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<working dir>/mlflow.db``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from slimnas.platform.tracking.uri import default_tracking_uri
from slimnas.trainers import Callback, Result, TrackingConfig, TrainState

__all__ = ["MLflowCallback", "default_tracking_uri", "ensure_experiment", "flatten", "alpha_heatmap", "log_batch"]

RUN_KEY_TAG = "slimnas.run_key"
#: The experiment tag MLflow 3's UI reads to choose an experiment's pages, and its value for model training (the
#: UI's ``custom_model_development``: runs, metrics, models; without the tag it opens on the GenAI overview).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
_PARAM_LIMIT = 6000


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name`` at ``uri``, created if needed (with ``artifact_location``, ``None``: the
    store's default) as a model-training experiment; an existing one without an experiment kind gets that kind (a
    kind set by someone else is kept). Safe against a concurrent creation of the same experiment."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException:  # created by a concurrent job in the meantime
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return found.experiment_id


def log_batch(client: Any, run_id: str, params: dict[str, str] | None = None,
              metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> None:
    """Params, metrics and tags of run ``run_id`` in one request (one request per value was most of a search job's
    MLflow time on a sqlite store)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                     params=[Param(k, str(v)) for k, v in (params or {}).items()],
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"optim.lr": "0.001", ...}`` (lists and dicts at the leaves as JSON)."""
    out: dict[str, str] = {}
    if isinstance(data, dict) and data:
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    out[prefix.rstrip(".")] = json.dumps(data) if isinstance(data, (list, dict)) else str(data)
    return out


def alpha_heatmap(supernet: Any, title: str = ""):
    """A matplotlib figure of ``softmax(alpha)``: one row per MetaPath, one column per kind (blank: not allowed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    kinds = supernet.space.space_family.kinds
    labels_of = {"id": "I", **supernet.space.space_family.kind_labels}
    rows, labels = [], []
    for s, stage_alpha in enumerate(supernet.alphas()):
        for slot, alpha in enumerate(stage_alpha):
            probs = torch.softmax(alpha.float(), dim=0).tolist()
            row = [np.nan] * len(kinds)
            for kind, p in zip(supernet.space.kinds[s], probs):
                row[kinds.index(kind)] = p
            rows.append(row)
            labels.append(f"stage {s + 1} slot {slot}")
    data = np.array(rows)
    fig, ax = plt.subplots(figsize=(4.0, 0.8 + 0.28 * len(rows)))
    image = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(kinds)), [labels_of.get(k, k) for k in kinds])
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for (i, j), value in np.ndenumerate(data):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="softmax(alpha)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


class MLflowCallback(Callback):
    """Log a training run to MLflow (see the module docstring). ``tracking`` is the config's ``tracking`` section."""

    def __init__(self, tracking: TrackingConfig | dict[str, Any]) -> None:
        self.cfg = tracking if isinstance(tracking, TrackingConfig) else TrackingConfig.model_validate(tracking)
        self.client: Any = None
        self.run_id: str | None = None

    def on_train_start(self, state: TrainState) -> None:
        from mlflow.tracking import MlflowClient

        uri = self.cfg.tracking_uri or default_tracking_uri()
        self.client = MlflowClient(tracking_uri=uri)
        exp_id = ensure_experiment(uri, self.cfg.experiment, self.cfg.artifact_location)
        key = str(state.config.run.run_dir)
        if state.start_epoch > 0:
            found = self.client.search_runs([exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
                                            order_by=["attributes.start_time DESC"], max_results=1)
            if found:
                self.run_id = found[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                return
        name = self.cfg.run_name or state.config.run.name
        run = self.client.create_run(exp_id, run_name=name, tags={RUN_KEY_TAG: key, "slimnas.kind": state.kind})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v[:_PARAM_LIMIT]) for k, v in flatten(state.config.model_dump(mode="json")).items()]
        params.append(Param("world_size", str(state.world_size)))
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(k, float(v), now, state.epoch) for k, v in metrics.items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=values)
        last = state.epoch == state.epochs
        if state.kind == "supernet" and (state.epoch % self.cfg.figure_every == 0 or last):
            import matplotlib.pyplot as plt

            fig = alpha_heatmap(state.model, f"softmax(alpha) after epoch {state.epoch}")
            self.client.log_figure(self.run_id, fig, f"alpha/epoch_{state.epoch:04d}.png")
            plt.close(fig)

    def on_train_end(self, state: TrainState, result: Result) -> None:
        if self.cfg.log_checkpoint and result.checkpoint is not None and Path(str(result.checkpoint)).is_file():
            self.client.log_artifact(self.run_id, str(result.checkpoint), "checkpoint")
        if state.space is not None:
            self.client.log_text(self.run_id, json.dumps(state.space.to_dict(), indent=2), "space.json")
        if state.kind == "arch" and state.arch is not None:
            self.client.log_text(self.run_id, state.arch.to_json(), "arch.json")
        config = yaml.safe_dump(state.config.model_dump(mode="json"), sort_keys=False)
        self.client.log_text(self.run_id, config, "config.yaml")
        self.client.set_terminated(self.run_id, "FINISHED")
