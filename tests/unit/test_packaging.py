"""An installed (non-editable) mlstack works without the source tree: what it reads at run time ships
inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlstack.envfile import read_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """mlstack built and installed from this checkout into a folder of its own (no dependencies)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(REPO)],
        check=True,
        capture_output=True,
    )
    return target


def run_installed(site: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLSTACK_")}
    return subprocess.run(
        [sys.executable, *args], cwd=folder, env={**env, "PYTHONPATH": str(site)}, capture_output=True, text=True
    )


def test_installed_package_carries_its_templates(installed, tmp_path):
    result = run_installed(
        installed,
        tmp_path,
        "-c",
        "import mlstack; from mlstack.bootstrap.clearml import render_clearml_conf; from mlstack.settings import "
        "Settings; print(mlstack.__file__); print(render_clearml_conf(Settings(), 'KEY', 'SECRET'))",
    )
    assert result.returncode == 0, result.stderr
    location, conf = result.stdout.split("\n", 1)
    assert Path(location).is_relative_to(installed)
    assert 'access_key: "KEY"' in conf
    assert "http://127.0.0.1:8008" in conf


def test_installed_mlstack_init_writes_a_project_outside_any_checkout(installed, tmp_path):
    result = run_installed(installed, tmp_path, "-m", "mlstack.cli", "init")
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(installed) in result.stdout.replace("\n", "")  # the template came from the installed package
    values = read_env(tmp_path / ".env")
    assert values["POSTGRES_USER"] == "postgres" and len(values["POSTGRES_PASSWORD"]) == 32
