"""Prometheus' promtool for the monitoring tests (Debian's `prometheus` package, which .ci/run
installs): where it is missing they fail, naming what to install, instead of skipping."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def run_promtool(*args: str | Path) -> None:
    """Runs `promtool args...`; fails the test with promtool's own words unless it exits 0."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's `prometheus` package (apt-get install prometheus)"
        )
    command = [found, *map(str, args)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{' '.join(command)} exited {run.returncode}:\n{run.stdout}{run.stderr}"
