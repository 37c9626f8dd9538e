"""A real MLflow version upgrade: a stack made with the previous MLflow minor (its server, its schema,
its data) is moved to the pinned MLflow by `mlstack upgrade`, as a user runs it, with MLflow's own
schema migration, and everything it held is identical afterwards.

The older stack is the native runtime with MLSTACK_MLFLOW_PYTHON naming a virtualenv of the older
MLflow (tests/mlflow_versions.py, cached in the tools folder): `mlstack up` migrates the database with
that MLflow and starts its server. Its data is written by a user's script running that MLflow's
client. The user then drops the setting (the new mlstack release runs its own, pinned MLflow) and
runs `mlstack upgrade`. The same read-back script runs before (older client and server) and after
(pinned client and server), and every table of both databases is compared row by row.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import mlflow.version
import psycopg
import pytest
from mlstack_mlflow_store import SUPPORTED_MLFLOW
from packaging.version import Version
from psycopg import sql
from rich.console import Console

from mlstack.envfile import read_env, update_env, write_private
from mlstack.errors import MissingToolError
from mlstack.runtime.native.tools import find_tools
from mlstack.settings import Settings
from tests.conftest import REQUIRED_RUNTIME, make_project, run_mlstack, user_environment
from tests.mlflow_versions import previous_minor, server_python
from tests.stack import NativeStack

pytestmark = pytest.mark.integration

PINNED_MLFLOW = mlflow.version.VERSION
#: The MLflow a stack is upgraded from: the previous minor's newest release (its virtualenv is cached).
OLDER_MLFLOW = previous_minor(PINNED_MLFLOW)
#: What the server logs when its store is the plugin's fast store.
FAST_PATHS_ON = "search-runs use mlstack's PostgreSQL fast paths"
EXPERIMENT, MODEL, ALIAS = "made before the upgrade", "upgrade-model", "champion"
#: A person given permissions by the admin before the upgrade.
PERSON, PERSON_PASSWORD = "alice", "alice-Passw0rd-before-the-upgrade"

#: Written with the older MLflow's client, through its server: an experiment with tags, two runs with
#: params, tags, metric histories and artifacts (proxied: mlflow-artifacts), a registered model with
#: two versions and an alias, and (as the admin) a person with permissions on the experiment and model.
WRITE = """
import json, os, random, tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.server import get_app_client

uri = os.environ["MLFLOW_TRACKING_URI"]
client = MlflowClient(uri)
rng = random.Random(23)
experiment = client.create_experiment(EXPERIMENT, tags={"team": "vision", "note": "café ✓"})
runs = []
for index, status in enumerate(("FINISHED", "FAILED")):
    start = 1_700_000_000_000 + index
    run = client.create_run(experiment, start_time=start, tags={"model": "resnet"}, run_name=f"run-{index}")
    run_id = run.info.run_id
    metrics = [Metric("loss", 1 / (step + 1) + index, start + step, step) for step in range(8)]
    metrics += [Metric("accuracy", rng.random(), start + 500 + step, step) for step in range(8)]
    metrics += [Metric("loss", 0.5, start + 900, 3)]  # a second point at one step
    params = [Param("lr", "0.01"), Param("layers", str(10 + index)), Param("long", "x" * 500)]
    client.log_batch(run_id, metrics=metrics, params=params, tags=[RunTag("unicode", "ünï ✓")])
    client.log_metric(run_id, "loss", float("nan"), timestamp=start + 1000, step=8)
    folder = Path(tempfile.mkdtemp())
    (folder / "model").mkdir()
    (folder / "model" / "weights.bin").write_bytes(rng.randbytes(300_000))
    (folder / "model" / "MLmodel").write_text("flavors: {}\\n")
    (folder / "report.txt").write_text(f"run {index}\\n")
    client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id, status, end_time=start + 2000)
    runs.append(run.info)
client.create_registered_model(MODEL, tags={"stage": "production"}, description="from before the upgrade")
for info in runs:
    client.create_model_version(
        MODEL, f"{info.artifact_uri}/model", run_id=info.run_id, tags={"run": info.run_name}, description=info.run_name
    )
client.set_registered_model_alias(MODEL, ALIAS, "2")
os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ["ADMIN_USERNAME"]
os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ["ADMIN_PASSWORD"]
auth = get_app_client("basic-auth", tracking_uri=uri)
auth.create_user(PERSON, PERSON_PASSWORD)
auth.grant_user_permission(PERSON, "experiment", experiment, "EDIT")
auth.grant_user_permission(PERSON, "registered_model", MODEL, "MANAGE")
print(json.dumps({"experiment_id": experiment}))
"""

#: Everything the stack holds about that data, read back through the server with the MLflow that runs
#: this script: the same script before the upgrade (older MLflow) and after (pinned MLflow).
READ = """
import hashlib, json, math, os, sys, tempfile

import requests
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.server import get_app_client

uri, experiment_id = os.environ["MLFLOW_TRACKING_URI"], sys.argv[1]
client = MlflowClient(uri)


def value(number):
    return "nan" if math.isnan(number) else repr(number)


def artifacts(run_id, path=None):
    found = {}
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= artifacts(run_id, item.path)
            continue
        local = client.download_artifacts(run_id, item.path, tempfile.mkdtemp())
        with open(local, "rb") as downloaded:
            found[item.path] = [item.file_size, hashlib.sha256(downloaded.read()).hexdigest()]
    return found


def run_data(run):
    info = run.info
    return {
        "info": {name: getattr(info, name) for name in (
            "run_id", "run_name", "experiment_id", "user_id", "status", "start_time", "end_time",
            "artifact_uri", "lifecycle_stage",
        )},
        "params": run.data.params,
        "tags": run.data.tags,
        "metrics": {key: value(number) for key, number in run.data.metrics.items()},
    }


experiment = client.get_experiment(experiment_id)
found = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"], run_view_type=ViewType.ALL)
runs = []
for run in found:
    got = run_data(client.get_run(run.info.run_id))
    assert got == run_data(run), "get_run and search_runs agree"
    got["history"] = {
        key: sorted((m.step, m.timestamp, value(m.value)) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }
    got["artifacts"] = artifacts(run.info.run_id)
    runs.append(got)
model = client.get_registered_model(MODEL)
versions = sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
admin = (os.environ["ADMIN_USERNAME"], os.environ["ADMIN_PASSWORD"])
os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = admin
auth = get_app_client("basic-auth", tracking_uri=uri)
person = auth.get_user(PERSON)
os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = PERSON, PERSON_PASSWORD
as_person = MlflowClient(uri)
get = f"{uri}/api/2.0/mlflow/experiments/get"
print(json.dumps({
    "server": requests.get(f"{uri}/version", auth=admin, timeout=30).text,
    "experiment": {
        "id": experiment.experiment_id, "name": experiment.name, "tags": experiment.tags,
        "artifact_location": experiment.artifact_location, "lifecycle_stage": experiment.lifecycle_stage,
        "creation_time": experiment.creation_time, "last_update_time": experiment.last_update_time,
    },
    "runs": runs,
    "model": {
        "name": model.name, "description": model.description, "tags": model.tags, "aliases": model.aliases,
        "creation_timestamp": model.creation_timestamp,
    },
    "versions": [
        {name: getattr(v, name) for name in (
            "version", "source", "run_id", "status", "tags", "description", "aliases", "creation_timestamp",
        )}
        for v in versions
    ],
    "alias": client.get_model_version_by_alias(MODEL, ALIAS).version,
    "person": {"username": person.username, "is_admin": person.is_admin},
    "permissions": {
        kind: auth.get_user_permission(PERSON, kind, name).to_json()
        for kind, name in (("experiment", experiment_id), ("registered_model", MODEL))
    },
    "person_reads": [as_person.get_experiment(experiment_id).name, as_person.get_registered_model(MODEL).name],
    "wrong_password": requests.get(
        get, params={"experiment_id": experiment_id}, auth=(PERSON, "not-the-password"), timeout=30
    ).status_code,
}, sort_keys=True))
"""

#: The data the two scripts name, defined in front of them.
NAMES = f"EXPERIMENT, MODEL, ALIAS = {EXPERIMENT!r}, {MODEL!r}, {ALIAS!r}\n"
NAMES += f"PERSON, PERSON_PASSWORD = {PERSON!r}, {PERSON_PASSWORD!r}\n"


def as_user(python: str, script: str, settings: Settings, *arguments: str) -> str:
    """`script` run by `python` as a user's script: the client login from the project's .env, and the
    admin's for the auth calls; its temporary files in the scratch project. Its standard output."""
    env = read_env(settings.env_file)
    temporary = settings.project_dir / ".home" / "tmp"
    temporary.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [python, "-c", NAMES + textwrap.dedent(script), *arguments],
        env={
            **user_environment(settings.project_dir / ".home"),
            "MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"],
            "MLFLOW_TRACKING_USERNAME": env["MLFLOW_TRACKING_USERNAME"],
            "MLFLOW_TRACKING_PASSWORD": env["MLFLOW_TRACKING_PASSWORD"],
            "ADMIN_USERNAME": settings.mlflow_auth_admin_username,
            "ADMIN_PASSWORD": settings.mlflow_auth_admin_password.get_secret_value(),
            "TMPDIR": str(temporary),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.strip().splitlines()[-1]


def alembic_heads(python: str) -> dict[str, str]:
    """The head revisions of an MLflow's backend-store and auth migrations."""
    code = textwrap.dedent(
        """
        import json, os
        import mlflow
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        heads = {}
        for name, folder in (("store", "store/db_migrations"), ("auth", "server/auth/db/migrations")):
            config = Config()
            config.set_main_option("script_location", os.path.join(os.path.dirname(mlflow.__file__), folder))
            heads[name] = ScriptDirectory.from_config(config).get_current_head()
        print(json.dumps(heads))
        """
    )
    return json.loads(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout)


def database_rows(settings: Settings) -> dict[str, dict[str, list[dict]]]:
    """Every row of every table of both databases (the backend store's and the auth app's), sorted;
    alembic's version tables apart."""
    rows = {}
    for database in (settings.postgres_db, settings.mlflow_auth_db):
        with psycopg.connect(settings.postgres_dsn(database), autocommit=True) as connection:
            tables = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'alembic_version%'"
            ).fetchall()
            for (table,) in tables:
                query = sql.SQL("SELECT row_to_json(t)::text AS j FROM public.{} t ORDER BY j")
                found = connection.execute(query.format(sql.Identifier(table))).fetchall()
                rows[f"{database}.{table}"] = [json.loads(text) for (text,) in found]
    return rows


def unchanged(before: dict[str, list[dict]], after: dict[str, list[dict]]) -> list[str]:
    """The tables whose rows differ, each row seen through the columns it had before (the migration
    may add columns, and tables, which start empty)."""
    differing = [f"{table}: gone" for table in before if table not in after]
    for table, rows in before.items():
        columns = set(rows[0]) if rows else set()
        seen = sorted(
            json.dumps({k: v for k, v in row.items() if k in columns}, sort_keys=True) for row in after[table]
        )
        if seen != sorted(json.dumps(row, sort_keys=True) for row in rows):
            differing.append(f"{table}: {len(rows)} rows before, {len(after[table])} after")
    differing += [f"{table}: new, not empty" for table in after if table not in before and after[table]]
    return differing


def schema_versions(settings: Settings) -> dict[str, str]:
    versions = {}
    for name, database, table in (
        ("store", settings.postgres_db, "alembic_version"),
        ("auth", settings.mlflow_auth_db, "alembic_version_auth"),  # the auth app's own version table
    ):
        with psycopg.connect(settings.postgres_dsn(database), autocommit=True) as connection:
            query = sql.SQL("SELECT version_num FROM public.{}").format(sql.Identifier(table))
            versions[name] = connection.execute(query).fetchone()[0]
    return versions


@pytest.fixture(scope="module")
def older_python() -> str:
    return str(server_python(Settings.load(Path(__file__).resolve().parents[2]).tools_path, OLDER_MLFLOW))


@pytest.fixture
def older_stack(tmp_path_factory, older_python) -> NativeStack:
    """A project whose .env runs the server with the older MLflow; not started. Stopped and its data
    removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="mlstack-mlflow-upgrade-"))
    settings = make_project(root / "project")
    try:
        find_tools(settings)
    except MissingToolError as missing:
        if REQUIRED_RUNTIME == "native":
            pytest.fail(f"MLSTACK_REQUIRE_RUNTIME=native but the native runtime cannot run: {missing}")
        pytest.skip(f"the native runtime is not installed: {missing}")
    update_env(settings.env_file, {"MLSTACK_MLFLOW_PYTHON": older_python})
    stack = NativeStack(Settings.load(settings.project_dir), Console(stderr=True))
    try:
        yield stack
    finally:
        stack.discard()
        shutil.rmtree(root, ignore_errors=True)


def test_the_previous_minor_is_older_than_the_pinned_mlflow():
    """The upgrade below crosses a minor version, and the pinned one is a supported version."""
    assert Version(OLDER_MLFLOW).release[:2] < Version(PINNED_MLFLOW).release[:2], OLDER_MLFLOW
    assert Version(PINNED_MLFLOW).release[:2] in SUPPORTED_MLFLOW


def test_mlstack_upgrade_moves_a_stack_of_the_older_mlflow_to_the_pinned_one_keeping_everything(
    older_stack, older_python
):
    settings = older_stack.settings
    older, pinned = alembic_heads(older_python), alembic_heads(sys.executable)
    assert older["store"] != pinned["store"], "the two versions' schemas differ: the migration is real"

    up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    assert up.returncode == 0, up.stdout + up.stderr
    assert schema_versions(settings) == older, "the older MLflow made the schema"
    experiment_id = json.loads(as_user(older_python, WRITE, settings))["experiment_id"]
    before = json.loads(as_user(older_python, READ, settings, experiment_id))
    assert before["server"].startswith(f"{OLDER_MLFLOW}."), before["server"]
    rows_before = database_rows(settings)
    log_before = older_stack.server_log()
    if Version(before["server"]).release[:2] in SUPPORTED_MLFLOW:
        assert FAST_PATHS_ON in log_before, "the fast paths were on"
    else:
        assert f"MLflow {before['server']} is not a supported version" in log_before, "the fast paths were off"

    # the new release: mlstack's own MLflow runs the server from now on
    values = {key: value for key, value in read_env(settings.env_file).items() if key != "MLSTACK_MLFLOW_PYTHON"}
    write_private(settings.env_file, "".join(f"{key}={value}\n" for key, value in values.items()))
    upgrade = run_mlstack(settings.project_dir, "upgrade", "--stack", "mlflow", "--runtime", "native")
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "upgraded: the mlflow stack is current and up" in upgrade.stdout.replace("\n", " "), upgrade.stdout
    archive = Path(upgrade.stdout.split("backup before the upgrade:", 1)[1].split()[0])
    assert archive.exists(), "the backup taken before the migration is kept"

    assert schema_versions(settings) == pinned, "the schema is the pinned MLflow's head"
    after = json.loads(as_user(sys.executable, READ, settings, experiment_id))
    assert after.pop("server") == PINNED_MLFLOW
    before.pop("server")
    assert after == before
    assert unchanged(rows_before, database_rows(settings)) == [], "every row of both databases is as it was"
    assert len(rows_before[f"{settings.postgres_db}.metrics"]) == 36, "2 runs x 18 points were compared"
    log_after = older_stack.server_log()[len(log_before) :]
    assert FAST_PATHS_ON in log_after, log_after[-3000:]

    # the artifacts are the bytes written: two runs, three files each
    assert [sorted(run["artifacts"]) for run in after["runs"]] == [
        ["model/MLmodel", "model/weights.bin", "report.txt"]
    ] * 2
    assert [run["artifacts"]["model/weights.bin"][0] for run in after["runs"]] == [300_000, 300_000]
    assert [len(run["history"]["loss"]) for run in after["runs"]] == [10, 10]
    assert after["alias"] == "2" and after["model"]["aliases"] == {ALIAS: "2"}
    assert [v["version"] for v in after["versions"]] == ["1", "2"]
    assert after["permissions"]["experiment"]["permission"] == "EDIT"
    assert after["permissions"]["registered_model"]["permission"] == "MANAGE"
    assert after["person_reads"] == [EXPERIMENT, MODEL] and after["wrong_password"] == 401
    assert os.path.basename(archive).startswith("mlstack-mlflow-")
