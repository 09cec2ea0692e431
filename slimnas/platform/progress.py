"""Progress output of a pipeline run: one line per stage start and end, and per-stage progress with an ETA.

- :class:`StageLog` numbers the stages (``[quickstart 2/3] table: ...``) and times them.
- :class:`ProgressLine` prints :class:`~slimnas.latency.builder.Progress` events (the table builder, the validation):
  a rewritten line on a terminal, a line every few seconds otherwise.
- :class:`TrainProgress` is a training callback: a line per epoch (and every ``run.log_every`` steps) with an ETA.
- :class:`SearchMonitor` watches the search job's live searchers from a background thread and prints how far the
  running method is (slimming: latency reached against the smallest target; baselines: evaluations of the budget).

Everything goes to ``echo`` (stderr in the CLI), so the comparison table on stdout stays clean.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from slimnas.trainers import Callback, Result, TrainState

__all__ = ["StageLog", "ProgressLine", "TrainProgress", "SearchMonitor", "clock", "stderr_echo"]

Echo = Callable[[str], None]


def stderr_echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def clock(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``); ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


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


class ProgressLine:
    """Prints ``Progress`` events: rewritten in place on a terminal, else at most one line per ``every_s``."""

    def __init__(self, label: str, echo: Echo = stderr_echo, every_s: float = 5.0, what: str = "measurements") -> None:
        self.label, self.echo, self.every_s, self.what = label, echo, every_s, what
        self.tty = echo is stderr_echo and sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        final = progress.done >= progress.total
        text = f"[{self.label}] {progress.line(self.what)}"
        if self.tty:
            sys.stderr.write("\r" + text[:150].ljust(150) + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or now - self._last >= self.every_s:
            self.echo(text)
            self._last = now


class TrainProgress(Callback):
    """Training progress with an ETA from the steps done so far (rank 0)."""

    def __init__(self, label: str = "train", echo: Echo = stderr_echo) -> None:
        self.label, self.echo = label, echo
        self._t0, self._step0 = time.perf_counter(), 0

    def _eta(self, state: TrainState) -> str:
        total = state.epochs * max(state.steps_per_epoch, 1)
        done = state.global_step - self._step0
        if done <= 0:
            return "?"
        rate = (time.perf_counter() - self._t0) / done
        return clock(rate * (total - state.global_step))

    def on_train_start(self, state: TrainState) -> None:
        self._t0, self._step0 = time.perf_counter(), state.global_step
        resumed = f", resuming after epoch {state.start_epoch}" if state.start_epoch else ""
        self.echo(f"[{self.label}] {state.epochs} epochs x {state.steps_per_epoch} steps, batch "
                  f"{state.config.data.batch_size} x {state.world_size} worker(s){resumed}")

    def on_step_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.echo(f"[{self.label}] epoch {metrics['epoch']:.2f}/{state.epochs} loss {metrics['loss']:.3f}  "
                  f"elapsed {clock(time.perf_counter() - self._t0)}  ETA {self._eta(state)}")

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        top1 = f"  val top-1 {metrics['val_top1']:.3f}" if "val_top1" in metrics else ""
        self.echo(f"[{self.label}] epoch {state.epoch}/{state.epochs} done: loss {metrics['train_loss']:.3f}{top1}  "
                  f"elapsed {clock(time.perf_counter() - self._t0)}  ETA {self._eta(state)}")

    def on_train_end(self, state: TrainState, result: Result) -> None:
        pass


class SearchMonitor:
    """Echo lines of the search job, plus a progress line for the running method every ``every_s`` seconds.

    Use it as the job's ``echo``; ``start()``/``stop()`` run the background thread. ``min_target`` is the smallest
    latency target (slimming's progress is how far its latency has come down towards it).
    """

    def __init__(self, min_target: float, echo: Echo = stderr_echo, every_s: float = 10.0) -> None:
        self.min_target, self.echo, self.every_s = min_target, echo, every_s
        self.current: str | None = None
        self._since = time.perf_counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, line: str) -> None:
        self.echo(line)
        if line.startswith("[search] ") and line.endswith(": running"):
            self.current, self._since = line[len("[search] "):-len(": running")], time.perf_counter()
        elif self.current and line.startswith(f"[search] {self.current}:"):
            self.current = None

    def status(self) -> str | None:
        """One line on the running method, or ``None``."""
        from .tune.searcher import live_searcher

        label = self.current
        searcher = live_searcher(label) if label else None
        if searcher is None:
            return None
        algorithm = searcher.algorithm
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
        eta = clock(elapsed / frac * (1 - frac)) if frac > 0 else "?"
        return (f"[search] {label}: {algorithm.evaluations} evaluations, {where} ({100 * frac:.0f}%)  "
                f"elapsed {clock(elapsed)}  ETA {eta}")

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
