"""The embedded local Ray that a command starts does not outlive it, not even after SIGKILL of the driver (the
watchdog leaving with a Ray shut down normally is checked in test_pipeline_history). Only that session's processes
are ever signalled."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..conftest import _pids_naming

SESSION = re.compile(r"session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_\d+")


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0].decode()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is not)."""
    info = _ppid_and_state(pid)
    return info is not None and info[1] != "Z"


def _descendants(root: int) -> set[int]:
    """Every live process below ``root`` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _ppid_and_state(int(entry.name))) is not None:
            children.setdefault(info[0], []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {pid for pid in found if _alive(pid)}


def _naming(marker: str) -> set[int]:
    """Live processes whose command line contains ``marker``."""
    return {pid for pid in _pids_naming(marker) if _alive(pid)}


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def test_sigkill_of_a_pipeline_driver_leaves_no_process_of_its_ray(finished_run, tmp_path):
    cwd = finished_run.copy(tmp_path / "work")
    record = (cwd / "runs" / "quickstart" / "pipeline.json").read_bytes()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[3]), env.get("PYTHONPATH", "")])
    driver = subprocess.Popen([sys.executable, "-m", "slimnas.platform.cli", *finished_run.argv, "--force", "search"],
                              cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(driver.stderr, lines), daemon=True).start()
    started: set[int] = set()
    try:
        deadline, seen = time.monotonic() + 120, []
        while time.monotonic() < deadline:  # until Ray Tune runs the search on the embedded Ray
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "".join(seen)
            seen.append(line)
            if line.startswith("[search] slimming: running"):
                break
        time.sleep(1.0)  # the first trials' workers start
        started = _descendants(driver.pid)
        sessions = {m for pid in started for m in SESSION.findall(Path(f"/proc/{pid}/cmdline").read_text(
            errors="replace")) if _alive(pid)}
        assert len(sessions) == 1 and len(started) >= 4, (sessions, started)  # gcs, raylet, workers, the watchdog
        [session] = sessions
        assert _naming(session) <= started | {driver.pid}

        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ({p for p in started if _alive(p)} or _naming(session)):
            time.sleep(0.25)
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in started | _naming(session) if _alive(p)}
        assert left == {}, left
        # a killed run records nothing: no stage had ended
        assert (cwd / "runs" / "quickstart" / "pipeline.json").read_bytes() == record
        _restore_continues_it(finished_run, cwd, env)
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in started:  # never leave a straggler behind, whatever the assertions said
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _restore_continues_it(finished_run, cwd: Path, env: dict[str, str]) -> None:
    """The killed pipeline run, continued with ``--restore`` in a new process: it finishes the staged search, with an
    answer for every method and target of the original run, and the history keeps both runs."""
    import json

    restored = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", *finished_run.argv, "--force", "search",
                               "--restore"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert restored.returncode == 0, restored.stderr[-3000:]
    search = cwd / "runs" / "quickstart" / "search"
    assert not search.with_name("search.staging").exists()
    original = json.loads((finished_run.cwd / "runs" / "quickstart" / "search" / "results.json").read_text())
    now = json.loads((search / "results.json").read_text())
    assert sorted((r["method"], r["target_ms"]) for r in now["results"]) == sorted(
        (r["method"], r["target_ms"]) for r in original["results"])
    state = json.loads((cwd / "runs" / "quickstart" / "pipeline.json").read_text())
    assert [a["status"] for a in state["attempts"]] == ["finished", "finished"]
    assert state["attempts"][-1]["restore"] is True and state["stages"]["search"]["status"] == "ran"
