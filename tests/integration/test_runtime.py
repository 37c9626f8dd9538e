"""The runtime interface and the `mlstack` command against the live stack."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import run_mlstack

pytestmark = pytest.mark.integration


def mlstack(settings, *args: str) -> subprocess.CompletedProcess:
    """`mlstack ARGS` as a user runs it in the project folder: what it needs (the login too) from .env."""
    return run_mlstack(settings.project_dir, *args, timeout=300)


def test_status_reports_every_service_running_and_healthy(mlflow_stack):
    statuses = {service.name: service for service in mlflow_stack.runtime.status()}
    assert {"postgres", "seaweedfs", "mlflow"} <= set(statuses)
    assert all(statuses[name].running and statuses[name].healthy for name in ("postgres", "seaweedfs", "mlflow"))
    assert all(service.healthy for service in statuses.values())  # docker: one-shot steps completed


def test_second_up_on_a_running_stack_is_a_no_op(mlflow_stack):
    assert mlflow_stack.runtime.up() is False


def test_cli_status_and_up_on_a_running_stack(mlflow_stack):
    status = mlstack(mlflow_stack.settings, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    for service in ("postgres", "seaweedfs", "mlflow"):
        assert service in status.stdout

    again = mlstack(mlflow_stack.settings, "up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout


def test_cli_bootstrap_twice_says_nothing_changed(mlflow_stack):
    mlstack(mlflow_stack.settings, "bootstrap")
    second = mlstack(mlflow_stack.settings, "bootstrap")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing changed" in second.stdout
    assert "created" not in second.stdout
