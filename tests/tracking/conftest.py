"""Fixtures for mlstack.tracking: the session's live stack (tests/conftest.py), set up as the active
tracking configuration, a fresh experiment per test, and the MLflow configuration put back after
tests that point it elsewhere."""

from __future__ import annotations

import os
import uuid

import mlflow
import pytest

from mlstack.tracking import setup_mlflow
from mlstack.tracking.mlflow import config as mlflow_config


@pytest.fixture(scope="session")
def tracking_uri(mlflow_stack) -> str:
    return setup_mlflow(tracking_uri=mlflow_stack.tracking_uri, settings=mlflow_stack.settings)


@pytest.fixture
def experiment(mlflow_stack, tracking_uri, request) -> str:
    """A new experiment, named after the test, set as the default one."""
    name = f"{request.node.name[:60]}-{uuid.uuid4().hex[:8]}"
    setup_mlflow(name, tracking_uri=tracking_uri, settings=mlflow_stack.settings)
    return name


@pytest.fixture(scope="module")
def restore_mlflow_setup():
    """Put the process's MLflow configuration back after a module that points it elsewhere (also
    MLFLOW_TRACKING_URI in the environment, which `mlflow.set_tracking_uri` sets)."""
    previous, uri, variable = mlflow_config._config, mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    yield
    with mlflow_config._lock:
        mlflow_config._config = previous
        mlflow.set_tracking_uri(uri)
        if variable is None:
            del os.environ["MLFLOW_TRACKING_URI"]
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable
