"""How the MLflow server runs: its gunicorn options and store come from .env; bad values are refused by name."""

from __future__ import annotations

import importlib.util

import pytest

from mlstack.envfile import update_env
from mlstack.errors import ConfigError
from mlstack.runtime.native.server import mlflow_server_command, mlflow_server_env, require_store_plugin
from mlstack.settings import Settings


def test_workers_threads_and_timeout_come_from_env(project):
    update_env(project.env_file, {"MLFLOW_WORKERS": "3", "MLFLOW_THREADS": "5", "MLFLOW_WORKER_TIMEOUT": "77"})
    command = mlflow_server_command(Settings.load(project.project_dir))

    assert command[command.index("--workers") + 1] == "3"
    options = command[command.index("--gunicorn-opts") + 1].split()
    assert options[options.index("--worker-class") + 1] == "gthread"
    assert options[options.index("--threads") + 1] == "5"
    assert options[options.index("--timeout") + 1] == "77"


@pytest.mark.parametrize(("name", "value"), [("MLFLOW_THREADS", "0"), ("MLFLOW_WORKERS", "two")])
def test_an_unusable_server_setting_is_refused_naming_it(project, name, value):
    update_env(project.env_file, {name: value})
    with pytest.raises(ConfigError) as raised:
        Settings.load(project.project_dir)
    assert f"{name}={value!r}" in str(raised.value)
    assert str(project.env_file) in str(raised.value)


def test_fast_store_is_on_by_default_and_off_when_env_says_so(project):
    assert mlflow_server_env(project)["MLSTACK_FAST_STORE"] == "true"
    update_env(project.env_file, {"MLSTACK_FAST_STORE": "false"})
    assert mlflow_server_env(Settings.load(project.project_dir))["MLSTACK_FAST_STORE"] == "false"


def test_server_start_is_refused_without_its_plugin_whatever_the_fast_store_switch(project, monkeypatch):
    """The plugin brings the request guard and the login check, which run with the fast store off too."""
    require_store_plugin(project)  # installed alongside mlstack (make venv)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    for fast_store in ("true", "false"):
        update_env(project.env_file, {"MLSTACK_FAST_STORE": fast_store})
        with pytest.raises(ConfigError) as raised:
            require_store_plugin(Settings.load(project.project_dir))
        assert "mlstack-mlflow-store plugin is not installed" in str(raised.value) and "make venv" in str(raised.value)
