"""Progress output of a pipeline run: one line per stage start and end, and per-stage progress with an ETA.

- :class:`StageLog` numbers the stages (``[quickstart 2/3] table: ...``) and times them.
- the table builder's and the validation's progress is printed by :class:`slimnas.progress.ProgressLine`, the
  training's by :class:`slimnas.platform.stages.training.TrainProgress` (one progress reporter for every command).
- :class:`SearchMonitor` watches the search job's live searchers from a background thread and prints how far the
  running method is (slimming: latency reached against the smallest target; baselines: evaluations of the budget).

Everything goes to ``echo`` (stderr in the CLI), so the comparison table on stdout stays clean.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from slimnas.progress import Echo, clock, eta, stderr_echo

__all__ = ["StageLog", "SearchMonitor"]


class StageLog:
    """Numbered stage start/end lines with wall times (``times`` maps stage -> seconds)."""

    def __init__(self, name: str, stages: tuple[str, ...], echo: Echo = stderr_echo) -> None:
        self.name, self.stages, self.echo = name, stages, echo
        self.times: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def _prefix(self, stage: str) -> str:
        return f"[{self.name} {self.stages.index(stage) + 1}/{len(self.stages)}] {stage}"

    def start(self, stage: str, what: str) -> None:
        self._started[stage] = time.perf_counter()
        self.echo(f"{self._prefix(stage)}: {what}")

    def end(self, stage: str, what: str) -> float:
        wall = time.perf_counter() - self._started.pop(stage, time.perf_counter())
        self.times[stage] = wall
        self.echo(f"{self._prefix(stage)}: {what} ({wall:.1f} s)")
        return wall


class SearchMonitor:
    """Echo lines of the search job, plus a progress line for the running method every ``every_s`` seconds.

    Use it as the job's ``echo`` and :meth:`watch` as its ``watch``; ``start()``/``stop()`` run the background
    thread. ``min_target`` is the smallest latency target (slimming's progress is how far its latency has come down
    towards it).
    """

    def __init__(self, min_target: float, echo: Echo = stderr_echo, every_s: float = 10.0) -> None:
        self.min_target, self.echo, self.every_s = min_target, echo, every_s
        self.current: str | None = None
        self._algorithms: dict[str, Any] = {}  # run label -> its live search algorithm (see watch)
        self._since = time.perf_counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, line: str) -> None:
        self.echo(line)
        if line.startswith("[search] ") and line.endswith(": running"):
            self.current, self._since = line[len("[search] "):-len(": running")], time.perf_counter()
        elif self.current and line.startswith(f"[search] {self.current}:"):
            self.current = None

    def watch(self, label: str, algorithm: Any) -> None:
        """The search run ``label`` starts with ``algorithm`` (a :class:`~slimnas.search.SearchAlgorithm`)."""
        self._algorithms[label] = algorithm

    def status(self) -> str | None:
        """One line on the running method, or ``None``."""
        label = self.current
        algorithm = self._algorithms.get(label) if label else None
        if algorithm is None:
            return None
        elapsed = time.perf_counter() - self._since
        trajectory = getattr(algorithm, "trajectory", None)
        if trajectory:
            first, now = trajectory[0].latency_ms, trajectory[-1].latency_ms
            span = first - self.min_target
            frac = 1.0 if span <= 0 else min(max((first - now) / span, 0.0), 1.0)
            where = f"latency {now:.3f} ms, smallest target {self.min_target:.3f} ms"
        elif getattr(algorithm, "budget", None):
            frac = min(algorithm.evaluations / algorithm.budget, 1.0)
            where = f"budget {algorithm.budget}"
        else:
            frac, where = 0.0, "starting"
        return (f"[search] {label}: {algorithm.evaluations} evaluations, {where} ({100 * frac:.0f}%)  "
                f"elapsed {clock(elapsed)}  ETA {clock(eta(elapsed, frac, 1.0))}")

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                line = self.status()
            except Exception:  # noqa: BLE001 - progress output must never break the job
                line = None
            if line:
                self.echo(line)

    def start(self) -> SearchMonitor:
        self._thread = threading.Thread(target=self._loop, name="slimnas-search-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
