"""Resume across processes: ``slimnas search`` killed with SIGKILL and continued with ``--restore`` in a new process.

Real components: a briefly trained tiny supernet, a tiny latency table served by the real latency service (a Ray
actor), real Ray Tune, real processes killed with SIGKILL. "The same results" (the promise of
:mod:`slimnas.platform.stages.search`): per (method, target) the same arch, predicted latency, top-1 and evaluations;
the same slimming trajectory; every method run evaluating the same archs. The job uses early stopping with the
``exact`` rule (which never changes a decision, whatever order concurrent trials report in) and no device
verification (measured latencies are timing noise, not results).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray
import yaml

from slimnas.latency import build_table
from slimnas.latency.actor import LatencyClient
from slimnas.latency.backends import TorchCPUBackend
from slimnas.latency.protocol import Protocol
from slimnas.platform.cli import main
from slimnas.platform.runtime.staging import SETTINGS_FILE, StagedFolder
from slimnas.platform.tune.searcher import AskTellSearcher
from slimnas.search import SlimmingSearch
from slimnas.search_spaces.efficientformer import SearchSpace
from slimnas.testing import TOY_SPACE, tiny_train_config, toy_latency
from slimnas.trainers import train_supernet


# ------------------------------------------------------------------------------------------------ the staged folder
def _folder(root: Path) -> StagedFolder:
    folder = StagedFolder(root / "job", "results.json")
    folder.final.mkdir(parents=True)
    (folder.final / "results.json").write_text("old")
    folder.staging.mkdir()
    (folder.staging / "results.json").write_text("new")
    return folder


def test_a_swap_killed_half_way_is_completed_or_undone(tmp_path):
    # killed between the two renames, the new folder complete: the swap is completed
    folder = _folder(tmp_path / "a")
    os.rename(folder.final, folder.previous)
    folder.settle()
    assert (folder.final / "results.json").read_text() == "new"
    assert not folder.previous.exists() and not folder.staging.exists()
    # killed after the second rename: only the deletion of the old folder was missing
    folder = _folder(tmp_path / "b")
    os.rename(folder.final, folder.previous)
    os.rename(folder.staging, folder.final)
    folder.settle()
    assert (folder.final / "results.json").read_text() == "new" and not folder.previous.exists()
    # an incomplete staged run beside a half-done swap: the old folder comes back, the staged run stays
    folder = _folder(tmp_path / "c")
    (folder.staging / "results.json").unlink()
    os.rename(folder.final, folder.previous)
    folder.settle()
    assert (folder.final / "results.json").read_text() == "old" and folder.has_staged_run()


def test_a_new_run_discards_a_staged_one_and_a_restore_keeps_it(tmp_path):
    folder = StagedFolder(tmp_path / "job", "results.json")
    lines: list[str] = []
    assert folder.begin({"seed": 0}, restore=False, echo=lines.append) is False
    (folder.staging / "partial").write_text("x")
    assert folder.begin({"seed": 0}, restore=True, echo=lines.append) is True
    assert (folder.staging / "partial").is_file() and folder.staged_settings() == {"seed": 0}
    assert folder.begin({"seed": 1}, restore=False, echo=lines.append) is False
    assert not (folder.staging / "partial").exists() and folder.staged_settings() == {"seed": 1}
    assert len(lines) == 1 and "discarding the unfinished run" in lines[0] and "--restore" in lines[0]
    assert not folder.final.exists()  # nothing is swapped in before a run has finished
    with pytest.raises(RuntimeError, match="not complete"):
        folder.commit()
    (folder.staging / "results.json").write_text("{}")
    folder.commit()
    assert (folder.final / SETTINGS_FILE).is_file() and not folder.staging.exists()


# ------------------------------------------------------------------------------- nothing pickled holds a live handle
class _LiveHandle:
    """Stands for a Ray actor handle: pickling it fails, as unpickling a real one in a new Ray session does."""

    def __reduce__(self):
        raise AssertionError("a live actor handle was pickled")


def test_what_tune_pickles_holds_no_live_latency_actor(tmp_path):
    from ray import cloudpickle

    client = LatencyClient(_LiveHandle(), table="table", name="lut-job")
    copy = pickle.loads(pickle.dumps(client))  # a description: reconnects by name on first use
    assert (copy.name, copy.table, copy.namespace) == ("lut-job", "table", "slimnas") and copy._actor is None

    def slimming(latency_fn):
        return SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), [[5.0], [4.0], [1.0, 2.0], [3.0, 0.5]], latency_fn,
                              16.0)

    handle = _LiveHandle()

    def live(archs):  # a latency function holding a live handle (cloudpickle pickles it by value)
        assert handle is not None
        return toy_latency(archs)

    searcher = AskTellSearcher(slimming(live), "s", tmp_path / "s.searcher.json")
    first = searcher.suggest("t1")
    restored = cloudpickle.loads(cloudpickle.dumps(searcher))  # as Tune writes and reads tuner.pkl
    assert restored.algorithm is None
    with pytest.raises(RuntimeError, match="attach"):
        restored.suggest("t2")
    restored.attach(slimming(toy_latency))
    assert restored.algorithm.outstanding() and restored.suggest("t3") == first  # in flight: evaluated again


# ------------------------------------------------------------------------------------ killed and restored for real
@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A search job config (slimming and random at one target) on a trained tiny supernet and a tiny table."""
    root = tmp_path_factory.mktemp("resume")
    result = train_supernet(tiny_train_config(root, name="sup", run={"max_steps_per_epoch": 4}))
    fast = Protocol(passes=2, samples=3, pass_ms=0.0, warmup_ms=2.0, extra_passes=1)
    space = SearchSpace.preset("tiny")
    table = build_table(space, TorchCPUBackend(threads=1), root / "tiny.parquet", protocol=fast, harness="isolated",
                        calibrate_networks=0)
    target = round(0.7 * table.predict(space.max_arch()), 4)  # slimming takes a few rounds to get there
    data = {"name": "job", "supernet": str(result.checkpoint), "output": str(root / "out"),
            "data": {"kind": "digits", "batch_size": 32, "calib_images": 64}, "eval_images": 64,
            "latency": {"table": str(root / "tiny.parquet"), "measure_final": False},
            "methods": ["slimming", "random"], "targets": [target], "budget": 2,
            "early_stop": {"rule": "exact"}, "ray": {"num_cpus": 2, "object_store_mb": 128, "max_concurrent": 1},
            "tracking": {"enabled": False}}
    config = root / "search.yaml"
    config.write_text(yaml.safe_dump(data))
    other = root / "other.yaml"
    other.write_text(yaml.safe_dump({**data, "seed": 1}))
    return root, config, other, target


def _tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_results(a: dict, b: dict) -> None:
    row = ("method", "target_ms", "arch", "predicted_ms", "top1", "evaluations", "verification")
    assert [[r[k] for k in row] for r in a["results"]] == [[r[k] for k in row] for r in b["results"]]
    step = ("arch", "latency_ms", "accuracy", "action", "evaluations")
    assert [[s[k] for k in step] for s in a["trajectories"]["slimming"]] == \
        [[s[k] for k in step] for s in b["trajectories"]["slimming"]]
    assert a["histories"].keys() == b["histories"].keys()
    for label in a["histories"]:  # the same archs evaluated (the order of a round's reports may differ)
        assert sorted(json.dumps(e["arch"], sort_keys=True) for e in a["histories"][label]) == \
            sorted(json.dumps(e["arch"], sort_keys=True) for e in b["histories"][label])


class _Driver:
    """``slimnas search`` in its own process group, with its own Ray temp folder (so stragglers can be found)."""

    def __init__(self, config: Path, log: Path, *extra: str) -> None:
        self.ray_tmp = tempfile.mkdtemp(prefix="sn-res-", dir="/tmp")
        env = {**os.environ, "RAY_TMPDIR": self.ray_tmp, "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "slimnas.platform.cli", "search", "--config", str(config),
                                      *extra], stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_for(self, condition, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.proc.poll() is None, f"the driver ended (rc {self.proc.returncode}) before {what}"
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def kill(self) -> None:
        """SIGKILL the driver and everything of its session (the embedded Ray's cleanup is not tested here)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and self.ray_tmp.encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        self.log.close()

    def finish(self, timeout: float = 240.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()  # stragglers, if any


@pytest.fixture
def drivers():
    """Starts drivers; whatever still runs at the end of the test is killed."""
    started: list[_Driver] = []

    def start(*args) -> _Driver:
        started.append(_Driver(*args))
        return started[-1]
    yield start
    for driver in started:
        if not driver.log.closed:
            driver.kill()


def _history(state: Path) -> list:
    try:
        return json.loads(state.read_text())["algorithm"]["history"]
    except (OSError, ValueError):
        return []


def test_a_killed_search_continues_in_a_new_process_to_the_same_results(job, drivers, capsys):
    root, config, other, target = job
    final, staging = root / "out" / "job", root / "out" / "job.staging"
    tune = staging / "tune"
    # an uninterrupted run: the reference
    try:
        assert main(["search", "--config", str(config)]) == 0
    finally:
        ray.shutdown()
    reference = json.loads((final / "results.json").read_text())
    before = _tree(final)
    capsys.readouterr()

    # restoring the finished job does nothing, and says so in one line
    assert main(["search", "--config", str(config), "--restore"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "had finished: nothing to restore" in out and not err.strip()
    assert _tree(final) == before and not staging.exists()

    # a new run, killed inside slimming's run once an evaluation was in (a restore continues from the runs' state
    # files, not from Tune's experiment state, which Tune may not have written yet)
    first = drivers(config, root / "first.log")
    first.wait_for(lambda: len(_history(tune / "slimming.searcher.json")) >= 1, "a slimming evaluation")
    first.kill()
    assert _tree(final) == before  # the finished job is untouched beside the staged run
    assert not json.loads((tune / "slimming.searcher.json").read_text())["algorithm"]["finished"]

    # a restore with other settings does not continue that run
    assert main(["search", "--config", str(other), "--restore"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "started with other settings (seed: 0 -> 1)" in err[0], err

    # restored in a new process (Tuner.restore, a new latency service), killed again once random's experiment began
    second = drivers(config, root / "second.log", "--restore")
    random_state = tune / f"random@{target:g}ms.searcher.json"
    second.wait_for(random_state.is_file, "random's first candidates")
    second.kill()
    log = (root / "second.log").read_text()
    assert "cannot be restored" not in log and "Traceback" not in log, log[-3000:]
    assert json.loads((tune / "slimming.searcher.json").read_text())["algorithm"]["finished"]
    assert _tree(final) == before

    # restored again: it finishes, swaps the staged folder in and reaches the reference's results
    third = drivers(config, root / "third.log", "--restore")
    assert third.finish() == 0, (root / "third.log").read_text()[-3000:]
    log = (root / "third.log").read_text()
    assert "cannot be restored" not in log and "Traceback" not in log, log[-3000:]
    assert not staging.exists() and not (root / "out" / "job.previous").exists()
    restored = json.loads((final / "results.json").read_text())
    _same_results(restored, reference)
    assert restored["job_dir"] == reference["job_dir"] == str(final)


# ------------------------------------------------------------------------------------------- a pipeline run killed
def test_a_pipeline_run_killed_while_training_is_continued_by_restore_to_the_same_supernet(finished_run, tmp_path):
    """``slimnas quickstart`` (the smallest settings) SIGKILLed in its train stage, then run with ``--restore`` in a new
    process: it finishes, and trains the same supernet as the uninterrupted run (every tensor of the checkpoint:
    weights, architecture parameters, optimiser states; only its wall times and the path of its MLflow store differ)."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "slimnas.platform.cli", *finished_run.argv]
    driver = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        seen = []
        for line in driver.stderr:  # until the training loop runs
            seen.append(line)
            if line.startswith("[train] "):
                break
        assert seen and seen[-1].startswith("[train] "), "".join(seen)[-2000:]
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    record = cwd / "runs" / "quickstart" / "pipeline.json"
    assert not record.exists() or "finished" not in json.loads(record.read_text())  # nothing recorded as done

    restored = subprocess.run(command + ["--restore"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert restored.returncode == 0, restored.stderr[-3000:]
    state = json.loads(record.read_text())
    original = json.loads((finished_run.cwd / "runs" / "quickstart" / "pipeline.json").read_text())
    import torch

    def trained(root: Path, stages: dict) -> dict:
        checkpoint = torch.load(root / stages["train"]["checkpoint"], weights_only=True)
        return {k: checkpoint[k] for k in ("model", "optimizer", "alpha_optimizer", "epoch", "global_step", "arch")}

    again, first = trained(cwd, state["stages"]), trained(finished_run.cwd, original["stages"])
    flat_again, flat_first = _flat(again), _flat(first)
    assert flat_again.keys() == flat_first.keys()
    differ = [k for k, v in flat_first.items() if not (torch.equal(v, flat_again[k]) if isinstance(v, torch.Tensor)
                                                       else v == flat_again[k])]
    assert differ == []
    results = json.loads((cwd / "runs" / "quickstart" / "search" / "results.json").read_text())["results"]
    assert {(r["method"], r["target_ms"] > 0) for r in results} == {("slimming", True)}


def _flat(value, prefix: str = "") -> dict:
    """A nested checkpoint as ``path -> leaf``."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}/{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}[{i}]").items()}
    return {prefix: value}
