"""``pipeline.json`` is an append-only history, and a run that is rejected or fails changes nothing already written.

Every test works on a copy of one finished quickstart (the ``finished_run`` fixture): its checkpoints, table, search
folder (Tune experiments included), ``pipeline.json``, MLflow store and artifacts.
"""

import hashlib
import json
import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from slimnas.platform.cli import main
from slimnas.platform.commands.pipeline import apply_overrides, quickstart_source
from slimnas.platform.pipeline.config import load_pipeline
from slimnas.platform.pipeline.run import run_pipeline
from slimnas.platform.runtime import ray_runtime

from ..conftest import _pids_naming


def tree(root) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> SHA-256 of the bytes (``dir`` for a folder)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _record(cwd) -> dict:
    return json.loads((cwd / "runs" / "quickstart" / "pipeline.json").read_text())


def test_the_record_of_a_finished_run_is_one_attempt(finished_run):
    state = _record(finished_run.cwd)
    assert state["format"] == "slimnas-pipeline" and state["format_version"] == 2
    [attempt] = state["attempts"]
    assert attempt["status"] == "finished" and attempt["error"] is None and attempt["ended"] == state["finished"]
    assert attempt["started"] <= attempt["ended"] and attempt["force"] == [] and attempt["restore"] is False
    assert attempt["stages"] == state["stages"] and attempt["config"] == state["config"]
    assert [state["stages"][s]["status"] for s in ("train", "table", "search")] == ["ran", "built", "ran"]
    assert state["mlflow_run_id"] == attempt["mlflow_run_id"] is not None
    # written with the user's umask (not mkstemp's 0600): the record, the table, the checkpoint
    mask = os.umask(0)
    os.umask(mask)
    for path in (finished_run.cwd / "runs" / "quickstart" / "pipeline.json", state["stages"]["table"]["path"],
                 state["stages"]["train"]["checkpoint"]):
        assert stat.S_IMODE(os.stat(finished_run.cwd / path).st_mode) == 0o666 & ~mask, path


def _rejections(cwd) -> list[tuple[list[str], str]]:
    """Configs (``--set``/``--force``) rejected at the table or the search stage (and one at the train stage), and
    what their message must name."""
    foreign = cwd / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    table = cwd / "runs" / "quickstart" / "latency" / "torch-cpu-b1.parquet"
    truncated = cwd / "truncated.parquet"
    truncated.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    return [
        (["--set", f"latency.table={foreign}"], "foreign.parquet"),
        (["--set", f"latency.table={truncated}", "--force", "search"], "truncated.parquet"),
        (["--set", "latency.protocol.samples=3"], "samples"),
        (["--set", "search.predictor=calibrated"], "search.predictor"),
        (["--set", "search.predictor=calibrated", "--force", "search"], "search.predictor"),
        (["--set", "train.optim.lr=0.5"], "lr"),
    ]


def test_rejected_runs_leave_every_file_byte_identical(finished_run, run_copy, capsys):
    cases = _rejections(run_copy)
    before = tree(run_copy)
    for extra, named in cases:
        assert main(finished_run.argv + extra) == 2, extra
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("slimnas quickstart: error: ") and named in last, (extra, last)
        assert changes(before, tree(run_copy)) == [], extra  # pipeline.json, tune/, mlflow.db, mlruns/ included
    assert not ray.is_initialized()


def test_a_finished_job_run_again_or_restored_is_a_no_op_that_says_so(finished_run, run_copy, capsys):
    before = tree(run_copy)
    assert main(finished_run.argv) == 0  # everything reused
    assert main(finished_run.argv + ["--restore"]) == 0
    err = capsys.readouterr().err
    assert "every stage had finished: nothing to restore" in err
    assert err.count("[quickstart 4/4] retrain: reused") == 2  # the retrained winner too
    assert changes(before, tree(run_copy)) == []  # pipeline.json (no new attempt), search folder, MLflow store


def test_a_failed_run_appends_its_attempt_and_keeps_every_earlier_output(finished_run, run_copy):
    before, record = tree(run_copy), _record(run_copy)
    assert any(k.startswith(os.path.join("runs", "quickstart", "search", "tune", "slimming")) for k in before)

    def interrupt(line: str) -> None:  # Ctrl-C once the new search job has started on Ray Tune
        if line.startswith("[search] slimming: running"):
            raise KeyboardInterrupt

    pairs = [finished_run.argv[i + 1] for i in range(1, len(finished_run.argv), 2)]
    cfg = load_pipeline(apply_overrides(quickstart_source(), pairs))
    earlier = list(ray_runtime._watchdogs)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, force=["search"], echo=interrupt)
    assert not ray.is_initialized()
    # the job shut its local Ray down: the Ray's watchdog sees that and leaves, nothing of the session remains
    [watchdog] = [w for w in ray_runtime._watchdogs if w not in earlier]
    assert watchdog.wait(timeout=15) == 0
    session = watchdog.args[4]  # python -I _ray_watchdog.py DRIVER SESSION PID...
    assert session.startswith("session_") and _pids_naming(session) == []
    # every earlier file as it was; new are only the record and the staged search kept for --restore
    staged = os.path.join("runs", "quickstart", "search.staging")
    changed = changes(before, tree(run_copy))
    assert [c for c in changed if not c.startswith(staged)] == [os.path.join("runs", "quickstart", "pipeline.json")]
    assert not any(c in before for c in changed if c.startswith(staged))
    state = _record(run_copy)
    first, failed = state["attempts"]
    assert first == record["attempts"][0]  # the earlier attempt, as it was
    assert failed["status"] == "failed" and failed["error"] == "KeyboardInterrupt" and failed["force"] == ["search"]
    assert failed["started"] <= failed["ended"] and "search" not in failed["stages"]
    assert [failed["stages"][s]["status"] for s in ("train", "table")] == ["reused", "reused"]
    # what holds now is still the finished attempt's: its config, end, search record and MLflow run
    for key in ("config", "finished", "stages", "mlflow_run_id"):
        assert state[key] == record[key], key


def test_an_older_record_is_read_kept_and_continued(finished_run, run_copy, capsys):
    """A version-1 ``pipeline.json`` (one flat record): a rejected run leaves it as it is; a run reusing every stage
    keeps it as the first attempt and appends its own."""
    path = run_copy / "runs" / "quickstart" / "pipeline.json"
    current = _record(run_copy)
    old = {"name": "quickstart", "config": current["config"], "stages": current["stages"],
           "mlflow_run_id": current["mlflow_run_id"], "finished": current["finished"]}
    path.write_text(json.dumps(old, indent=1))
    saved = path.read_bytes()
    assert main(finished_run.argv + ["--set", "search.predictor=calibrated"]) == 2
    assert path.read_bytes() == saved
    capsys.readouterr()
    assert main(finished_run.argv) == 0
    assert capsys.readouterr().err.count(": reused (") == 4  # train, table, search, retrain
    state = _record(run_copy)
    migrated, reused = state["attempts"]
    assert migrated["status"] == "finished" and migrated["stages"] == old["stages"] and migrated["started"] is None
    assert reused["status"] == "finished" and {r["status"] for r in reused["stages"].values()} == {"reused"}
    assert state["stages"] == reused["stages"] and state["finished"] == reused["ended"]
    assert state["mlflow_run_id"] == old["mlflow_run_id"]  # reusing everything logs no new pipeline run
    # the copy's search was reused although its supernet checkpoint has another path: the same bytes (SHA-256)
    assert state["stages"]["search"]["inputs"]["config"]["supernet"] != old["stages"]["search"]["inputs"]["config"][
        "supernet"]
    assert state["stages"]["search"]["inputs"]["supernet_sha256"] == old["stages"]["search"]["inputs"][
        "supernet_sha256"]


def test_a_record_that_is_not_one_stops_the_run_before_any_work(finished_run, run_copy, capsys):
    path = run_copy / "runs" / "quickstart" / "pipeline.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not a record")
    before = tree(run_copy)
    assert main(finished_run.argv) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("slimnas quickstart: error: output: ") and err.endswith(
        "pipeline.json is not a readable pipeline record (UnicodeDecodeError); move it away to start a new history")
    assert changes(before, tree(run_copy)) == []
