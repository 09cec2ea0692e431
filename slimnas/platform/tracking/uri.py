"""The one resolution of an MLflow tracking URI (standard library only: ``slimnas ui`` and the preflight checks use it
without importing torch or MLflow)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_tracking_uri"]


def default_tracking_uri(configured: str | None = None) -> str:
    """The one resolution of an MLflow tracking URI: ``configured`` (a config's ``tracking_uri``) when given, else
    ``$MLFLOW_TRACKING_URI`` when set (a team's server), else ``sqlite:///<working dir>/mlflow.db``."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
