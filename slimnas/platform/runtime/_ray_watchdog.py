"""The watchdog of an embedded local Ray: once the driver that started it is gone, end that Ray session's processes.

Ray starts the processes of a local cluster with ``PR_SET_PDEATHSIG``, so the GCS server, the raylet, the log monitor
and the dashboard die with a driver killed by SIGKILL, and idle workers follow the raylet. The raylet's agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) do not: with Ray 2.60 both were still running 15 s after the
driver's SIGKILL (and on, in the issue's report), and they ignore SIGTERM.
:func:`slimnas.platform.runtime.ray_runtime.init_ray` starts this script as a child of the driver, in a session of
its own (a Ctrl-C to the terminal's process group does not reach it):
``python -I _ray_watchdog.py DRIVER_PID SESSION_NAME PID...`` (``PID...``: the session's GCS server and raylet).

It polls twice a second. When the driver has died (this process was re-parented) or when every given pid is gone (the
driver shut Ray down), it ends every process of the user's that belongs to the session (its unique
``session_<date>_<pid>`` name is on the command line, or, for Ray's retitled ``ray::...`` processes, a file of the
session's folder is open), the driver never: SIGTERM, then SIGKILL after a grace period; then it exits. Other Ray
sessions, and other users' processes, are never touched.
Standard library only (it runs with ``-I``, outside the project's environment).
"""

from __future__ import annotations

import os
import signal
import sys
import time

__all__ = ["session_pids", "end_session", "watch"]

POLL_S = 0.5
GRACE_S = 2.0


def session_pids(session: str, spare: int | None = None) -> list[int]:
    """This user's processes of the Ray session ``session`` (never this one nor ``spare``): those whose command line
    names it, and Ray's retitled processes (``ray::IDLE``, ``ray::DashboardAgent``, a task's or actor's name) that
    hold a file of its folder open (their output goes to the session's log files)."""
    marker, uid, found = session.encode(), os.getuid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (os.getpid(), spare):
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid and _of_session(int(entry), marker):
                found.append(int(entry))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _of_session(pid: int, marker: bytes) -> bool:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        cmdline = handle.read()
    if _names(cmdline, marker):
        return True
    if not cmdline.startswith(b"ray::"):
        return False
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if _names(os.fsencode(os.readlink(f"/proc/{pid}/fd/{fd}")), marker):
                return True
        except OSError:
            continue
    return False


def _names(cmdline: bytes, marker: bytes) -> bool:
    """Whether ``marker`` occurs in ``cmdline`` not followed by a digit (``..._123`` is not ``..._1234``)."""
    start = cmdline.find(marker)
    while start >= 0:
        end = start + len(marker)
        if end == len(cmdline) or not cmdline[end:end + 1].isdigit():
            return True
        start = cmdline.find(marker, start + 1)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def end_session(session: str, spare: int | None = None, grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every process of ``session`` (but ``spare``, the driver), then SIGKILL those left after ``grace_s``;
    returns the pids found."""
    found = session_pids(session, spare)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = [pid for pid in session_pids(session, spare) if _alive(pid)]
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 0.0)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [pid for pid in left if _alive(pid)]
        if not left:
            break
    return found


def watch(driver: int, session: str, pids: list[int]) -> None:
    """Wait until ``driver`` is gone (re-parented) or every one of ``pids`` is, then :func:`end_session`."""
    while os.getppid() == driver and any(_alive(pid) for pid in pids):
        time.sleep(POLL_S)
    end_session(session, spare=driver)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it outlives the driver's terminal by design
    watch(int(sys.argv[1]), sys.argv[2], [int(p) for p in sys.argv[3:]])
