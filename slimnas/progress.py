"""Progress output, one implementation for every long job (table builds, validations, bundles, training, search).

- :class:`Progress`: where a counted job stands (done of total, elapsed, ETA), with its one-line wording.
- :class:`ProgressLine`: prints ``Progress`` events under a ``[label]``: rewritten in place on a terminal, else one
  line every ``every_s`` seconds (and the last one); :meth:`ProgressLine.count` makes the event from a count.
- :func:`clock` and :func:`eta` format and estimate times; :func:`stderr_echo` (the default) and :func:`stdout_echo`
  print a line.

Plain Python: every package may import it (no torch, ray or mlflow, nothing from slimnas).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Echo", "Progress", "ProgressLine", "clock", "eta", "stderr_echo", "stdout_echo"]

#: Prints one line (``stderr_echo`` in the CLI; a list's ``append`` in tests).
Echo = Callable[[str], None]


def stderr_echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def stdout_echo(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


def clock(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``); ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def eta(elapsed_s: float, done: float, total: float) -> float | None:
    """Seconds left at the rate so far (``None`` before anything is done)."""
    return elapsed_s / done * max(total - done, 0) if done > 0 else None


@dataclass(frozen=True)
class Progress:
    """Where a long job stands (passed to progress callbacks)."""

    done: int
    total: int
    item: str
    elapsed_s: float
    eta_s: float | None

    def line(self, what: str = "measurements") -> str:
        pct = 100.0 * self.done / max(self.total, 1)
        return (f"{self.done}/{self.total} {what} ({pct:4.1f}%)  elapsed {clock(self.elapsed_s)}  "
                f"ETA {clock(self.eta_s)}  {self.item}")


class ProgressLine:
    """Prints :class:`Progress` events as ``[label] 12/144 measurements (8.3%)  elapsed ..  ETA ..  item``.

    On a terminal (``echo`` is :func:`stderr_echo` and stderr is a TTY) the line is rewritten in place; otherwise a
    line is printed at most every ``every_s`` seconds, and always the last one (``done >= total``).
    """

    def __init__(self, label: str, echo: Echo = stderr_echo, every_s: float = 5.0, what: str = "measurements") -> None:
        self.label, self.echo, self.every_s, self.what = label, echo, every_s, what
        self.tty = echo is stderr_echo and sys.stderr.isatty()
        self._last = -math.inf  # the first event always prints (monotonic time starts near 0 at boot)
        self._start = time.perf_counter()

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        final = progress.done >= progress.total
        text = f"[{self.label}] {progress.line(self.what)}"
        if self.tty:
            sys.stderr.write("\r" + text[:150].ljust(150) + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or now - self._last >= self.every_s:
            self.echo(text)
            self._last = now

    def count(self, done: int, total: int, item: str) -> None:
        """Print the event of ``done`` of ``total`` (elapsed and ETA timed from this printer's creation)."""
        elapsed = time.perf_counter() - self._start
        self(Progress(done, total, item, elapsed, eta(elapsed, done, total)))
