"""How the MLflow server runs: its gunicorn options come from .env, and bad values are refused by name."""

from __future__ import annotations

import pytest

from mlstack.envfile import update_env
from mlstack.errors import ConfigError
from mlstack.runtime.native.runtime import mlflow_server_command
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
