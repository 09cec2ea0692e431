"""Ray for a slimnas command: connect to a cluster, or start an embedded local Ray that does not outlive the command.

:func:`init_ray` is the one place a command (``slimnas run``, ``quickstart``, ``search``, ``sweep``, ``train`` on Ray)
starts Ray:

- ``ray.address`` set, or else ``$RAY_ADDRESS`` (set inside a Ray job): connect to that cluster; a failure is one
  ``InputError`` line naming the field (or the variable) and the address.
- Otherwise: a local Ray with ``ray.num_cpus`` CPUs, ``ray.object_store_mb`` of object store and no dashboard. Ray's
  token authentication stays as Ray sets it up (on for a local cluster started by ``ray.init``). A watchdog process
  (:mod:`slimnas.platform.runtime._ray_watchdog`) ends that Ray session's processes once the command is gone, even
  when it was killed with SIGKILL (Ray's own fate-sharing leaves the raylet's agents running then).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from slimnas.errors import InputError

if TYPE_CHECKING:
    from slimnas.platform.stages.search_config import RaySection

__all__ = ["init_ray", "local_session"]

log = logging.getLogger(__name__)

_WATCHDOG = Path(__file__).with_name("_ray_watchdog.py")
_watchdogs: list[subprocess.Popen] = []  # kept to reap those that ended (a Ray shut down and started again)


def init_ray(ray_cfg: RaySection, log_to_driver: bool | None = None, field: str = "ray.address") -> bool:
    """Connect to the cluster or start a local Ray (see the module docstring); returns whether this call initialised
    Ray (``False``: it already was). ``log_to_driver``: stream the workers' output here (default: on a cluster
    only); ``field``: the config field an error names."""
    import ray

    if ray.is_initialized():
        return False
    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        what = field if ray_cfg.address else "RAY_ADDRESS"
        try:
            ray.init(address=address, log_to_driver=True if log_to_driver is None else log_to_driver)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is one line for the user
            raise InputError(f"{what}: cannot connect to the Ray cluster at {address} ({type(exc).__name__})") from None
        return True
    ray.init(num_cpus=ray_cfg.num_cpus, object_store_memory=ray_cfg.object_store_mb * 2**20,
             include_dashboard=False, log_to_driver=bool(log_to_driver))
    _start_watchdog()
    return True


def local_session() -> tuple[str, list[int]] | None:
    """The name of the local Ray session this process started, and the pids of its GCS server and raylet; ``None``
    when this process started none."""
    import ray._private.worker as worker

    node = getattr(worker, "_global_node", None)
    if node is None or not getattr(node, "head", False):
        return None
    pids = [info.process.pid for kind in ("gcs_server", "raylet")
            for info in node.all_processes.get(kind, []) if getattr(info, "process", None) is not None]
    return node.session_name, pids


def _start_watchdog() -> None:
    """Start the watchdog of the local session (see :mod:`slimnas.platform.runtime._ray_watchdog`)."""
    try:
        session = local_session()
    except (ImportError, AttributeError) as exc:  # Ray's internals moved: run without the watchdog, say so
        log.warning("no watchdog for the local Ray (%s); after a SIGKILL some Ray processes may remain", exc)
        return
    if session is None or not session[1]:
        return
    name, pids = session
    _watchdogs[:] = [w for w in _watchdogs if w.poll() is None]
    command = [sys.executable, "-I", str(_WATCHDOG), str(os.getpid()), name, *map(str, pids)]
    _watchdogs.append(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True))
