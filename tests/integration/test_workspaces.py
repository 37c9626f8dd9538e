"""Teams in workspaces (docs/security.md), on a scratch stack with MLFLOW_ENABLE_WORKSPACES=true and the
fast store: `mlstack workspace add|list|grant`, then a person of workspace A reads and writes A's
experiments and runs, and can neither see nor write workspace B's (search, get, log), whichever
workspace the request names."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import requests
from rich.console import Console

from mlstack.envfile import update_env
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.settings import Settings
from tests.conftest import make_project, run_mlstack
from tests.stack import discard

pytestmark = pytest.mark.integration

PASSWORD = "a-long-password-0123456789"
HEADER = "X-MLflow-Workspace"


@pytest.fixture(scope="module")
def stack():
    root = Path(tempfile.mkdtemp(prefix="mlstack-workspaces-"))
    settings = make_project(root / "project")
    update_env(settings.env_file, {"MLFLOW_ENABLE_WORKSPACES": "true", "MLSTACK_FAST_STORE": "true"})
    settings = Settings.load(settings.project_dir)
    runtime = NativeRuntime(settings, Console(stderr=True))
    try:
        up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
        assert up.returncode == 0, up.stdout + up.stderr
        for name in ("alice", "bob"):
            added = run_mlstack(settings.project_dir, "user", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
            assert added.returncode == 0, added.stdout + added.stderr
        yield settings
    finally:
        discard(runtime)
        shutil.rmtree(root, ignore_errors=True)


def call(settings: Settings, who: str, workspace: str, method: str, path: str, **kwargs) -> requests.Response:
    auth = (
        (settings.mlflow_auth_admin_username, settings.mlflow_auth_admin_password.get_secret_value())
        if who == "admin"
        else (who, PASSWORD)
    )
    return requests.request(
        method, f"{settings.mlflow_url}{path}", auth=auth, headers={HEADER: workspace}, timeout=60, **kwargs
    )


def test_workspace_commands_add_list_grant_and_refuse_clearly(stack):
    for name, description in (("team-a", "vision"), ("team-b", "speech")):
        added = run_mlstack(stack.project_dir, "workspace", "add", name, "--description", description)
        assert added.returncode == 0, added.stdout + added.stderr
    listed = run_mlstack(stack.project_dir, "workspace", "list")
    assert listed.returncode == 0, listed.stderr
    assert "team-a\tvision" in listed.stdout and "team-b\tspeech" in listed.stdout
    again = run_mlstack(stack.project_dir, "workspace", "add", "team-a")
    assert again.returncode == 1 and "'team-a' exists already" in again.stdout + again.stderr
    bad = run_mlstack(stack.project_dir, "workspace", "add", "Team_A")
    assert bad.returncode == 1 and "'Team_A' is not a workspace name" in bad.stdout + bad.stderr
    for user, workspace in (("alice", "team-a"), ("bob", "team-b")):
        granted = run_mlstack(stack.project_dir, "workspace", "grant", workspace, user)
        assert granted.returncode == 0, granted.stdout + granted.stderr
    missing = run_mlstack(stack.project_dir, "workspace", "grant", "team-z", "alice")
    assert missing.returncode == 1 and "'team-z' does not exist" in missing.stdout + missing.stderr


def test_a_person_of_workspace_a_cannot_see_or_write_workspace_b(stack):
    # bob's experiment and run in team-b
    created = call(stack, "bob", "team-b", "POST", "/api/2.0/mlflow/experiments/create", json={"name": "b-secret"})
    assert created.status_code == 200, created.text
    b_experiment = created.json()["experiment_id"]
    run = call(stack, "bob", "team-b", "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": b_experiment})
    assert run.status_code == 200, run.text
    b_run = run.json()["run"]["info"]["run_id"]
    logged = call(
        stack, "bob", "team-b", "POST", "/api/2.0/mlflow/runs/log-metric",
        json={"run_id": b_run, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0},
    )  # fmt: skip
    assert logged.status_code == 200, logged.text

    # alice's in team-a: she reads and writes them
    created = call(stack, "alice", "team-a", "POST", "/api/2.0/mlflow/experiments/create", json={"name": "a-work"})
    assert created.status_code == 200, created.text
    a_experiment = created.json()["experiment_id"]
    run = call(stack, "alice", "team-a", "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": a_experiment})
    a_run = run.json()["run"]["info"]["run_id"]
    batch = {"run_id": a_run, "metrics": [{"key": "loss", "value": 0.25, "timestamp": 1, "step": 0}]}
    assert call(stack, "alice", "team-a", "POST", "/api/2.0/mlflow/runs/log-batch", json=batch).status_code == 200
    got = call(stack, "alice", "team-a", "GET", "/api/2.0/mlflow/runs/get", params={"run_id": a_run})
    assert got.status_code == 200 and got.json()["run"]["data"]["metrics"][0]["value"] == 0.25
    both = {"experiment_ids": [a_experiment, b_experiment], "run_view_type": "ALL"}
    found = call(stack, "alice", "team-a", "POST", "/api/2.0/mlflow/runs/search", json=both)
    assert found.status_code == 200, found.text
    assert [r["info"]["run_id"] for r in found.json()["runs"]] == [a_run]
    listed = call(stack, "alice", "team-a", "POST", "/api/2.0/mlflow/experiments/search", json={"max_results": 100})
    assert b_experiment not in {e["experiment_id"] for e in listed.json().get("experiments", [])}

    # team-b's from alice: from her workspace, nothing of B; naming B, refused
    for workspace in ("team-a", "team-b"):
        found = call(stack, "alice", workspace, "POST", "/api/2.0/mlflow/runs/search", json=both)
        assert found.status_code in (200, 403, 404), found.text
        assert b_run not in found.text
        got = call(stack, "alice", workspace, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": b_run})
        assert got.status_code in (403, 404) and "loss" not in got.text, (workspace, got.text)
        experiment = call(
            stack, "alice", workspace, "GET", "/api/2.0/mlflow/experiments/get", params={"experiment_id": b_experiment}
        )
        assert experiment.status_code in (403, 404) and "b-secret" not in experiment.text
        batch = {"run_id": b_run, "metrics": [{"key": "alice", "value": 1.0, "timestamp": 2, "step": 0}]}
        assert call(stack, "alice", workspace, "POST", "/api/2.0/mlflow/runs/log-batch", json=batch).status_code in (
            403,
            404,
        )
        tag = {"run_id": b_run, "key": "by", "value": "alice"}
        assert call(stack, "alice", workspace, "POST", "/api/2.0/mlflow/runs/set-tag", json=tag).status_code in (
            403,
            404,
        )
        created = call(
            stack, "alice", "team-b", "POST", "/api/2.0/mlflow/experiments/create", json={"name": "alice-in-b"}
        )
        assert created.status_code == 403, created.text

    # bob's run holds only bob's point
    got = call(stack, "bob", "team-b", "GET", "/api/2.0/mlflow/runs/get", params={"run_id": b_run})
    assert got.status_code == 200
    data = got.json()["run"]["data"]
    assert [m["key"] for m in data["metrics"]] == ["loss"] and "by" not in {t["key"] for t in data.get("tags", [])}


def test_the_scripts_account_of_env_logs_in_the_default_workspace(stack):
    """What `make demo` and a team's scripts do with workspaces on: the client account bootstrap made
    (MLFLOW_TRACKING_USERNAME/PASSWORD of .env) creates an experiment and logs a run, naming no workspace."""
    settings = Settings.load(stack.project_dir)
    auth = (settings.mlflow_tracking_username, settings.mlflow_tracking_password.get_secret_value())
    url = settings.mlflow_url
    created = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": "scripts-default"}, auth=auth, timeout=60
    )
    assert created.status_code == 200, created.text
    run = requests.post(
        f"{url}/api/2.0/mlflow/runs/create",
        json={"experiment_id": created.json()["experiment_id"]},
        auth=auth,
        timeout=60,
    )
    assert run.status_code == 200, run.text
    metric = {"run_id": run.json()["run"]["info"]["run_id"], "key": "loss", "value": 1.0, "timestamp": 1, "step": 0}
    logged = requests.post(f"{url}/api/2.0/mlflow/runs/log-metric", json=metric, auth=auth, timeout=60)
    assert logged.status_code == 200, logged.text
