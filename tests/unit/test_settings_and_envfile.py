"""Settings read from .env, and .env edits that keep the file's layout."""

from __future__ import annotations

import stat

from mlstack.envfile import read_env, update_env
from mlstack.settings import Settings


def test_settings_read_the_projects_env_file(project):
    settings = Settings.load(project.project_dir)
    assert settings.env_file == project.project_dir / ".env"
    assert settings.mlflow_url == f"http://127.0.0.1:{read_env(settings.env_file)['MLFLOW_PORT']}"
    assert settings.state_path == project.project_dir / ".mlstack"
    assert settings.bind_address == "127.0.0.1"


def test_environment_overrides_env_file(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_PORT", "5999")
    assert Settings.load(project.project_dir).mlflow_port == 5999


def test_backend_store_uri_is_the_server_role_with_its_password_quoted(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_DB_PASSWORD", "p@ss/w:rd")
    uri = Settings.load(project.project_dir).backend_store_uri(host="postgres", port=5432)
    assert uri == "postgresql+psycopg://mlflow_server:p%40ss%2Fw%3Ard@postgres:5432/mlflow"


def test_secrets_are_hidden_in_repr(project):
    settings = Settings.load(project.project_dir)
    assert settings.postgres_password.get_secret_value() not in repr(settings)


def test_update_env_rewrites_in_place_and_appends_new_keys(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# header\nA=1\n\n# section\nB=2\n")
    update_env(env, {"B": "3", "C": "4"})
    assert env.read_text() == "# header\nA=1\n\n# section\nB=3\nC=4\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert read_env(env) == {"A": "1", "B": "3", "C": "4"}
