#!/usr/bin/env python3
"""slimnas set-up and tasks, with nothing but Python on the machine.

    python3 tasks.py quickstart [ARGS...]   # create .venv if needed, install slimnas, run `slimnas quickstart`
    python3 tasks.py test [PYTEST ARGS...]  # create .venv if needed, install slimnas[dev], run the test suite
    python3 tasks.py slimnas [ARGS...]      # any slimnas command inside the environment

The environment lives in ``.venv`` next to this file (``SLIMNAS_VENV`` overrides). It is (re)installed when
``pyproject.toml`` changed since the last install, so both commands are safe to run again and again.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SLIMNAS_VENV", ROOT / ".venv"))
STAMP = VENV / ".slimnas-install-stamp"


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _stamp() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def ensure_env() -> None:
    if not _bin("python").exists():
        print(f"[slimnas] creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    if STAMP.exists() and STAMP.read_text().strip() == _stamp():
        return
    print("[slimnas] installing slimnas and its dependencies (first run: a few minutes)", flush=True)
    pip = [str(_bin("python")), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run(pip + ["--quiet", "--upgrade", "pip", "setuptools", "wheel"], check=True)
    subprocess.run(pip + ["--quiet", "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
    STAMP.write_text(_stamp())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"quickstart", "test", "slimnas"}:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    task, rest = argv[0], argv[1:]
    try:
        ensure_env()
    except subprocess.CalledProcessError as exc:
        print(f"[slimnas] installation failed (exit {exc.returncode}); see the pip output above", file=sys.stderr)
        return 1
    env = dict(os.environ)
    if task == "test":
        cmd = [str(_bin("python")), "-m", "pytest", *rest]
    elif task == "quickstart":
        cmd = [str(_bin("slimnas")), "quickstart", *rest]
    else:
        cmd = [str(_bin("slimnas")), *rest]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
