"""A password change, a removal or a permission change counts from the next request, in every
worker: the old password is refused at once, a removed person gets 401 (not 404), and requests
racing the change get 200 or 401, never 500."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mlstack.bootstrap.mlflow import MlflowUsers
from tests.conftest import run_mlstack

pytestmark = pytest.mark.integration
#: Enough requests, each on a connection of its own, to reach every worker many times over.
REQUESTS = 40
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def statuses(url: str, login: tuple[str, str], path: str = "/api/2.0/mlflow/users/current") -> set[int]:
    return {requests.get(f"{url}{path}", auth=login, timeout=30).status_code for _ in range(REQUESTS)}


@pytest.fixture
def carol(mlflow_stack):
    name, password = f"carol-{uuid.uuid4().hex[:6]}", "carol-password-" + uuid.uuid4().hex[:8]
    added = run_mlstack(mlflow_stack.settings.project_dir, "user", "add", name, "--password-stdin", stdin=password)
    assert added.returncode == 0, added.stdout + added.stderr
    yield name, password
    run_mlstack(mlflow_stack.settings.project_dir, "user", "remove", name)


def test_a_changed_password_is_refused_at_once_in_every_worker(mlflow_stack, carol):
    name, old = carol
    url = mlflow_stack.tracking_uri
    assert statuses(url, (name, old)) == {200}  # every worker has checked (and cached) the old password
    new = old + "-changed"
    MlflowUsers(mlflow_stack.settings).set_password(name, new)
    assert statuses(url, (name, old)) == {401}
    assert statuses(url, (name, new)) == {200}


def test_a_removed_person_gets_401_at_once_and_racing_requests_never_500(mlflow_stack, carol):
    name, password = carol
    url = mlflow_stack.tracking_uri
    assert statuses(url, (name, password)) == {200}
    with ThreadPoolExecutor(4) as pool:
        racing = [pool.submit(statuses, url, (name, password), SEARCH) for _ in range(4)]
        removed = run_mlstack(mlflow_stack.settings.project_dir, "user", "remove", name)
        seen = set().union(*(future.result() for future in racing))
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert seen <= {200, 401}, seen
    assert statuses(url, (name, password)) == {401}
    assert statuses(url, (name, password), SEARCH) == {401}


def test_a_permission_taken_away_counts_from_the_next_request(mlflow_stack, carol, team):
    name, password = carol
    url, path = mlflow_stack.tracking_uri, "/api/2.0/mlflow/experiments/set-experiment-tag"
    body = {"experiment_id": team.shared_experiment, "key": "by", "value": name}

    def tag() -> set[int]:
        return {
            requests.post(f"{url}{path}", json=body, auth=(name, password), timeout=30).status_code for _ in range(20)
        }

    assert tag() == {200}
    MlflowUsers(mlflow_stack.settings).grant(name, "experiment", team.shared_experiment, "DENY")
    assert tag() == {403}
