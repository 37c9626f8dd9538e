"""An installed (non-editable) mlstack works without the source tree: what it reads at run time ships
inside the package. The base install is the tracking library; its ClearML backend and the stacks are
extras, each holding what its code imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlstack.envfile import read_env

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
TRACKING = SRC / "mlstack" / "tracking"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
#: Imported only for an object of that library the caller hands in (ClearMLTracker's DictConfig).
CALLERS_OWN = {"omegaconf"}


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


def installed_by(requirements: Iterable[str]) -> set[str]:
    """The distributions `requirements` install, theirs included (as their metadata here says); an
    `mlstack[extra]` among them stands for that extra's requirements."""
    todo, found = [Requirement(text) for text in requirements], set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name == "mlstack":
            todo += [Requirement(text) for extra in requirement.extras for text in EXTRAS[extra]]
            continue
        if name in found:
            continue
        found.add(name)
        try:
            dependencies = [Requirement(text) for text in requires(name) or []]
        except PackageNotFoundError:
            continue
        extras = {"", *requirement.extras}
        todo += [
            dependency
            for dependency in dependencies
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra}) for extra in extras)
        ]
    return found


def imported(folder: Path, leave_out: Path | None = None) -> dict[str, set[str]]:
    """The top-level modules the modules under `folder` import (mlstack's own modules they import
    followed in turn), but none under `leave_out`, each with the distributions that provide it."""
    todo, seen, modules = list(folder.rglob("*.py")), set(), set()
    while todo:
        path = todo.pop()
        if path in seen or (leave_out and path.is_relative_to(leave_out)):
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] != "mlstack":
                    modules.add(name.split(".")[0])
                    continue
                target = SRC.joinpath(*name.split("."))
                todo += [file for file in (target.with_suffix(".py"), target / "__init__.py") if file.is_file()]
    modules -= {*sys.stdlib_module_names, "__future__", *CALLERS_OWN}
    owners = packages_distributions()
    return {module: {canonicalize_name(owner) for owner in owners[module]} for module in modules}


def uncovered(modules: dict[str, set[str]], installed: set[str]) -> set[str]:
    """The modules no distribution of `installed` provides (mlflow: mlflow-skinny or mlflow)."""
    return {module for module, owners in modules.items() if not owners & installed}


def test_the_base_install_is_the_tracking_library_and_the_rest_are_extras():
    base = installed_by(PROJECT["dependencies"])
    stack_only = {"clearml", "psycopg", "boto3", "flask-wtf", "docker", "flask", "gunicorn", "mlflow"}
    assert not base & stack_only, "the stack's or ClearML's in the base"
    assert not uncovered(imported(TRACKING, leave_out=TRACKING / "clearml"), base)
    assert not uncovered(imported(TRACKING / "clearml"), installed_by([*PROJECT["dependencies"], "mlstack[clearml]"]))
    assert not uncovered(imported(SRC / "mlstack"), installed_by([*PROJECT["dependencies"], "mlstack[stack]"]))


def test_make_venv_installs_the_stack_and_the_tests_extras():
    assert "-e '.[stack,test]'" in (REPO / "Makefile").read_text()


def test_the_base_install_alone_tracks_a_run_and_logs_a_model(tmp_path):
    """`pip install mlstack` in a fresh environment, as a user of the library only: a run with a metric
    and a scikit-learn model in the local store, and none of the stack's tools installed."""
    import venv

    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(REPO)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr[-3000:]
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text("")
    script = """
import importlib.util
import numpy as np
from sklearn.linear_model import Ridge
from mlstack.tracking import ExperimentTracker, get_best_run, setup_mlflow
setup_mlflow("base")
X = np.arange(12.0).reshape(6, 2)
with ExperimentTracker("base", run_name="ridge") as run:
    run.log_metric("loss", 0.5, step=1)
    run.log_model(Ridge().fit(X, X.sum(1)), name="model", input_example=X[:2])
assert get_best_run("base", "loss", mode="min") is not None
present = [name for name in ("docker", "flask", "gunicorn", "minio", "psycopg", "boto3", "clearml")
           if importlib.util.find_spec(name)]
assert not present, present
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    tracked = subprocess.run([str(python), "-c", script], cwd=project, env=env, capture_output=True, text=True)
    assert tracked.returncode == 0, tracked.stderr[-3000:]
