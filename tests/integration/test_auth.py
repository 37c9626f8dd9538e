"""Authentication and least privilege on the live stack: anonymous requests refused on every API
family, the client account `mlstack up` created logs runs (10,000 points through the tracker, every
one a row), people added with `mlstack user` get what they were given and no more, the server's
database role cannot act as a superuser, and a server restart keeps users and permissions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, Metric
from mlflow.exceptions import MlflowException

from mlstack.bootstrap.mlflow import MlflowUsers
from tests.conftest import client_environment, run_mlstack, user_environment

pytestmark = pytest.mark.integration

READER_PASSWORD = "reader-password-" + uuid.uuid4().hex[:8]
WRITER_PASSWORD = "writer-password-" + uuid.uuid4().hex[:8]

#: One request of each API family, as a browser or script without a login would send it.
ANONYMOUS_REQUESTS = [
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"),
    ("POST", "/api/2.0/mlflow/experiments/create"),
    ("GET", "/api/2.0/mlflow/runs/get?run_id=0123456789abcdef"),
    ("POST", "/api/2.0/mlflow/runs/search"),
    ("POST", "/api/2.0/mlflow/runs/log-batch"),
    ("GET", "/api/2.0/mlflow/registered-models/search"),
    ("POST", "/api/2.0/mlflow/registered-models/create"),
    ("GET", "/api/2.0/mlflow/model-versions/search"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=0"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x/artifacts/y.txt"),
    ("GET", "/get-artifact?path=y.txt&run_uuid=0123456789abcdef"),
    ("POST", "/ajax-api/2.0/mlflow/runs/search"),
    ("GET", "/api/2.0/mlflow/users/list"),
    ("GET", "/"),
]


def client_as(mlflow_stack, monkeypatch, username: str, password: str) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(mlflow_stack.tracking_uri)


@pytest.fixture(scope="module")
def people(mlflow_stack):
    """A read-only and a writing person, added with `mlstack user add` (password on stdin)."""
    settings = mlflow_stack.settings
    for name, password, flags in (("reader", READER_PASSWORD, ["--read-only"]), ("writer", WRITER_PASSWORD, [])):
        added = run_mlstack(
            settings.project_dir, "user", "add", name, *flags, "--password-stdin", stdin=password + "\n"
        )
        assert added.returncode == 0, added.stdout + added.stderr
    yield
    for name in ("reader", "writer"):
        run_mlstack(settings.project_dir, "user", "remove", name)


def run_script(code: str, cwd: Path, env: dict[str, str]) -> str:
    """`code` (dedented) as a user's script in a process of its own, in `cwd`, with exactly `env`; its
    output (asserting it succeeded)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def shared_run(mlflow_stack, tmp_path_factory):
    """An experiment and a run the client account made: a plain mlflow script, run with what the
    README says it needs exported from .env (the URI, the client account's login) and nothing else."""
    home = tmp_path_factory.mktemp("plain-script-home")
    env = {**user_environment(home), **client_environment(mlflow_stack.settings)}
    output = run_script(
        f"""
        from mlflow import MlflowClient
        client = MlflowClient()
        experiment_id = client.create_experiment("auth-{uuid.uuid4().hex[:8]}")
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "loss", 0.5)
        print(experiment_id, run.info.run_id)
        """,
        home,
        env,
    )
    experiment_id, run_id = output.split()[-2:]
    return experiment_id, run_id


@pytest.mark.parametrize(("method", "path"), ANONYMOUS_REQUESTS)
def test_requests_without_a_login_are_refused(mlflow_stack, method, path):
    answer = requests.request(method, f"{mlflow_stack.tracking_uri}{path}", json={}, timeout=30)
    assert answer.status_code == 401, answer.text[:200]
    wrong = requests.request(method, f"{mlflow_stack.tracking_uri}{path}", auth=("mlstack-client", "wrong"), timeout=30)
    assert wrong.status_code == 401


def test_the_ui_asks_a_browser_for_a_login(mlflow_stack):
    answer = requests.get(f"{mlflow_stack.tracking_uri}/", timeout=30)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic")


def test_health_answers_without_a_login_for_probes(mlflow_stack):
    assert requests.get(f"{mlflow_stack.tracking_uri}/health", timeout=10).text == "OK"


def test_the_client_account_logs_a_run_that_lands_in_postgres(mlflow_stack, shared_run):
    _, run_id = shared_run
    with mlflow_stack.pg_connect() as connection:
        rows = connection.execute("SELECT key, value FROM metrics WHERE run_uuid = %s", (run_id,)).fetchall()
    assert rows == [("loss", 0.5)]


def test_the_tracker_logs_10000_points_through_auth_and_loses_none(mlflow_stack, tmp_path):
    """A user's script in the project folder, with no MLFLOW_* variable: the tracker finds the server
    and the client login in .env."""
    output = run_script(
        f"""
        from mlstack.tracking import ExperimentTracker, setup_mlflow
        setup_mlflow("auth-tracker-{uuid.uuid4().hex[:8]}")
        with ExperimentTracker(run_name="10k through auth") as tracker:
            for step in range(10_000):
                tracker.log_metrics({{"loss": 1 / (step + 1)}}, step=step)
        print(tracker.run_id)
        """,
        mlflow_stack.settings.project_dir,
        user_environment(tmp_path / "home"),
    )
    run_id = output.split()[-1]
    with mlflow_stack.pg_connect() as connection:
        (count,) = connection.execute(
            "SELECT count(DISTINCT step) FROM metrics WHERE run_uuid = %s AND key = 'loss'", (run_id,)
        ).fetchone()
    assert count == 10_000


def test_a_read_only_person_reads_but_cannot_write(mlflow_stack, people, shared_run, monkeypatch):
    experiment_id, run_id = shared_run
    reader = client_as(mlflow_stack, monkeypatch, "reader", READER_PASSWORD)
    assert reader.get_run(run_id).data.metrics == {"loss": 0.5}
    for write in (
        lambda: reader.log_metric(run_id, "loss", 9.0),
        lambda: reader.set_experiment_tag(experiment_id, "owner", "reader"),
        lambda: reader.create_run(experiment_id),
    ):
        with pytest.raises(MlflowException, match="403"):
            write()


def test_a_writing_person_logs_to_the_teams_runs_but_cannot_delete_them(mlflow_stack, people, shared_run, monkeypatch):
    experiment_id, run_id = shared_run
    writer = client_as(mlflow_stack, monkeypatch, "writer", WRITER_PASSWORD)
    writer.log_metric(run_id, "writer_metric", 1.0)
    with pytest.raises(MlflowException, match="403"):
        writer.delete_experiment(experiment_id)


def test_metrics_only_batches_are_checked_on_the_run_and_batches_naming_models_on_the_models_too(
    mlflow_stack, people, shared_run, monkeypatch
):
    """The request-level log-batch path checks a metrics-only batch's permission without parsing it
    into protobuf (routes.py): a reader is still refused and writes nothing, a writer lands, and a
    batch naming a logged model keeps MLflow's whole check (an unknown model is refused)."""
    _, run_id = shared_run
    points = [Metric("batched", float(step), 1_700_000_000_000, step) for step in range(50)]
    reader = client_as(mlflow_stack, monkeypatch, "reader", READER_PASSWORD)
    with pytest.raises(MlflowException, match="403"):
        reader.log_batch(run_id, metrics=points)
    assert batched_steps(mlflow_stack, run_id) == []

    writer = client_as(mlflow_stack, monkeypatch, "writer", WRITER_PASSWORD)
    writer.log_batch(run_id, metrics=points)
    assert batched_steps(mlflow_stack, run_id) == list(range(50))
    with pytest.raises(MlflowException, match="403"):
        writer.log_batch(run_id, metrics=[Metric("batched", 1.0, 1, 99, model_id=f"m-{uuid.uuid4().hex}")])
    assert batched_steps(mlflow_stack, run_id) == list(range(50))


def batched_steps(mlflow_stack, run_id: str) -> list[int]:
    with mlflow_stack.pg_connect() as connection:
        found = connection.execute(
            "SELECT step FROM metrics WHERE run_uuid = %s AND key = 'batched' ORDER BY step", (run_id,)
        ).fetchall()
    return [step for (step,) in found]


def test_a_person_denied_an_experiment_cannot_read_it(mlflow_stack, people, shared_run, monkeypatch):
    experiment_id, run_id = shared_run
    MlflowUsers(mlflow_stack.settings).grant("reader", "experiment", experiment_id, "DENY")
    reader = client_as(mlflow_stack, monkeypatch, "reader", READER_PASSWORD)
    with pytest.raises(MlflowException, match="403"):
        reader.get_run(run_id)
    with pytest.raises(MlflowException, match="403"):
        reader.get_experiment(experiment_id)
    other = MlflowClient(mlflow_stack.tracking_uri)  # switch back: the client account makes another
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_stack.client_auth[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_stack.client_auth[1])
    open_experiment = other.create_experiment(f"open-{uuid.uuid4().hex[:8]}")
    assert client_as(mlflow_stack, monkeypatch, "reader", READER_PASSWORD).get_experiment(open_experiment)


def test_links_to_logged_models_a_person_is_denied_are_still_withheld(mlflow_stack, people, monkeypatch):
    """The store plugin sends answers that name no logged model past the auth app's redaction
    (routes.py); an answer naming one still goes through it: a person denied logged models sees the
    run without its model link, in runs/get and in search-runs, while its owner sees the link."""
    owner = client_as(mlflow_stack, monkeypatch, *mlflow_stack.client_auth)
    experiment_id = owner.create_experiment(f"links-{uuid.uuid4().hex[:8]}")
    linked, plain = (owner.create_run(experiment_id).info.run_id for _ in range(2))
    model = owner.create_logged_model(experiment_id, source_run_id=linked)
    owner.log_outputs(linked, [LoggedModelOutput(model.model_id, step=0)])
    assert [output.model_id for output in owner.get_run(linked).outputs.model_outputs] == [model.model_id]

    MlflowUsers(mlflow_stack.settings).grant("reader", "logged_model", "*", "DENY")
    reader = client_as(mlflow_stack, monkeypatch, "reader", READER_PASSWORD)
    assert reader.get_run(linked).outputs.model_outputs == []
    found = {run.info.run_id: run for run in reader.search_runs([experiment_id])}
    assert set(found) == {linked, plain}
    assert found[linked].outputs.model_outputs == []
    owner = client_as(mlflow_stack, monkeypatch, *mlflow_stack.client_auth)
    assert [output.model_id for output in owner.get_run(linked).outputs.model_outputs] == [model.model_id]


def test_a_server_restart_keeps_people_and_their_permissions(mlflow_stack, people, shared_run, monkeypatch):
    experiment_id, run_id = shared_run
    MlflowUsers(mlflow_stack.settings).grant("reader", "experiment", experiment_id, "DENY")
    mlflow_stack.restart_server()
    writer = client_as(mlflow_stack, monkeypatch, "writer", WRITER_PASSWORD)
    writer.log_metric(run_id, "after_restart", 1.0)
    reader = client_as(mlflow_stack, monkeypatch, "reader", READER_PASSWORD)
    with pytest.raises(MlflowException, match="403"):
        reader.get_run(run_id)


def test_a_removed_person_is_refused(mlflow_stack):
    settings = mlflow_stack.settings
    password = "leaver-password-" + uuid.uuid4().hex[:8]
    assert (
        run_mlstack(settings.project_dir, "user", "add", "leaver", "--password-stdin", stdin=password + "\n").returncode
        == 0
    )
    url = f"{mlflow_stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(url, auth=("leaver", password), timeout=10).status_code == 200
    removed = run_mlstack(settings.project_dir, "user", "remove", "leaver")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    # every worker refuses the login from the next request (each request reads the person's row)
    answers = [requests.get(url, auth=("leaver", password), timeout=10).status_code for _ in range(20)]
    assert answers == [401] * 20, answers


def test_the_server_role_is_no_superuser_and_cannot_run_programs(mlflow_stack):
    settings = mlflow_stack.settings
    with psycopg.connect(settings.postgres_dsn(as_server=True), autocommit=True) as connection:
        powers = connection.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert powers == (False, False, False, False, False)
        for statement in (
            "COPY (SELECT 1) TO PROGRAM 'id'",
            "CREATE ROLE intruder LOGIN",
            "CREATE DATABASE intruder",
            "ALTER ROLE current_user SUPERUSER",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)
        owners = connection.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        ).fetchall()
    assert owners == [(settings.mlflow_db_user,)], "the role owns every table, sequence and index it migrates"


def test_the_servers_environment_holds_no_superuser_or_store_admin_secret(mlflow_stack):
    settings = mlflow_stack.settings
    secrets = {settings.postgres_password.get_secret_value(), settings.s3_admin_secret_key.get_secret_value()}
    environments = mlflow_stack.server_environments()
    assert environments, "no MLflow server process was found to inspect"
    for environment in environments:
        assert not secrets & set(environment.values())
        assert environment["PGPASSWORD"] == settings.mlflow_db_password.get_secret_value()
