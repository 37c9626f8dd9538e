"""Compose validation fixtures: the real compose CLI and a generated .env to interpolate."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from mlstack.runtime.native.tools import find_compose
from mlstack.secrets import init_env
from mlstack.settings import SECRET_FIELDS, Settings

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def compose_cli() -> list[str]:
    """The compose CLI (docker plugin or our built binary); a failure, not a skip, when required."""
    command = find_compose(Settings.load(PROJECT_DIR))
    if command is None:
        reason = "the compose CLI is not installed (`mlstack install-tools --compose` builds it)"
        if os.environ.get("MLSTACK_REQUIRE_RUNTIME"):
            pytest.fail(f"MLSTACK_REQUIRE_RUNTIME is set but {reason}")
        pytest.skip(reason)
    return command


@pytest.fixture
def generated_env(tmp_path) -> Path:
    env_file = tmp_path / ".env"
    init_env(env_file, PROJECT_DIR / ".env.example", [name.upper() for name in SECRET_FIELDS])
    return env_file


def run_compose(
    cli: list[str], compose_file: Path | tuple[Path, ...], env_file: Path, *args: str
) -> subprocess.CompletedProcess:
    """The compose CLI on one file (or a file and its overrides), seeing only `env_file` (not the
    caller's environment)."""
    clean_environment = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    files = compose_file if isinstance(compose_file, tuple) else (compose_file,)
    return subprocess.run(
        [*cli, *(option for path in files for option in ("-f", str(path))), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        env=clean_environment,
        timeout=120,
    )


class ComposeLoader(yaml.SafeLoader):
    """YAML as compose writes it, with an override's tags: `!reset` (the key dropped) reads as None,
    `!override` (replacing the base file's value instead of merging with it) as the value it carries."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)
ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_sequence(node, deep=True)
    ),
)


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=ComposeLoader)
