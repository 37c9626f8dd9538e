"""Integration fixtures for mlstack.tracking: the session's live stack (tests/conftest.py), set up
as the active tracking configuration, and a fresh experiment per test."""

from __future__ import annotations

import uuid

import pytest

from mlstack.tracking import setup_mlflow


@pytest.fixture(scope="session")
def tracking_uri(mlflow_stack) -> str:
    return setup_mlflow(tracking_uri=mlflow_stack.tracking_uri, settings=mlflow_stack.settings)


@pytest.fixture
def experiment(mlflow_stack, tracking_uri, request) -> str:
    """A new experiment, named after the test, set as the default one."""
    name = f"{request.node.name[:60]}-{uuid.uuid4().hex[:8]}"
    setup_mlflow(name, tracking_uri=tracking_uri, settings=mlflow_stack.settings)
    return name
