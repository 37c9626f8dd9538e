"""MLflow versions other than the pinned one, each in a virtualenv of its own under the tools folder
(`<tools>/mlflow-<version>`; CI keeps the tools folder, MLSTACK_TOOLS_DIR, so later runs reuse it).
A version is a release ("3.16.1") or a minor ("3.16": its newest release when the virtualenv is made).

`server_python` makes a server's virtualenv: mlflow[auth] at that version with the server's pinned
drivers (services/mlflow-server/requirements.txt but its mlflow line) and the store plugin of this
checkout. `test_python` adds mlstack and its test dependencies, for running test files under that
MLflow (`python -m tests.mlflow_versions`, see there). The checkout's packages are installed editable
and --no-deps on every call (a second or two), so a reused virtualenv always runs this checkout's code.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
STORE_PLUGIN = REPO / "services" / "mlflow-server" / "store"
SERVER_REQUIREMENTS = REPO / "services" / "mlflow-server" / "requirements.txt"
#: Written last into a virtualenv whose installs all succeeded: one without it is rebuilt.
COMPLETE = "mlstack-complete"


def _requirement_name(line: str) -> str:
    return re.split(r"[\s<>=!~\[;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _server_requirements() -> list[str]:
    lines = [line.split("#")[0].strip() for line in SERVER_REQUIREMENTS.read_text().splitlines()]
    return [line for line in lines if line and _requirement_name(line) != "mlflow"]


def _mlstack_requirements() -> list[str]:
    """mlstack's dependencies with its stack and test extras, MLflow's own left to the caller."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["stack"]]
    wanted += project["optional-dependencies"]["test"]
    return [line for line in wanted if _requirement_name(line) not in {"mlflow", "mlflow-skinny", "mlstack"}]


def _pip(python: Path, *arguments: str) -> None:
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`pip install {' '.join(arguments)}` failed:\n{result.stderr[-3000:]}")


def _spec(mlflow_version: str) -> str:
    return f"mlflow[auth]=={mlflow_version}" + (".*" if mlflow_version.count(".") == 1 else "")


def _venv(tools: Path, mlflow_version: str, with_tests: bool) -> Path:
    tools.mkdir(parents=True, exist_ok=True)
    folder = tools / f"mlflow-{mlflow_version}"
    python = folder / "bin" / "python"
    # the test dependencies' marker names them: a virtualenv made before they changed gets them
    requirements = _mlstack_requirements()
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    marker = folder / (f"{COMPLETE}-tests-{digest}" if with_tests else COMPLETE)
    with (tools / f".mlflow-{mlflow_version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then reuse its work
        if not (folder / COMPLETE).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
            _pip(python, "setuptools>=68", _spec(mlflow_version), *_server_requirements())
            (folder / COMPLETE).touch()
        if not marker.is_file():
            _pip(python, _spec(mlflow_version), *requirements)
            marker.touch()
        editable = [STORE_PLUGIN, REPO] if with_tests else [STORE_PLUGIN]
        _pip(python, "--no-deps", "--no-build-isolation", *(f"--editable={path}" for path in editable))
    return python


def server_python(tools: Path, mlflow_version: str) -> Path:
    """The python of a virtualenv with the MLflow server at `mlflow_version` and the store plugin."""
    return _venv(tools, mlflow_version, with_tests=False)


def test_python(tools: Path, mlflow_version: str) -> Path:
    """As server_python, with mlstack and its test dependencies too (pytest runs there)."""
    return _venv(tools, mlflow_version, with_tests=True)


test_python.__test__ = False  # a helper, not a test

#: The equivalence tests: the fast paths held to MLflow's own store and handlers on a live stack.
EQUIVALENCE_TESTS = ("tests/integration/test_fast_store.py", "tests/integration/test_fast_search.py")


def previous_minor(version: str) -> str:
    """The minor before `version`'s: 3.17.2 -> 3.16."""
    major, minor = Version(version).release[:2]
    return f"{major}.{minor - 1}"


def main(argv: list[str]) -> int:
    """Run the equivalence tests under each MLflow minor the plugin supports (SUPPORTED_MLFLOW) other
    than the installed one, which `pytest` itself covers; or under the minors given (`3.18`: a
    candidate, before it is listed). Each in its virtualenv, with a stack of that MLflow."""
    import mlflow.version
    from mlstack_mlflow_store import SUPPORTED_MLFLOW

    from mlstack.settings import Settings

    installed = Version(mlflow.version.VERSION).release[:2]
    minors = argv or [f"{major}.{minor}" for major, minor in SUPPORTED_MLFLOW if (major, minor) != installed]
    if not minors:
        print(f"every supported MLflow minor is the installed {mlflow.version.VERSION}: `pytest` covers it")
        return 0
    tools, failed = Settings.load(REPO).tools_path, []
    for minor in minors:
        started = time.monotonic()
        python = test_python(tools, minor)
        made = time.monotonic()
        # a worker a module (tests/conftest.py), as `make test` runs them
        pytest = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", *EQUIVALENCE_TESTS]
        result = subprocess.run(pytest, cwd=REPO)
        print(
            f"MLflow {minor}: equivalence tests {'passed' if result.returncode == 0 else 'FAILED'} in "
            f"{time.monotonic() - made:.0f} s (virtualenv ready in {made - started:.0f} s)",
            flush=True,
        )
        if result.returncode != 0:
            failed.append(minor)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
