"""A job's output folder, replaced whole: a run writes into a staged folder and swaps it in when it has finished.

Layout, for the job folder ``<parent>/<name>``:

- ``<name>/``: the last finished job; readers only ever look here.
- ``<name>.staging/``: the run in progress, or a killed run's folder until ``--restore`` continues it (a run without
  ``--restore`` discards it). It is complete once its ``marker`` file exists (written last).
- ``<name>.previous/``: the replaced job, only for the instant of the swap.

The swap (:meth:`StagedFolder.commit`) is two renames -- ``<name>`` to ``<name>.previous``, ``<name>.staging`` to
``<name>`` -- then the deletion of ``<name>.previous``. A process killed in between leaves ``<name>`` absent or both
others present; :meth:`StagedFolder.settle` (run first by every job) completes that swap when the staged folder is
complete and undoes it otherwise. So ``<name>`` is always either the old job, whole, or the new one, whole: never
the old ``results.json`` beside a new partial ``tune/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimnas.config import atomic_write_text

__all__ = ["StagedFolder", "SETTINGS_FILE"]

#: The settings a staged run was started with (JSON), so that ``--restore`` continues only a run of the same job.
SETTINGS_FILE = "settings.json"


@dataclass(frozen=True)
class StagedFolder:
    """The job folder ``final``; ``marker``: the file whose presence says a staged folder is complete."""

    final: Path
    marker: str

    @property
    def staging(self) -> Path:
        return self.final.with_name(self.final.name + ".staging")

    @property
    def previous(self) -> Path:
        return self.final.with_name(self.final.name + ".previous")

    def finished(self) -> bool:
        """Whether ``final`` holds a finished job."""
        return (self.final / self.marker).is_file()

    def has_staged_run(self) -> bool:
        """Whether an unfinished run waits in the staged folder."""
        return self.staging.is_dir()

    def settle(self) -> None:
        """Finish or undo a swap that a killed process left half done, and swap in a complete staged folder."""
        if self.previous.exists():
            if not self.final.exists():
                if (self.staging / self.marker).is_file():
                    os.rename(self.staging, self.final)
                else:
                    os.rename(self.previous, self.final)
            if self.final.exists():
                shutil.rmtree(self.previous, ignore_errors=True)
        if (self.staging / self.marker).is_file():
            self.commit()

    def staged_settings(self) -> dict[str, Any] | None:
        """The settings the staged run was started with (``None``: no staged run, or one without its settings)."""
        path = self.staging / SETTINGS_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def begin(self, settings: dict[str, Any], restore: bool, echo: Callable[[str], None]) -> bool:
        """Prepare the staged folder; returns whether it continues a killed run (``restore`` and one is staged).

        Without ``restore`` a staged run is discarded (said on ``echo``) and a new one starts with ``settings``.
        """
        self.settle()
        if restore and self.has_staged_run() and self.staged_settings() is not None:
            return True
        if self.has_staged_run():
            echo(f"discarding the unfinished run in {self.staging}" + ("" if restore else
                 " (--restore continues such a run)"))
            shutil.rmtree(self.staging)
        tmp = self.staging.with_name(self.staging.name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        atomic_write_text(tmp / SETTINGS_FILE, json.dumps(settings, indent=1, sort_keys=True))
        os.rename(tmp, self.staging)  # the staged folder exists only with its settings
        return False

    def commit(self) -> None:
        """Swap the complete staged folder in for ``final`` (see the module docstring)."""
        if not (self.staging / self.marker).is_file():
            raise RuntimeError(f"{self.staging}: not complete (no {self.marker}); nothing to swap in")
        shutil.rmtree(self.previous, ignore_errors=True)
        if self.final.exists():
            os.rename(self.final, self.previous)
        os.rename(self.staging, self.final)
        shutil.rmtree(self.previous, ignore_errors=True)
