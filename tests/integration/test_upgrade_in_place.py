"""A stack from before least privilege and authentication (the server logged in as the superuser
`mlflow`, which owned every table; no auth database; .env without the new secrets) upgrades in place
when the user runs `mlstack up`: the new secrets are generated, ownership moves to the server's own
role, the server runs with authentication, and the runs recorded before are still there."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from mlflow import MlflowClient
from psycopg import sql
from rich.console import Console

from mlstack.bootstrap import run_steps
from mlstack.bootstrap.database import _hand_over_objects
from mlstack.bootstrap.mlflow import CLIENT_STEPS
from mlstack.envfile import read_env, update_env, write_private
from mlstack.errors import MissingToolError
from mlstack.runtime.native.tools import find_tools
from mlstack.settings import Settings
from tests.conftest import make_project, run_mlstack
from tests.stack import NativeStack

pytestmark = pytest.mark.integration

#: What .env files written before this change did not have.
NEW_KEYS = (
    "MLFLOW_DB_PASSWORD",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def make_it_old(settings: Settings) -> None:
    """Give the running stack the layout of the old one: the superuser owns the backend store and every
    object in it, and neither the server's role nor the auth database exists."""
    role, superuser = settings.mlflow_db_user, settings.postgres_user
    with psycopg.connect(settings.postgres_dsn("postgres"), autocommit=True) as connection:
        connection.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(settings.postgres_db), sql.Identifier(superuser)
            )
        )
        _hand_over_objects(settings, settings.postgres_db, superuser)
        connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(settings.mlflow_auth_db)))
        with psycopg.connect(settings.postgres_dsn(), autocommit=True) as store:
            store.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    values = {key: value for key, value in read_env(settings.env_file).items() if key not in NEW_KEYS}
    write_private(settings.env_file, "".join(f"{key}={value}\n" for key, value in values.items()))


@pytest.fixture(scope="module")
def old_stack():
    root = Path(tempfile.mkdtemp(prefix="mlstack-upgrade-"))
    settings = make_project(root / "project")
    update_env(settings.env_file, {"POSTGRES_USER": "mlflow"})  # what .env.example said before
    settings = Settings.load(settings.project_dir)
    try:
        find_tools(settings)
    except MissingToolError as missing:
        pytest.skip(f"the native runtime is not installed: {missing}")
    stack = NativeStack(settings, Console(stderr=True))
    stack.start()
    try:
        yield stack
    finally:
        stack.discard()
        shutil.rmtree(root, ignore_errors=True)


def log_in_from_env_file(project_dir: Path, monkeypatch) -> Settings:
    """The project's settings with the login .env has now (not one an earlier step exported)."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.load(project_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", settings.mlflow_tracking_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", settings.mlflow_tracking_password.get_secret_value())
    return settings


def test_mlstack_up_converts_an_old_stack_and_keeps_its_runs(old_stack, monkeypatch):
    run_steps(CLIENT_STEPS, old_stack.settings, lambda result: None)
    settings = log_in_from_env_file(old_stack.settings.project_dir, monkeypatch)
    client = MlflowClient(settings.mlflow_url)
    run = client.create_run(client.create_experiment("before the upgrade"))
    client.log_metric(run.info.run_id, "loss", 0.25)
    make_it_old(settings)
    old_stack.stop()

    upgrade = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    output = upgrade.stdout.replace("\n", " ")
    assert "MLflow database role: created" in output and "handed over" in output, output
    assert "MLflow client account: created" in output, output

    settings = log_in_from_env_file(settings.project_dir, monkeypatch)
    assert all(read_env(settings.env_file).get(key) for key in NEW_KEYS), "up generated the new secrets"
    with psycopg.connect(settings.postgres_dsn(as_server=True), autocommit=True) as connection:
        assert connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        owners = connection.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        ).fetchall()
        routines = connection.execute(
            "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public'"
        ).fetchall()
    assert owners == [(settings.mlflow_db_user,)] and routines in ([], [(settings.mlflow_db_user,)])
    client = MlflowClient(settings.mlflow_url)
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.25}
    client.log_metric(run.info.run_id, "loss", 0.125, step=1)

    second = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    assert second.returncode == 0 and "already running and healthy" in second.stdout, second.stdout + second.stderr
