"""The library's own settings: read from the project's .env and the environment as the stack's are,
carried by the stack's Settings under the same names (its commands pass theirs), and the library never
loads the stack's settings nor imports the stack's dependencies."""

from __future__ import annotations

import pytest

from mlstack.errors import ConfigError
from mlstack.settings import Settings
from mlstack.tracking import ClientSettings
from tests.conftest import run_python


def test_the_project_env_is_read_and_the_environment_wins_over_it(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("MLFLOW_TRACKING_URI=http://tracking:5000\nMLSTACK_TRACKERS=mlflow\n")
    monkeypatch.setenv("MLSTACK_TRACKERS", "clearml")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri sets it
    nested = tmp_path / "notebooks" / "week1"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    monkeypatch.delenv("MLSTACK_PROJECT_DIR", raising=False)
    settings = ClientSettings.load()
    assert settings.project_dir == tmp_path.resolve(), "the project is found above the current folder"
    assert (settings.mlflow_tracking_uri, settings.trackers) == ("http://tracking:5000", "clearml")
    assert settings.state_path == tmp_path.resolve() / ".mlstack"


def test_an_unusable_value_names_the_setting_and_the_file(tmp_path):
    (tmp_path / ".env").write_text("MLSTACK_METRIC_FLUSHER_THREADS=0\n")
    with pytest.raises(ConfigError, match=r"MLSTACK_METRIC_FLUSHER_THREADS=.*\.env"):
        ClientSettings.load(tmp_path)


def test_the_stack_settings_are_the_client_settings_and_more(tmp_path):
    """One definition of each client setting: the stack's settings extend the client's, and read a
    client value from .env the same way."""
    assert issubclass(Settings, ClientSettings)
    (tmp_path / ".env").write_text("CLEARML_HOST_IP=clearml.example\nMLSTACK_TRACKERS=mlflow\n")
    client, stack = ClientSettings.load(tmp_path), Settings.load(tmp_path)
    assert isinstance(stack, Settings)
    assert (stack.clearml_api_url, stack.trackers) == (client.clearml_api_url, client.trackers)
    assert client.clearml_api_url == "http://clearml.example:8008"


def test_the_library_loads_neither_the_stack_settings_nor_the_stack_dependencies(tmp_path):
    code = f"""
        import sys
        import mlstack.tracking.clearml.pipeline, mlstack.tracking.clearml.scheduling, mlstack.tracking.multi
        from mlstack.tracking import ClientSettings, ExperimentTracker, setup_mlflow
        setup_mlflow("client", settings=ClientSettings(MLSTACK_PROJECT_DIR={str(tmp_path)!r}, _env_file=None))
        with ExperimentTracker(run_name="client") as run:
            run.log_metrics({{"loss": 0.5}}, step=1)
        stack = ("mlstack.settings", "docker", "minio", "psycopg", "boto3", "typer")
        loaded = sorted(name for name in sys.modules if name in stack or name.split(".")[0] in stack)
        assert not loaded, loaded
    """
    result = run_python(code, tmp_path / "home")
    assert result.returncode == 0, result.stderr
