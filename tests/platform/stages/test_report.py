"""``report.md`` (slimnas.platform.stages.report): a search job's and a pipeline's, their sections and numbers, the
figures beside them, written atomically; and the quickstart's, in its folders and in MLflow."""

import shutil
from importlib.metadata import version

import pytest
from mlflow.tracking import MlflowClient

from slimnas.platform.pipeline.record import TableRecord
from slimnas.platform.stages.report import ReportSection, write_pipeline_report, write_search_report
from slimnas.platform.stages.search import MethodResult, SearchJobResult
from slimnas.search.slimming import Action, TrajectoryStep
from slimnas.testing import TOY_SPACE

PNG = b"\x89PNG"


def _job(job_dir) -> SearchJobResult:
    arch = TOY_SPACE.max_arch()
    small = arch.with_width(0, 16)
    results = [MethodResult("slimming", 1.2, small.to_dict(), 1.1, 0.8, 10, 1.0, measured_ms=1.15,
                            meets_target=True, verification="met", images=256),
               MethodResult("random", 1.2, arch.to_dict(), 1.0, 0.7, 10, 1.0, measured_ms=1.5, meets_target=False,
                            verification="not met", images=256),
               MethodResult("random", 0.9, arch.to_dict(), 0.85, 0.6, 7, 1.0, measured_ms=0.88, meets_target=True,
                            verify_steps=1, extra_evaluations=3, verification="met", images=256)]
    steps = [TrajectoryStep(0, None, arch, 1.3, 0.9, 0, 1),
             TrajectoryStep(1, Action("width", 0), small, 1.1, 0.8, 2, 3)]
    config = {"name": "demo", "targets": [1.2, 0.9], "budget": "auto", "methods": ["slimming", "random"], "seed": 0,
              "supernet": "/runs/sup.pt", "early_stop": {"enabled": True, "rule": "confident", "z": 3.0},
              "latency": {"table": "/runs/t.parquet", "calibration": None, "measure_final": True,
                          "tolerance_pct": 2.0, "max_extra_steps": 5}}
    return SearchJobResult(config, results, {"random@1.2ms": [{"latency_ms": 1.0, "accuracy": 0.7}]},
                           {"slimming": steps}, str(job_dir))


def _sections(text: str) -> list[str]:
    return [line[3:] for line in text.splitlines() if line.startswith("## ")]


def test_a_search_jobs_report_holds_its_results_and_is_replaced_atomically(tmp_path):
    job = _job(tmp_path)
    path = write_search_report(job, tmp_path)
    text = path.read_text()
    assert path == tmp_path / "report.md" and text.startswith("# slimnas search job 'demo'\n")
    assert _sections(text) == ["Comparison", "Pareto front (measured)", "Slimming trajectory", "Decisions", "Versions"]
    rows = [line for line in text.splitlines() if line.startswith("| 1.2 |") or line.startswith("| 0.9 |")]
    assert rows[0].startswith("| 1.2 | slimming | 1.150 | 1.100 | yes | 0.8000 | [0.747, 0.844] | * | 10 |")
    assert rows[1].startswith("| 1.2 | random | 1.500 | 1.000 | NO | 0.7000 |")  # misses its target: not ranked
    assert rows[2].startswith("| 0.9 | random | 0.880 | 0.850 | yes | 0.6000 |") and "| 7 (+3 verifying) |" in rows[2]
    assert "| 1 | stage 1 width -16 | 1.100 | 0.8000 | 3 |" in text  # the step: what was removed, latency, top-1
    assert "![top-1 against latency](pareto.png)" in text and (tmp_path / "pareto.png").read_bytes()[:4] == PNG
    assert "targets**: 1.2, 0.9 ms (given in ms)" in text and "rule `confident`, z = 3.0" in text
    assert "more than 2.0%" in text and "2 met, 1 not met; 3 extra evaluations" in text
    assert f"| torch | {version('torch')} |" in text and f"| mlflow | {version('mlflow')} |" in text

    inode = path.stat().st_ino
    with pytest.raises(AttributeError):  # a section that fails to render: the report stays as it was
        write_search_report(job, tmp_path, extra=[ReportSection("broken", None)])
    assert path.read_text() == text and path.stat().st_ino == inode
    write_search_report(job, tmp_path, extra=[ReportSection("More", "text")])
    assert path.stat().st_ino != inode and _sections(path.read_text())[-2:] == ["More", "Versions"]  # a new file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.png", "report.md"]  # no temporary file left


def test_a_pipelines_report_adds_the_table_validation_and_extra_sections(tmp_path):
    job_dir, out, validation = tmp_path / "out" / "search", tmp_path / "out", tmp_path / "validation"
    job = _job(job_dir)
    write_search_report(job, job_dir)
    validation.mkdir()
    (validation / "validation.png").write_bytes(PNG + b"-figure")
    summary = {"plain_all": {"n": 50, "within_10pct": 0.98, "mape_pct": 3.2, "max_abs_error_pct": 12.5,
                             "kendall_tau": 0.913}}
    table = TableRecord("built", 100.0, "/runs/t.parquet", "2026-11-29T23:00:00", 144, summary)
    retrain = ReportSection("Retraining", "| method | top-1 |\n|---|---|\n| slimming | 0.95 |")
    path = write_pipeline_report(out, "quick", job, table=table, validation_dir=validation,
                                 times={"train": 91.0, "search": 114.2}, extra=[retrain])
    text = path.read_text()
    assert text.startswith("# slimnas pipeline 'quick'\n") and path == out / "report.md"
    assert _sections(text) == ["Comparison", "Pareto front (measured)", "Latency table", "Slimming trajectory",
                               "Decisions", "Retraining", "Stage times", "Versions"]
    assert "| table (every network) | 50 | 98% | 3.2% | 12.5% | 0.913 |" in text and "144 entries" in text
    assert (out / "validation.png").read_bytes() == PNG + b"-figure" and "](validation.png)" in text
    assert (out / "pareto.png").read_bytes() == (job_dir / "pareto.png").read_bytes()
    assert "| slimming | 0.95 |" in text and "| search | 114.2 |" in text
    assert "disturbed" not in text
    # a validation whose every attempt was disturbed says so, with the command that measures again
    disturbed = {**summary, "measurement": {"attempts": 3, "unsettled": "39 of 50 still had over a quarter ..."}}
    table = TableRecord("built", 100.0, "/runs/t.parquet", "2026-11-29T23:00:00", 144, disturbed)
    text = write_pipeline_report(out, "quick", job, table=table, validation_dir=validation).read_text()
    assert ("**The machine was disturbed through all 3 attempt(s) at this validation (39 of 50 still had over a "
            "quarter ...): its figures say more about the machine than about the table; validate again when it is "
            "quieter: slimnas lut validate --lut /runs/t.parquet**") in text


def test_the_quickstart_writes_both_reports_and_logs_them(finished_run, tmp_path):
    root = finished_run.cwd / "runs" / "quickstart"
    job = SearchJobResult.load(root / "search" / "results.json")
    (result,) = job.results
    for path in (root / "report.md", root / "search" / "report.md"):
        text = path.read_text()
        assert f"| {result.target_ms:g} | slimming | - | {result.predicted_ms:.3f} | - | {result.top1:.4f} |" in text
        assert (path.parent / "pareto.png").read_bytes()[:4] == PNG and "## Slimming trajectory" in text
        assert "verification**: off (`latency.measure_final: false`)" in text
    assert "Not validated (`latency.validate.num_archs: 0`)" in (root / "report.md").read_text()
    shutil.copy(finished_run.cwd / "mlflow.db", tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("slimnas-quickstart")
    (pipeline,) = client.search_runs([experiment.experiment_id], "tags.`slimnas.kind` = 'pipeline'")
    assert {"report/report.md", "report/pareto.png"} <= {a.path for a in client.list_artifacts(pipeline.info.run_id,
                                                                                                "report")}
    search = pipeline.data.tags["slimnas.search_run"]
    assert {"report.md", "pareto.png"} <= {a.path for a in client.list_artifacts(search)}
    local = client.download_artifacts(search, "report.md", str(tmp_path))
    assert open(local).read() == (root / "search" / "report.md").read_text()
    assert not list(root.glob(".*.tmp")) and not list((root / "search").glob(".*.tmp"))  # no temporary file left
