"""Checks made before a job starts work: addresses answer, servers are up, inputs exist.

Each check raises :class:`~slimnas.errors.InputError` with one line naming the field and what is wrong, so that
``slimnas run``/``submit`` fail in seconds instead of after training. Network checks use short timeouts: an address
that does not answer within them is reported as unreachable (a blackholed host would otherwise hang for minutes).
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from slimnas.errors import InputError

if TYPE_CHECKING:
    from .pipeline_config import PipelineConfig

__all__ = ["check_tcp", "check_ray_address", "check_tracking_uri", "check_pipeline"]

TIMEOUT_S = 5.0


def check_tcp(host: str, port: int, what: str, timeout: float = TIMEOUT_S) -> None:
    """Raise ``InputError`` unless a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise InputError(f"{what}: cannot reach {host}:{port} ({reason})") from None


def _host_port(address: str, default_port: int, what: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parsed.port or default_port
    except ValueError:
        raise InputError(f"{what}: bad port in {address!r}") from None
    if not parsed.hostname:
        raise InputError(f"{what}: expected host:port, got {address!r}")
    return parsed.hostname, port


def check_ray_address(address: str | None, what: str = "ray.address") -> None:
    """A Ray cluster address (``host:6379``, ``ray://host:10001``) answers; ``auto``/``None`` are left to Ray."""
    if not address or address in ("auto", "local"):
        return
    default = 10001 if address.startswith("ray://") else 6379
    check_tcp(*_host_port(address, default, what), what)


def check_tracking_uri(uri: str, what: str = "tracking.tracking_uri") -> None:
    """An MLflow server (``http(s)://``) answers ``/health``; a ``sqlite:///`` store's folder exists or can be made."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http(s) only
                if response.status != 200:
                    raise InputError(f"{what}: the MLflow server at {uri} answered {response.status} on /health")
        except urllib.error.HTTPError as exc:
            raise InputError(f"{what}: the MLflow server at {uri} answered {exc.code} on /health") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InputError(f"{what}: cannot reach the MLflow server at {uri} ({reason})") from None
    elif scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:":
            folder = Path(path).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"{what}: cannot create {folder} for {uri} ({exc.strerror})") from None
            if not os.access(folder, os.W_OK):
                raise InputError(f"{what}: {folder} is not writable")
    elif scheme in ("", "file"):
        raise InputError(f"{what}: {uri!r} is a plain file store (MLflow 3 keeps it in maintenance mode); use "
                         f"sqlite:///PATH/mlflow.db or an http(s):// server")


def check_pipeline(cfg: PipelineConfig) -> int:
    """Every input of a pipeline, before any work; returns the data's number of classes."""
    from slimnas.latency.backends import get_backend

    from .training import check_inputs

    num_classes = check_inputs(cfg.train)
    if cfg.search.data is not None:
        from slimnas.trainers import check_data

        try:
            check_data(cfg.search.data)
        except InputError as exc:
            raise InputError(f"search.{exc}") from None
    if cfg.tracking.enabled:
        check_tracking_uri(cfg.tracking_uri())
    check_ray_address(cfg.ray.address)
    if cfg.train.distributed.enabled:
        check_ray_address(cfg.train.distributed.address, "train.distributed.address")
    if cfg.latency.resources is None and not cfg.table_path.is_file():
        # measured here: the backend must run here (a remote task checks on its node)
        reason = get_backend(cfg.latency.backend, **cfg.latency.backend_settings()).unavailable_reason()
        if reason:
            raise InputError(f"latency.backend: {cfg.latency.backend} cannot run here ({reason}); set "
                             f"latency.resources to measure on a cluster node that has the device")
    output = cfg.output_dir
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"output: cannot create {output} ({exc.strerror})") from None
    return num_classes
