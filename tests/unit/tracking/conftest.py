"""Unit tests of mlstack.tracking run against a throwaway local sqlite store (no server)."""

from __future__ import annotations

import pytest

from mlstack.settings import Settings
from mlstack.tracking import setup_mlflow


@pytest.fixture(scope="session")
def local_settings(tmp_path_factory) -> Settings:
    project = tmp_path_factory.mktemp("project")
    return Settings(
        MLSTACK_PROJECT_DIR=project,
        MLSTACK_STATE_DIR=project / "state",
        MLFLOW_TRACKING_URI=None,
        MLSTACK_METRIC_FLUSH_INTERVAL_SECONDS=0.05,
        _env_file=None,
    )


@pytest.fixture
def local_store(local_settings) -> str:
    """Tracking URI of the session's local store, configured as the active one."""
    return setup_mlflow("unit", settings=local_settings)
