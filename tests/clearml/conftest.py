"""What every ClearML test module shares."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="module")
def clearml_variables_restored():
    """Each module leaves the process's CLEARML_* variables as it found them.

    The SDK exports what `Task.set_credentials` is given (CLEARML_API_HOST, ...), and the settings read
    CLEARML_API_HOST as a server this project does not run: a stand-in's URL left behind would send
    every later test's settings there."""
    before = {name: value for name, value in os.environ.items() if name.startswith("CLEARML_")}
    yield
    for name in [name for name in os.environ if name.startswith("CLEARML_") and name not in before]:
        del os.environ[name]
    os.environ.update(before)
