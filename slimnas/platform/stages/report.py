"""``report.md``: what a search job (in its folder) or a pipeline job (in its output folder) found and decided.

One plain Markdown file, its figures beside it as PNG files (referred to by name, so the folder and its copy in MLflow
read the same), written atomically:

- **comparison**: per target (loosest first), each method's answer: measured and predicted latency, whether it meets
  the target, top-1 with its 95% Wilson interval, evaluations; the best marked ``*`` and answers within noise of it
  ``~`` (:mod:`slimnas.platform.stages.comparison`, the same marks as the printed comparison);
- **Pareto figure** (``pareto.png``, :mod:`slimnas.platform.stages.pareto`: answers at their measured latency);
- **latency table** (pipeline): the table's validation on whole networks and its figure (``validation.png``);
- **slimming trajectory**: per slimming run, each step's removal, predicted latency, top-1 and evaluations spent;
- **decisions**: the targets (and, for relative ones, the arch and latency they are fractions of), budgets, early
  stopping, the device verification and its outcome;
- extra sections given by the caller (:class:`ReportSection`: e.g. a retraining stage's results);
- **versions**: slimnas, torch, ray, mlflow, Python and the machine.

Inputs are typed records (:class:`~slimnas.platform.stages.search.SearchJobResult`,
:class:`~slimnas.platform.pipeline.record.TableRecord`); no import of torch, ray or mlflow (versions are read from
the installed packages' metadata).
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimnas._io import atomic_write, atomic_write_text
from slimnas.platform.stages.comparison import BEST, WITHIN_NOISE, best_marks
from slimnas.platform.stages.pareto import PARETO_FILE, save_pareto

if TYPE_CHECKING:
    from slimnas.platform.pipeline.record import RetrainRecord, TableRecord
    from slimnas.platform.stages.search import SearchJobResult

__all__ = ["ReportSection", "Versions", "search_sections", "render_report", "write_search_report",
           "write_pipeline_report", "REPORT_FILE", "VALIDATION_FILE"]

REPORT_FILE = "report.md"
VALIDATION_FILE = "validation.png"


@dataclass(frozen=True)
class ReportSection:
    """A section of a report: a ``## title`` and its Markdown ``body``."""

    title: str
    body: str

    def text(self) -> str:
        return f"## {self.title}\n\n{self.body.strip()}\n"


@dataclass(frozen=True)
class Versions:
    """What ran the job: package versions (``-`` when not installed), Python, the machine."""

    slimnas: str
    torch: str
    ray: str
    mlflow: str
    python: str
    machine: str

    @classmethod
    def current(cls) -> Versions:
        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "-"

        import slimnas

        cpu = platform.processor() or platform.machine()
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        machine = f"{platform.system()} {platform.release()} {platform.machine()}, {cpu}, {os.cpu_count()} cores"
        return cls(slimnas.__version__, installed("torch"), installed("ray"), installed("mlflow"),
                   platform.python_version(), machine)

    def section(self) -> ReportSection:
        rows = [("slimnas", self.slimnas), ("torch", self.torch), ("ray", self.ray), ("mlflow", self.mlflow),
                ("python", self.python), ("machine", self.machine)]
        return ReportSection("Versions", _table(["", "version"], rows))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (``|`` in cells escaped)."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def comparison_section(job: SearchJobResult) -> ReportSection:
    """Per target, each method's answer, the best marked (see the module docstring)."""
    from slimnas.search_spaces import Arch

    results = job.results
    marks = best_marks(results)
    order = sorted(range(len(results)), key=lambda i: -results[i].target_ms)  # stable: methods keep their order
    rows = []
    for i in order:
        r = results[i]
        band = r.top1_interval()
        evaluations = f"{r.evaluations}" + (f" (+{r.extra_evaluations} verifying)" if r.extra_evaluations else "")
        rows.append([f"{r.target_ms:g}", r.method, _ms(r.measured_ms), _ms(r.predicted_ms), r.meets_text(),
                     "-" if r.top1 is None else f"{r.top1:.4f}",
                     "-" if band is None else f"[{band.low:.3f}, {band.high:.3f}]", marks[i] or "", evaluations,
                     "-" if r.arch is None else f"`{Arch.from_dict(r.arch)}`"])
    images = sorted({r.images for r in results if r.images})
    on = f"{'/'.join(map(str, images))} validation images" if images else "the validation images"
    where = Path(job.job_dir)
    body = (f"Winners: `{where / 'winners'}/<method>@<target>ms/` (`slimnas.load_winner(folder)`); every "
            f"evaluation: `{where / 'results.json'}`.\n\n")
    body += _table(["target ms", "method", "measured ms", "predicted ms", "meets target", "top-1", "95% CI", "best",
                   "evaluations", "arch"], rows)
    body += (f"\n\n`{BEST}` the highest top-1 among the answers that meet their target; `{WITHIN_NOISE}` within noise "
             f"of it: their 95% Wilson intervals of top-1 on {on} overlap, so this validation set does not tell "
             "them apart. Top-1 is the supernet's weights with BatchNorm statistics recalibrated per subnet (the "
             "saved winners are exactly those networks).")
    return ReportSection("Comparison", body)


def trajectory_section(job: SearchJobResult) -> ReportSection | None:
    """Each slimming run's steps: what was removed, predicted latency, top-1, evaluations spent so far."""
    if not job.trajectories:
        return None
    parts = []
    for label, steps in job.trajectories.items():
        rows = [[s.round, "start" if s.action is None else str(s.action), f"{s.latency_ms:.3f}", f"{s.accuracy:.4f}",
                 s.evaluations, f"`{s.arch}`"] for s in steps]
        parts.append(f"**{label}** ({len(steps) - 1} steps)\n\n"
                     + _table(["round", "removed", "predicted ms", "top-1", "evaluations", "arch"], rows))
    return ReportSection("Slimming trajectory", "\n\n".join(parts))


def decisions_section(job: SearchJobResult) -> ReportSection:
    """The targets, budgets, early stopping and the device verification, from the job's config and results."""
    from slimnas.platform.stages.targets import reference_text

    config = job.config
    ref = job.targets_reference
    targets = ", ".join(f"{t:g}" for t in config.get("targets", []))
    lines = [f"- **targets**: {reference_text(ref) if ref is not None else f'{targets} ms (given in ms)'}"]
    budget = config.get("budget")
    if budget == "auto":
        lines.append("- **budgets**: auto: at each target every budgeted baseline gets the evaluations slimming had "
                     "used when it first reached that target (equal budgets; see `evaluations` above)")
    else:
        lines.append(f"- **budgets**: {budget} evaluations per baseline and target")
    stop = config.get("early_stop") or {}
    on = f"on, rule `{stop.get('rule')}`, z = {stop.get('z')}" if stop.get("enabled") else "off"
    lines.append(f"- **early stopping**: {on}")
    lat = config.get("latency") or {}
    states: dict[str, int] = {}
    for r in job.results:
        states[r.verification or "-"] = states.get(r.verification or "-", 0) + 1
    outcome = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    extra = sum(r.extra_evaluations for r in job.results)
    if lat.get("measure_final", True):
        lines.append(f"- **verification**: every winner measured end to end on the table's device; over its target "
                     f"by more than {lat.get('tolerance_pct')}% it fails (slimming then walks on, at most "
                     f"{lat.get('max_extra_steps')} extra steps; a baseline takes its next best arch): {outcome}; "
                     f"{extra} extra evaluations")
    else:
        lines.append(f"- **verification**: off (`latency.measure_final: false`): {outcome}")
    lines.append(f"- **latency table**: `{lat.get('table')}`"
                 + (f", calibrated predictor `{lat['calibration']}`" if lat.get("calibration") else ""))
    lines.append(f"- **methods**: {', '.join(config.get('methods', []))}; seed {config.get('seed')}; "
                 f"supernet `{config.get('supernet')}`")
    return ReportSection("Decisions", "\n".join(lines))


def search_sections(job: SearchJobResult, figure: str | None = PARETO_FILE) -> list[ReportSection]:
    """A search job's sections: comparison, Pareto figure (``figure``: its file name beside the report), slimming
    trajectory, decisions."""
    sections = [comparison_section(job)]
    if figure is not None:
        sections.append(ReportSection("Pareto front (measured)", (
            f"![top-1 against latency]({figure})\n\nEach method's answers bold at their measured latency (hollow: "
            "predicted), a red X where the target is not met; faint dots: every evaluated subnet (predicted).")))
    trajectory = trajectory_section(job)
    if trajectory is not None:
        sections.append(trajectory)
    sections.append(decisions_section(job))
    return sections


def render_report(title: str, sections: Sequence[ReportSection], versions: Versions | None = None) -> str:
    """The Markdown text: ``# title``, the sections, then the versions."""
    parts = [f"# {title}\n", *(s.text() for s in sections), (versions or Versions.current()).section().text()]
    return "\n".join(parts)


def write_search_report(job: SearchJobResult, folder: str | os.PathLike,
                        extra: Sequence[ReportSection] = ()) -> Path:
    """Draw ``pareto.png`` and write ``report.md`` for ``job`` into ``folder`` (the job's folder, or its staged
    copy), each atomically; returns the report's path."""
    folder = Path(folder)
    save_pareto(job, folder / PARETO_FILE)
    name = job.config.get("name", Path(job.job_dir).name)
    text = render_report(f"slimnas search job '{name}'", [*search_sections(job), *extra])
    return atomic_write_text(folder / REPORT_FILE, text)


def _copy(source: Path, dest: Path) -> Path:
    return atomic_write(dest, lambda tmp: shutil.copyfile(source, tmp))


def disturbed_validation_note(validation: dict[str, Any], table_path: str | Path) -> str | None:
    """What a validation disturbed through every attempt (its summary's ``measurement.unsettled``) must say with its
    figures, in one sentence; ``None`` for a settled one (or one from before the field)."""
    measurement = validation.get("measurement") or {}
    if not measurement.get("unsettled"):
        return None
    return (f"The machine was disturbed through all {measurement.get('attempts', 1)} attempt(s) at this validation "
            f"({measurement['unsettled']}): its figures say more about the machine than about the table; validate "
            f"again when it is quieter: slimnas lut validate --lut {table_path}")


def _validation_section(table: TableRecord | None, validation_dir: Path, folder: Path) -> ReportSection | None:
    if table is None:
        return None
    lines = [f"`{table.path}`: {table.entries} entries, created {table.created} ({table.status} in this job's "
             "latest run)."]
    summary = table.validation or {}
    rows = []
    for key, label in (("plain_all", "table (every network)"), ("calibrated_holdout", "calibrated (held out)")):
        s = summary.get(key)
        if s:
            rows.append([label, s.get("n"), f"{100 * s.get('within_10pct', float('nan')):.0f}%",
                         f"{s.get('mape_pct', float('nan')):.1f}%", f"{s.get('max_abs_error_pct', float('nan')):.1f}%",
                         f"{s.get('kendall_tau', float('nan')):.3f}"])
    if rows:
        lines += ["", "Predicted against measured end to end on random networks:", "",
                  _table(["predictor", "networks", "within +-10%", "mean abs error", "max abs error", "Kendall tau"],
                         rows)]
    disturbed = disturbed_validation_note(summary, table.path)
    if disturbed:
        lines += ["", f"**{disturbed}**"]
    figure = validation_dir / VALIDATION_FILE
    if figure.is_file():
        _copy(figure, folder / VALIDATION_FILE)
        lines += ["", f"![predicted against measured latency]({VALIDATION_FILE})"]
    elif not rows:
        lines += ["", "Not validated (`latency.validate.num_archs: 0`)."]
    return ReportSection("Latency table", "\n".join(lines))


def retrain_section(record: RetrainRecord) -> ReportSection:
    """The retrain stage's winners: top-1 with the supernet's weights next to the retrained top-1 (same images)."""
    rows = [[m.method, f"{m.target_ms:g}", m.init, m.epochs, f"{m.top1:.4f}", f"{m.retrained_top1:.4f}",
             f"{m.retrained_top1 - m.top1:+.4f}", m.images] for m in record.models]
    body = _table(["method", "target ms", "init", "epochs", "top-1 supernet", "top-1 retrained", "change", "images"],
                  rows) if rows else "No winner was retrained."
    if record.notes:
        body += "\n\n" + "\n".join(f"- not retrained: {note}" for note in record.notes)
    return ReportSection("Retrained winners", body)


def write_pipeline_report(folder: str | os.PathLike, name: str, job: SearchJobResult, *,
                          table: TableRecord | None = None, validation_dir: str | os.PathLike | None = None,
                          times: dict[str, float] | None = None, extra: Sequence[ReportSection] = ()) -> Path:
    """``report.md`` of pipeline ``name`` in ``folder`` (its output folder), with ``pareto.png`` (copied from the
    search job's folder, drawn if missing) and the table's ``validation.png`` beside it; ``extra``: more sections
    (e.g. retraining), placed after the search job's. Returns the report's path."""
    folder = Path(folder)
    figure = Path(job.job_dir) / PARETO_FILE
    if figure.is_file():
        _copy(figure, folder / PARETO_FILE)
    else:
        save_pareto(job, folder / PARETO_FILE)
    sections = [*search_sections(job)]
    validation = _validation_section(table, Path(validation_dir or folder), folder)
    if validation is not None:
        sections.insert(2, validation)
    sections += list(extra)
    if times:
        sections.append(ReportSection("Stage times", _table(["stage", "wall s"],
                                                            [[k, f"{v:.1f}"] for k, v in times.items()])))
    text = render_report(f"slimnas pipeline '{name}'", sections)
    return atomic_write_text(folder / REPORT_FILE, text)
