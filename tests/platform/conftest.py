"""Real servers for the platform tests: a Ray head (with the dashboard, token auth on) and an MLflow server.

Each is started on free ports with its own folders, in its own process group, and stopped by signalling that group
only (``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout: float, headers: dict[str, str] | None = None, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}) before {url} answered")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def one_line_exit_2(argv: list[str], capsys, needle: str):
    """``slimnas argv`` (in this process) exits with status 2 and one stderr line containing ``needle``; returns what
    it printed."""
    from slimnas.platform.cli import main

    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit through the parser (still one line, status 2)
        status = exc.code
    assert status == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    return captured


def _pids_naming(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _stop_group(proc: subprocess.Popen, marker: str) -> None:
    """SIGTERM the process group, then SIGKILL it and any straggler whose command line names ``marker``."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()  # reap the group leader
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break  # nobody left in the group
            time.sleep(0.2)
        else:
            continue
        break
    for pid in _pids_naming(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Head:
    address: str  # the dashboard (Jobs API)
    gcs: str
    token: str
    temp_dir: str


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head with the dashboard on 127.0.0.1, 2 CPUs and token auth (a fresh token in its environment)."""
    token = secrets.token_hex(32)
    temp = tempfile.mkdtemp(prefix="slimnas-head-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ports = {name: free_port() for name in ("port", "dashboard-port", "ray-client-server-port",
                                             "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                             "metrics-export-port", "runtime-env-agent-port")}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               OMP_NUM_THREADS="1")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
           "--object-store-memory", str(200 * 2**20), "--include-dashboard", "true",
           "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1", "--temp-dir", temp,
           "--disable-usage-stats", *[f"--{name}={port}" for name, port in ports.items()]]
    log = open(Path(temp) / "ray-start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        _wait_http(f"{address}/api/version", 120, {"Authorization": f"Bearer {token}"}, proc)
        yield Head(address, f"127.0.0.1:{ports['port']}", token, temp)
    finally:
        _stop_group(proc, temp)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@dataclass
class MlflowServer:
    uri: str
    store: Path
    artifacts: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a SQLite store and its own artifact folder (one worker)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    store, artifacts = root / "mlflow.db", root / "artifacts"
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store}", "--artifacts-destination",
           str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{uri}/health", 90, proc=proc)
        yield MlflowServer(uri, store, artifacts)
    finally:
        _stop_group(proc, str(store))
        log.close()


#: The quickstart at its smallest (~30 s): one short epoch, a one-pass table, slimming alone at one target.
SMALLEST_QUICKSTART = [
    "train.run.epochs=1", "train.run.max_steps_per_epoch=2", "train.data.batch_size=32", "train.data.calib_images=64",
    "latency.protocol.passes=1", "latency.protocol.samples=2", "latency.protocol.pass_ms=0",
    "latency.protocol.warmup_ms=5", "latency.protocol.reference_networks=0", "latency.harness=isolated",
    "latency.calibrate_networks=0", "latency.rotation_mb=0",
    "latency.validate.num_archs=0", "search.methods=[slimming]", "search.targets_relative=[0.99]",
    "search.eval_images=32", "search.measure_final=false",
]


@dataclass
class FinishedRun:
    """A working directory holding a finished ``slimnas quickstart`` (``runs/quickstart``, ``mlflow.db``,
    ``mlruns/``), made once per session; tests work on copies (:meth:`copy`), never on it."""

    cwd: Path
    argv: list[str]  # the command that made it (run it again in a copy's folder to reuse every stage)

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.cwd, dest, symlinks=True)
        return dest


@pytest.fixture
def run_copy(finished_run, tmp_path, monkeypatch) -> Path:
    """A copy of the session's finished run as the working directory (no MLflow or Ray address from outside)."""
    cwd = finished_run.copy(tmp_path / "work")
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return cwd


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> FinishedRun:
    from slimnas.platform.cli import main

    cwd = tmp_path_factory.mktemp("finished-run")
    argv = ["quickstart"] + [a for pair in SMALLEST_QUICKSTART for a in ("--set", pair)]
    mp = pytest.MonkeyPatch()
    mp.chdir(cwd)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("RAY_ADDRESS", raising=False)
    try:
        assert main(argv) == 0
    finally:
        mp.undo()
    return FinishedRun(cwd, argv)
