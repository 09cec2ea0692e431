"""Pipeline jobs on a Ray cluster through the Ray Jobs API (the head's dashboard, port 8265 by default).

:func:`connect` opens a :class:`ray.job_submission.JobSubmissionClient` after checking that the address answers, and
sends the cluster's token (Ray's token auth) as an ``Authorization: Bearer`` header. The token is read the way Ray
reads it: ``$RAY_AUTH_TOKEN``, else the file ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``.

:func:`submit` runs ``python -m slimnas.platform.cli run --config <file>`` on the cluster with the config's folder (or
``working_dir``) as the job's working directory (Ray uploads it). On a cluster made from ``ray_cluster.yaml`` the
nodes have slimnas installed; ``ship_code=True`` also uploads this machine's ``slimnas`` package (``py_modules``), so
the job runs exactly the code of the submitter. ``$MLFLOW_TRACKING_URI``, when set here, is passed to the job.

Every failure to reach or authenticate with the cluster, and an unknown job id, raise
:class:`~slimnas.errors.InputError` with one line.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimnas.errors import InputError, shorten
from slimnas.platform.runtime.preflight import check_tcp, split_url

__all__ = ["auth_token", "connect", "submit", "job_status", "job_logs", "stop_job", "wait", "TERMINAL"]

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def auth_token() -> str | None:
    """The cluster token: ``$RAY_AUTH_TOKEN``, the file ``$RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    from slimnas.config import read_text_file

    given = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(given or Path.home() / ".ray" / "auth_token").expanduser()
    if path.is_file():
        return read_text_file(path, "RAY_AUTH_TOKEN_PATH" if given else "~/.ray/auth_token", 2**16).strip() or None
    return None


def _calling(address: str, what: str, call: Callable[[], Any]) -> Any:
    """``call()``, with the errors of the Jobs API turned into one-line ``InputError``s."""
    from ray.exceptions import AuthenticationError

    try:
        return call()
    except AuthenticationError:
        hint = "no token was found" if auth_token() is None else "the token was refused"
        raise InputError(f"{what}: the Ray cluster at {address} requires token authentication and {hint}; set "
                         f"RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)") from None
    except ConnectionError:
        raise InputError(f"{what}: cannot reach the Ray dashboard at {address}") from None
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        if "404" in text or "does not exist" in text:
            raise InputError(f"{what}: not found at {address}") from None
        raise InputError(f"{what}: the Ray Jobs API at {address} answered: {text[:300]}") from None


def connect(address: str | None):
    """A Jobs API client for the dashboard at ``address`` (``http://HEAD:8265``; default
    ``$RAY_API_SERVER_ADDRESS``)."""
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address:
        raise InputError("--address: give the head's dashboard address, e.g. http://HEAD:8265 "
                         "(or set RAY_API_SERVER_ADDRESS)")
    if "://" not in address:
        address = f"http://{address}"
    parsed = split_url(address, "--address")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"--address: expected http://HOST:PORT, got {shorten(repr(address))}")
    port = parsed.port or (443 if parsed.scheme == "https" else 8265)
    check_tcp(parsed.hostname, port, "--address")
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = _calling(address, "--address", lambda: JobSubmissionClient(address, headers=headers))
    client._slimnas_address = address  # for messages
    return client


def submit(client: Any, config: str | os.PathLike, working_dir: str | os.PathLike | None = None,
           run_args: Sequence[str] = (), ship_code: bool = False, submission_id: str | None = None) -> str:
    """Submit ``slimnas run --config <config> <run_args>`` as a Ray job; returns the job's submission id."""
    import slimnas
    from slimnas.platform.pipeline.config import load_pipeline

    cfg_path = Path(config).expanduser().resolve()
    cfg = load_pipeline(cfg_path)  # a bad config fails here, not on the cluster
    folder = Path(working_dir).expanduser().resolve() if working_dir else cfg_path.parent
    if not folder.is_dir():
        raise InputError(f"--working-dir: no such folder {folder}")
    try:
        relative = cfg_path.relative_to(folder).as_posix()
    except ValueError:
        raise InputError(f"--config: {cfg_path} is not inside the working directory {folder}") from None
    entrypoint = " ".join(["python", "-m", "slimnas.platform.cli", "run", "--config", shlex.quote(relative),
                           *map(shlex.quote, run_args)])
    runtime_env: dict[str, Any] = {"working_dir": str(folder)}
    if ship_code:
        runtime_env["py_modules"] = [str(Path(slimnas.__file__).parent)]
    if os.environ.get("MLFLOW_TRACKING_URI"):
        runtime_env["env_vars"] = {"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
    address = getattr(client, "_slimnas_address", "the cluster")
    return _calling(address, "submit", lambda: client.submit_job(
        entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
        metadata={"slimnas.pipeline": cfg.name, "slimnas.config": relative}))


def job_status(client: Any, job_id: str) -> dict[str, Any]:
    """Status, message, entrypoint and times of a job."""
    address = getattr(client, "_slimnas_address", "the cluster")
    info = _calling(address, f"job {job_id}", lambda: client.get_job_info(job_id))
    return {"job": job_id, "status": str(getattr(info.status, "value", info.status)), "message": info.message,
            "entrypoint": info.entrypoint, "start_time": info.start_time, "end_time": info.end_time,
            "metadata": info.metadata}


def job_logs(client: Any, job_id: str) -> str:
    address = getattr(client, "_slimnas_address", "the cluster")
    return _calling(address, f"job {job_id}", lambda: client.get_job_logs(job_id))


def stop_job(client: Any, job_id: str) -> bool:
    """Ask the cluster to stop the job; ``False`` when it had already ended."""
    address = getattr(client, "_slimnas_address", "the cluster")
    return bool(_calling(address, f"job {job_id}", lambda: client.stop_job(job_id)))


def wait(client: Any, job_id: str, echo: Callable[[str], None] | None = None, poll_s: float = 2.0,
         timeout_s: float | None = None) -> str:
    """Wait for the job to end, echoing its new log lines; returns the final status."""
    printed, start = 0, time.monotonic()
    while True:
        status = job_status(client, job_id)["status"]
        if echo is not None:
            logs = job_logs(client, job_id)
            end = len(logs) if status in TERMINAL else logs.rfind("\n", printed) + 1  # whole lines only
            if end > printed:
                for line in logs[printed:end].splitlines():
                    echo(line)
                printed = end
        if status in TERMINAL:
            return status
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"job {job_id} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)
