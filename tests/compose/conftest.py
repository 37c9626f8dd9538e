"""Compose validation fixtures: the real compose CLI and a generated .env to interpolate."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

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


def run_compose(cli: list[str], compose_file: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess:
    """The compose CLI on one file, seeing only `env_file` (not the caller's environment)."""
    clean_environment = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return subprocess.run(
        [*cli, "-f", str(compose_file), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        env=clean_environment,
        timeout=120,
    )
