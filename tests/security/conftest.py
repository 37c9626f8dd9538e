"""The team the attack used, on the session's live stack: alice (read-only), bob (EDIT on every
experiment and model), both added with `mlstack user add`; the admin's experiment with a run, which
both are denied (DENY); an experiment the team shares. Helpers count what a request could
have written where it lands (rows in PostgreSQL, objects in the bucket)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
import requests

from mlstack.bootstrap.mlflow import MlflowUsers
from tests.conftest import run_mlstack

PASSWORDS = {"alice": "alice-password-" + uuid.uuid4().hex[:8], "bob": "bob-password-" + uuid.uuid4().hex[:8]}


@dataclass
class Team:
    url: str
    logins: dict[str, tuple[str, str] | None]
    denied_experiment: str
    denied_run: str
    shared_experiment: str
    shared_run: str

    def request(self, who: str, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", auth=self.logins[who], timeout=60, **kwargs)


@pytest.fixture(scope="package")
def team(mlflow_stack) -> Team:
    settings = mlflow_stack.settings
    for name, flags in (("alice", ["--read-only"]), ("bob", [])):
        added = run_mlstack(
            settings.project_dir, "user", "add", name, *flags, "--password-stdin", stdin=PASSWORDS[name]
        )
        assert added.returncode == 0, added.stdout + added.stderr
    admin = (settings.mlflow_auth_admin_username, settings.mlflow_auth_admin_password.get_secret_value())
    logins = {
        "anonymous": None,
        "wrong password": ("bob", "not-bobs-password"),
        "alice": ("alice", PASSWORDS["alice"]),
        "bob": ("bob", PASSWORDS["bob"]),
        "admin": admin,
    }
    team = Team(settings.mlflow_url, logins, "", "", "", "")
    team.denied_experiment, team.denied_run = _experiment_with_a_run(team, "denied")
    team.shared_experiment, team.shared_run = _experiment_with_a_run(team, "shared")
    users = MlflowUsers(settings)
    for name in ("alice", "bob"):
        users.grant(name, "experiment", team.denied_experiment, "DENY")
    yield team
    for name in ("alice", "bob"):
        run_mlstack(settings.project_dir, "user", "remove", name)


def _experiment_with_a_run(team: Team, purpose: str) -> tuple[str, str]:
    experiment = team.request(
        "admin", "POST", "/api/2.0/mlflow/experiments/create", json={"name": f"{purpose}-{uuid.uuid4().hex[:8]}"}
    ).json()["experiment_id"]
    run = team.request("admin", "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment}).json()
    run_id = run["run"]["info"]["run_id"]
    body = {
        "run_id": run_id,
        "metrics": [{"key": "secret_metric", "value": 0.25, "timestamp": 1, "step": 0}],
        "params": [{"key": "secret_param", "value": "p"}],
        "tags": [{"key": "secret_tag", "value": "t"}],
    }
    assert team.request("admin", "POST", "/api/2.0/mlflow/runs/log-batch", json=body).status_code == 200
    return experiment, run_id


#: What a hostile request could have written, as PostgreSQL holds it.
COUNTS = {
    "runs": "SELECT count(*) FROM runs",
    "experiments": "SELECT count(*) FROM experiments",
    "experiment_tags": "SELECT count(*) FROM experiment_tags",
    "metrics": "SELECT count(*) FROM metrics",
    "latest_metrics": "SELECT count(*) FROM latest_metrics",
    "params": "SELECT count(*) FROM params",
    "tags": "SELECT count(*) FROM tags",
    "experiment_names": "SELECT string_agg(name, ',' ORDER BY experiment_id) FROM experiments",
}


def stored(mlflow_stack) -> dict:
    """Rows of every table a request may write, and the bucket's objects."""
    with mlflow_stack.pg_connect() as connection:
        counts = {name: connection.execute(query).fetchone()[0] for name, query in COUNTS.items()}
    pages = mlflow_stack.s3.get_paginator("list_objects_v2").paginate(Bucket=mlflow_stack.bucket)
    counts["objects"] = sorted(item["Key"] for page in pages for item in page.get("Contents", []))
    return counts
