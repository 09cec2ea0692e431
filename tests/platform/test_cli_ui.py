"""``slimnas ui`` stops everything it started: real ``mlflow ui`` trees and small real process trees.

Every process started for a test carries an environment variable with a fresh marker (inherited by all descendants,
also those that leave the process group), so "nothing left" is checked over the whole machine from ``/proc``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from slimnas.platform.cli import main
from slimnas.platform.runtime.preflight import check_port

from .conftest import BIN, _pids_naming, _wait_http, free_port

MARKER_VAR = "SLIMNAS_TEST_UI_MARKER"


def _pids_marked(marker: str) -> list[int]:
    """Live processes whose environment holds ``MARKER_VAR=marker`` (a zombie's environment reads empty)."""
    needle, found = f"{MARKER_VAR}={marker}".encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill_marked(marker: str) -> None:
    for pid in _pids_marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _marked_env(marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env[MARKER_VAR] = marker
    return env


def test_slimnas_ui_stops_the_whole_server_on_sigterm(tmp_path):
    port, store, marker = free_port(), tmp_path / "mlflow.db", uuid.uuid4().hex
    log = open(tmp_path / "ui.log", "w")
    cmd = [str(BIN / "slimnas"), "ui", "--port", str(port), "--backend-store-uri", f"sqlite:///{store}"]
    proc = subprocess.Popen(cmd, env=_marked_env(marker), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", 90, proc=proc)
        started = {pid: _cmdline(pid) for pid in _pids_marked(marker)}  # slimnas, mlflow, uvicorn (one worker)
        assert any("uvicorn" in c for c in started.values()) and len(started) >= 3, started
        assert not any("huey" in c for c in started.values()), started  # MLflow's job execution is off

        begin = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)  # `slimnas ui` only, as `kill PID` does
        assert proc.wait(timeout=30) == 0
        stopped_s = time.monotonic() - begin
        assert _pids_marked(marker) == [], {p: _cmdline(p) for p in _pids_marked(marker)}
        assert _pids_naming(str(store)) == [] and _pids_naming(f"--port {port}") == []
        check_port("127.0.0.1", port)  # what the next `slimnas ui` checks first
        with socket.socket() as sock:  # and what its server does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        assert stopped_s < 15, stopped_s
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_marked(marker)
        proc.wait()
        log.close()


#: A stand-in server: a child that ignores SIGTERM, a child in another process group, then it sleeps (``stay``) or
#: exits with status 3 (``exit``), leaving both children behind.
FAKE_SERVER = """
import os, subprocess, sys, time
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
stubborn = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
assert stubborn.stdout.readline() == b"ready\\n"
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], preexec_fn=os.setpgrp)
open(sys.argv[1] + ".tmp", "w").close()
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
if sys.argv[2] == "exit":
    sys.exit(3)
time.sleep(120)
"""

SUPERVISOR = "import sys; from slimnas.platform.commands.ui import serve; sys.exit(serve(sys.argv[1:], grace_s=1.0))"


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT", "server-exits"])
def test_serve_stops_the_servers_session_on_a_signal_or_when_the_server_exits(stop, tmp_path):
    marker, ready = uuid.uuid4().hex, tmp_path / "ready"
    (tmp_path / "server.py").write_text(FAKE_SERVER)
    mode = "exit" if stop == "server-exits" else "stay"
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, sys.executable, str(tmp_path / "server.py"),
                             str(ready), mode], env=_marked_env(marker), start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        begin = time.monotonic()
        if stop != "server-exits":
            assert len(_pids_marked(marker)) == 4  # the supervisor, the server and its two children
            proc.send_signal(getattr(signal, stop))
        assert proc.wait(timeout=15) == (3 if stop == "server-exits" else 0)
        assert _pids_marked(marker) == [], {p: _cmdline(p) for p in _pids_marked(marker)}
        assert 0.8 < time.monotonic() - begin < 10  # the grace period, then SIGKILL for the one ignoring SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_marked(marker)
        proc.wait()


def test_a_port_left_in_time_wait_is_free_to_the_next_ui():
    with socket.socket() as server:  # a stopped server whose last connection it closed itself
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server's side closes first: it stays in TIME_WAIT
            client.recv(1)
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the port is held, for a bind without SO_REUSEADDR
    check_port("127.0.0.1", port)  # but a server can listen there, and the check says so


def test_ui_refuses_a_bad_worker_count(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ui", "--workers", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().endswith("argument --workers: must be from 1 to 64, got 0")
