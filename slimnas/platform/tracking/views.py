"""Links into the MLflow UI that open on what a search job's user compares: the methods' answers at one target.

Looked at in a browser (headless Chromium, MLflow 3.17, 2026-11-30): an experiment's page opens in the UI's "GenAI"
mode on an empty "Overview" (traces, tokens, an assistant panel), whatever the experiment's kind, and the runs table's
default columns show no metric. Two things the UI reads from its address fix that without touching the user's own
settings:

- ``workflowType=machine_learning`` switches the UI to its "Model training" mode (it keeps that choice afterwards), so
  ``#/experiments/<id>/runs`` is the runs table;
- ``viewStateShareKey=<key>`` opens a **shared view**: an experiment tag ``mlflow.sharedViewState.<key>`` whose value
  is the view as JSON (a search filter, a sort, the columns shown). The UI offers "Exit shared view" and keeps the
  user's own saved view.

:func:`save_comparison_views` writes one view per target of a search job (its child runs at that target: method,
top-1, measured and predicted latency, whether it meets the target, evaluations; best top-1 first);
:func:`comparison_urls` gives their addresses, which the pipeline prints. The filter is MLflow's search syntax, the
same the REST API takes, so a test checks it by searching with it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["VIEW_TAG_PREFIX", "comparison_filter", "comparison_urls", "runs_list_url", "runs_page_url",
           "save_comparison_views", "view_key"]

#: The experiment-tag prefix under which the MLflow UI looks up a shared view (``viewStateShareKey``).
VIEW_TAG_PREFIX = "mlflow.sharedViewState."

#: The columns a comparison view shows, after the run's name (MLflow's column keys).
COLUMNS = ("metrics.`top1`", "metrics.`measured_ms`", "metrics.`predicted_ms`", "metrics.`meets_target`",
           "metrics.`evaluations`", "metrics.`extra_evaluations`", "tags.`slimnas.method`",
           "tags.`slimnas.target_ms`")

#: Where ``slimnas ui`` serves the UI by default.
LOCAL_UI = "http://127.0.0.1:5000"


def view_key(parent_run_id: str, index: int) -> str:
    """The share key of the search run ``parent_run_id``'s view at its ``index``-th target (letters, digits, dashes:
    it goes into an address)."""
    return f"slimnas-{parent_run_id}-{index}"


def comparison_filter(parent_run_id: str, target_ms: float) -> str:
    """The child runs of ``parent_run_id`` at ``target_ms`` (as :mod:`~slimnas.platform.tracking.search` tags them)."""
    return f"tags.`mlflow.parentRunId` = '{parent_run_id}' AND tags.`slimnas.target_ms` = '{target_ms:g}'"


def save_comparison_views(client: Any, experiment_id: str, parent_run_id: str, targets: Sequence[float]) -> None:
    """One shared view per target of the search run ``parent_run_id`` (experiment tags; see the module docstring)."""
    for i, target in enumerate(targets):
        state = {"searchFilter": comparison_filter(parent_run_id, target), "orderByKey": "metrics.`top1`",
                 "orderByAsc": False, "selectedColumns": list(COLUMNS)}
        client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + view_key(parent_run_id, i), json.dumps(state))


def runs_list_url(base: str) -> str:
    """The address of the experiments list of the UI at ``base``, in its "Model training" mode."""
    return f"{base.rstrip('/')}/#/experiments?workflowType=machine_learning"


def runs_page_url(base: str, experiment_id: str, view: str | None = None) -> str:
    """The address of experiment ``experiment_id``'s runs table in the "Model training" mode of the UI at ``base``,
    opened on the shared view ``view`` when given."""
    params = {"workflowType": "machine_learning"}
    if view is not None:
        params["viewStateShareKey"] = view
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(params, quote_via=quote)}"


def comparison_urls(uri: str, parent_run_id: str, targets: Sequence[float]) -> list[tuple[float, str]]:
    """``(target, address)`` of each comparison view of a search run logged at ``uri``: on the MLflow server itself
    for an ``http(s)`` store, on ``slimnas ui``'s default address otherwise. Empty when the run or its views are
    missing (a job logged by an older slimnas)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        tags = client.get_experiment(experiment_id).tags
    except MlflowException:
        return []
    base = uri if uri.startswith(("http://", "https://")) else LOCAL_UI
    return [(target, runs_page_url(base, experiment_id, view_key(parent_run_id, i))) for i, target in enumerate(targets)
            if VIEW_TAG_PREFIX + view_key(parent_run_id, i) in tags]
