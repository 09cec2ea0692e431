"""``slimnas ui``: the MLflow UI on a local tracking store, stopped as a whole.

``mlflow ui`` is a tree of processes: the ``mlflow`` command, uvicorn (a supervisor and its workers), MLflow's job
runner and its huey consumers. Started as a plain child, the tree outlives a ``kill`` (SIGTERM) of ``slimnas ui``
with the port still bound. :func:`serve` starts the server in a session of its own (a Ctrl-C at the terminal reaches
``slimnas ui`` only); when ``slimnas ui`` gets SIGTERM, SIGINT or SIGHUP, or when the server exits on its own, it
SIGTERMs every process of that session, SIGKILLs those left after :data:`GRACE_S` (at once on a second signal), waits
until none is left and returns: 0 when stopped by a signal, the server's exit status when it exited on its own.
A SIGKILL of ``slimnas ui`` itself cannot be forwarded (stop the server's session by hand then).
The server runs without MLflow's job execution (a job runner and eight huey consumers that serve GenAI evaluation
jobs, none of slimnas's: nine processes less on a small machine) unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is set;
its job subprocesses run in sessions of their own and end themselves once orphaned.

The UI binds 127.0.0.1 unless ``--host`` says otherwise, with one uvicorn worker unless ``--workers`` says otherwise.
A tracking store that is an MLflow server has its own UI: the command names it and starts nothing. In the UI, child
runs are named ``<method>@<target>ms``; the methods at one target are one filter: ``tags.`slimnas.target_ms` = '1.5'``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from slimnas.platform.commands._args import int_in, port

__all__ = ["serve", "session_members", "stop_session", "register"]

#: Seconds the server's processes get to exit after SIGTERM before they are SIGKILLed.
GRACE_S = 5.0
#: The signals that stop ``slimnas ui`` (and so the server).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_POLL_S = 0.1
#: MLflow's job execution (a job runner and eight huey consumers, for GenAI evaluation jobs): off unless set.
JOBS_VAR = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def session_members(sid: int) -> list[int]:
    """The live processes (zombies excluded) of session ``sid`` or of process group ``sid``, from ``/proc``; where
    there is no ``/proc``, ``[sid]`` while the process group ``sid`` has a member, else ``[]``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(sid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [sid]
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        state, pgrp, session = fields[0], int(fields[2]), int(fields[3])
        if state not in (b"Z", b"X") and sid in (pgrp, session):
            found.append(int(entry.name))
    return found


def _signal_session(sid: int, sig: int) -> None:
    """``sig`` to process group ``sid`` and to the processes of session ``sid`` that moved to another group."""
    try:
        os.killpg(sid, sig)
    except ProcessLookupError:
        pass
    for pid in session_members(sid):
        try:
            if os.getpgid(pid) != sid:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_session(proc: subprocess.Popen, grace_s: float = GRACE_S, hurry: Sequence[int] = ()) -> None:
    """Stop every process of the session ``proc`` leads: SIGTERM, then SIGKILL those left after ``grace_s`` (or as
    soon as ``hurry``, a list that grows with each further stop signal, grows); returns once none is left."""
    sid, asked = proc.pid, len(hurry)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        _signal_session(sid, sig)
        deadline = time.monotonic() + wait_s
        while True:
            proc.poll()  # reap the leader
            if not session_members(sid):
                return
            if time.monotonic() >= deadline or (sig == signal.SIGTERM and len(hurry) > asked):
                break
            time.sleep(_POLL_S)


def serve(cmd: Sequence[str], grace_s: float = GRACE_S, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` in a session of its own until it exits or this process gets a stop signal, then stop the whole
    session (:func:`stop_session`). Returns 0 after a stop signal, else the server's exit status (128 + N when it
    was killed by signal N). The main thread only (it installs signal handlers, restored on return)."""
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)

    # a signal this process ignores (``nohup``, ``cmd &`` in a script) stays ignored, and so does it for the server
    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS if signal.getsignal(sig) != signal.SIG_IGN}
    try:
        proc = subprocess.Popen(list(cmd), start_new_session=True, env=env)
        try:
            while not received:
                try:
                    proc.wait(timeout=0.25)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            stop_session(proc, grace_s, received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        return 0
    code = proc.returncode
    return 128 - code if code < 0 else code


def _ui(args: argparse.Namespace) -> int:
    from slimnas.platform.runtime.preflight import check_port, check_tracking_uri, split_url
    from slimnas.platform.tracking.uri import default_tracking_uri as tracking_uri
    from slimnas.platform.tracking.views import runs_list_url

    uri = tracking_uri(args.backend_store_uri)
    what = "--backend-store-uri" if args.backend_store_uri else \
        "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default tracking store"
    if uri.startswith(("http://", "https://")):  # a team's MLflow server has its own UI
        split_url(uri, what)
        print(f"the tracking store is the MLflow server {uri}: open {uri} in a browser")
        return 0
    check_tracking_uri(uri, what)
    check_port(args.host, args.port)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port",
           str(args.port), "--workers", str(args.workers)]
    env = dict(os.environ)
    env.setdefault(JOBS_VAR, "false")
    experiments = runs_list_url(f"http://{args.host}:{args.port}")
    print(f"MLflow UI on {experiments} (store {uri}); Ctrl-C stops it", file=sys.stderr, flush=True)
    code = serve(cmd, env=env)
    if code:
        print(f"slimnas ui: the MLflow server exited with status {code}", file=sys.stderr)
    return code


def register(sub) -> None:
    p = sub.add_parser("ui", help="the MLflow UI for comparing candidates (127.0.0.1 by default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=5000)
    p.add_argument("--workers", type=int_in(1, 64), default=1,
                   help="uvicorn worker processes (default 1: one user's UI)")
    p.add_argument("--backend-store-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.set_defaults(func=_ui)
