"""The fast store with workspaces on (services/mlflow-server/store, workspaces.py) held to MLflow's own
`WorkspaceAwareSqlAlchemyStore` on the live backend store, in two workspaces of their own.

In its workspace a run reads, logs and searches as MLflow's store has it; from the other workspace (or
from the default one) runs/get, log-metric, set-tag, log-batch and search-runs answer exactly as
MLflow's store answers (a run of another workspace is "not found", its experiment searched is empty),
and nothing is written.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.entities.workspace import Workspace, WorkspaceDeletionMode
from mlflow.server import handlers
from mlflow.store.tracking.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore
from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore as WorkspaceStore
from mlflow.tracking._tracking_service.utils import _tracking_store_registry
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from mlflow.utils.workspace_context import WorkspaceContext
from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME
from mlstack_mlflow_store import routes
from mlstack_mlflow_store.workspaces import WorkspaceFastPathStore

from tests.integration.test_fast_store import comparable, error_of, furnish, new_run, rows

pytestmark = pytest.mark.integration

ARTIFACT_ROOT = "mlflow-artifacts:/"
SEARCH = "/ajax-api/2.0/mlflow/runs/search"
LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"


@pytest.fixture(scope="module")
def uri(mlflow_stack) -> str:
    return mlflow_stack.settings.backend_store_uri()


@pytest.fixture(scope="module")
def workspaces(uri) -> Iterator[tuple[str, str]]:
    """Workspaces on (for this module), and two workspaces of its own, removed with what they hold."""
    names = tuple(f"ws-{side}-{uuid.uuid4().hex[:8]}" for side in "ab")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
        store = WorkspaceStore(uri)
        for name in names:
            store.create_workspace(Workspace(name=name, description="fast-store equivalence"))
        yield names
        for name in names:
            store.delete_workspace(name, mode=WorkspaceDeletionMode.CASCADE)
        store._engine.dispose()


@pytest.fixture(scope="module")
def upstream(uri, workspaces):
    store = WorkspaceAwareSqlAlchemyStore(uri, ARTIFACT_ROOT)
    yield store
    store.engine.dispose()


@pytest.fixture(scope="module")
def fast(uri, workspaces):
    store = WorkspaceFastPathStore(uri, ARTIFACT_ROOT)
    yield store
    store.engine.dispose()


@pytest.fixture(scope="module")
def experiments(upstream, workspaces) -> dict[str, str]:
    """An experiment in each workspace, by workspace name."""
    found = {}
    for workspace in workspaces:
        with WorkspaceContext(workspace):
            found[workspace] = upstream.create_experiment(f"fast-ws-{uuid.uuid4().hex[:10]}")
    return found


def test_mlflow_builds_the_workspace_fast_store_with_workspaces_on(uri, workspaces, monkeypatch):
    def build():
        return _tracking_store_registry.get_store_builder(uri)(store_uri=uri, artifact_uri=ARTIFACT_ROOT)

    monkeypatch.setenv("MLSTACK_FAST_STORE", "true")
    store = build()
    assert type(store) is WorkspaceFastPathStore and store.supports_workspaces
    store.engine.dispose()
    monkeypatch.setenv("MLSTACK_FAST_STORE", "false")
    store = build()
    assert type(store) is WorkspaceAwareSqlAlchemyStore
    store.engine.dispose()


def test_get_run_in_its_workspace_returns_what_mlflows_store_returns(upstream, fast, workspaces, experiments):
    workspace = workspaces[0]
    with WorkspaceContext(workspace):
        runs = {}
        for name, store in (("upstream", upstream), ("fast", fast)):
            runs[name] = new_run(store, experiments[workspace])
            furnish(store, experiments[workspace], runs[name])
        for run_id in runs.values():  # furnished through each store, read through both
            expected = upstream.get_run(run_id)
            assert expected.inputs.model_inputs and expected.outputs.model_outputs
            assert comparable(fast.get_run(run_id)) == comparable(expected)
            assert fast.get_run(run_id).to_proto().info == expected.to_proto().info


WRITES = {
    "log_metric": lambda store, run_id: store.log_metric(run_id, Metric("m", 1.0, 1, 0)),
    "log_metric_nan": lambda store, run_id: store.log_metric(run_id, Metric("m", math.nan, 2, 1)),
    "set_tag": lambda store, run_id: store.set_tag(run_id, RunTag("k", "v")),
    "set_run_name": lambda store, run_id: store.set_tag(run_id, RunTag(MLFLOW_RUN_NAME, "renamed")),
    "log_batch": lambda store, run_id: store.log_batch(run_id, [Metric("m", 1.0, 1, 0)], [], []),
    "log_batch_params": lambda store, run_id: store.log_batch(run_id, [], [Param("p", "1")], []),
    "log_metric_columns": lambda store, run_id: store.log_metric_columns(run_id, ["m"], [1.0], [1], [0]),
    "get_run": lambda store, run_id: store.get_run(run_id),
}


@pytest.mark.parametrize("call", list(WRITES.values()), ids=list(WRITES))
@pytest.mark.parametrize("where", ["other", "default"])
def test_a_run_of_another_workspace_is_answered_as_mlflows_store_does(
    mlflow_stack, upstream, fast, workspaces, experiments, call, where
):
    """Each call from workspace B (or the default workspace) on a run of A fails as MLflow's does, and
    writes nothing."""
    owner, other = workspaces
    with WorkspaceContext(owner):
        run_id = new_run(upstream, experiments[owner])
    outsider = other if where == "other" else DEFAULT_WORKSPACE_NAME
    with WorkspaceContext(outsider):
        if call is WRITES["log_metric_columns"]:  # no MLflow counterpart: the request-level path's write
            assert error_of(lambda: call(fast, run_id)) == error_of(lambda: upstream.get_run(run_id))
        else:
            assert error_of(lambda: call(fast, run_id)) == error_of(lambda: call(upstream, run_id))
    assert rows(mlflow_stack, "metrics", run_id) == []
    assert rows(mlflow_stack, "params", run_id) == []
    assert rows(mlflow_stack, "tags", run_id) == [("mlflow.runName", "run"), ("origin", "test")]


@pytest.mark.parametrize("call", list(WRITES.values()), ids=list(WRITES))
def test_writes_in_its_workspace_record_what_mlflows_store_records(
    mlflow_stack, upstream, fast, workspaces, experiments, call
):
    workspace = workspaces[1]
    with WorkspaceContext(workspace):
        runs = {"upstream": new_run(upstream, experiments[workspace]), "fast": new_run(fast, experiments[workspace])}
        if call is WRITES["log_metric_columns"]:
            fast.log_metric_columns(runs["fast"], ["m"], [1.0], [1], [0])
            upstream.log_metric(runs["upstream"], Metric("m", 1.0, 1, 0))
        else:
            call(fast, runs["fast"])
            call(upstream, runs["upstream"])
        assert comparable(fast.get_run(runs["fast"])) == comparable(upstream.get_run(runs["upstream"]))
    for table in ("metrics", "latest_metrics", "params", "tags"):
        assert rows(mlflow_stack, table, runs["fast"]) == rows(mlflow_stack, table, runs["upstream"])


@pytest.fixture(scope="module")
def searched(upstream, workspaces) -> dict[str, tuple[str, list[str]]]:
    """An experiment of its own in each workspace, with runs (metrics, params, tags, one deleted): by
    workspace, the experiment and its runs."""
    made = {}
    for workspace in workspaces:
        with WorkspaceContext(workspace):
            experiment_id = upstream.create_experiment(f"fast-ws-search-{uuid.uuid4().hex[:10]}")
            made[workspace] = (experiment_id, [])
            for index in range(7):
                run_id = new_run(upstream, experiment_id, name=f"run-{index % 3}")
                upstream.log_batch(
                    run_id,
                    [Metric("rmse", (math.nan, math.inf, 0.5, float(index))[index % 4], 1_000 + index, index)],
                    [Param("alpha", str(index % 2))],
                    [RunTag("team", ("a", "b")[index % 2])],
                )
                if index == 5:
                    upstream.delete_run(run_id)
                made[workspace][1].append(run_id)
    return made


SEARCHES = [
    ("", ViewType.ACTIVE_ONLY, None, 100),
    ("", ViewType.ALL, ["metrics.rmse ASC", "params.alpha DESC"], 3),
    ("metrics.rmse > 0.1 and tags.team = 'a'", ViewType.ALL, None, 100),
    ("attributes.run_name = 'run-2'", ViewType.DELETED_ONLY, ["attributes.start_time DESC"], 2),
]


def pages(store, experiment_ids, filter_string, view, order_by, page_size) -> list:
    found, token = [], None
    while True:
        page = store.search_runs(experiment_ids, filter_string, view, page_size, order_by, token)
        found.append(([(run.info.run_id, comparable(run)) for run in page], page.token))
        token = page.token
        if not token:
            return found


@pytest.mark.parametrize(("filter_string", "view", "order_by", "page_size"), SEARCHES)
@pytest.mark.parametrize("where", ["a", "b", "default"])
def test_search_runs_over_both_workspaces_returns_what_mlflows_store_returns(
    upstream, fast, workspaces, searched, filter_string, view, order_by, page_size, where
):
    """A search naming both workspaces' experiments finds the runs of the request's workspace only
    (none from the default one), as MLflow's store does."""
    workspace = {"a": workspaces[0], "b": workspaces[1], "default": DEFAULT_WORKSPACE_NAME}[where]
    both = [searched[name][0] for name in workspaces]
    with WorkspaceContext(workspace):
        expected = pages(upstream, both, filter_string, view, order_by, page_size)
        assert pages(fast, both, filter_string, view, order_by, page_size) == expected
    found = {run_id for page, _ in expected for run_id, _ in page}
    assert found <= set(searched[workspace][1] if workspace in searched else [])
    if where != "default":
        assert found


@pytest.fixture(scope="module")
def request_apps(upstream, fast):
    """Test clients of MLflow's search-runs and log-batch handlers on MLflow's workspace store, and of
    the plugin's request-level paths on the workspace fast store."""
    apps = {"mlflow": Flask("mlflow"), "fast": Flask("fast")}
    for app in apps.values():
        app.add_url_rule(LOG_BATCH, routes.LOG_BATCH_ENDPOINT, handlers._log_batch, methods=["POST"])
        app.add_url_rule(SEARCH, routes.SEARCH_RUNS_ENDPOINT, handlers._search_runs, methods=["POST"])
    routes.install(apps["fast"], fast)
    stores = {"mlflow": upstream, "fast": fast}

    def tracking_store(*args, **kwargs):
        from flask import current_app

        return stores[current_app.name]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(handlers, "_get_tracking_store", tracking_store)
        yield apps["mlflow"].test_client(), apps["fast"].test_client()


def in_key_order(answer: dict) -> dict:
    """A search answer with each run's metrics, params and tags in key order (MLflow's ORM lists them
    in no set order; the fast store in key order)."""
    for run in answer.get("runs", []):
        for field in ("metrics", "params", "tags"):
            if field in run["data"]:
                run["data"][field] = sorted(run["data"][field], key=lambda item: item["key"])
    return answer


@pytest.mark.parametrize("where", ["a", "b", "default"])
@pytest.mark.parametrize(
    "request_body", [{}, {"max_results": 3, "order_by": ["metrics.rmse DESC"]}, {"run_view_type": "ALL"}]
)
def test_search_runs_requests_answer_mlflows_json_in_each_workspace(
    request_apps, workspaces, searched, where, request_body
):
    workspace = {"a": workspaces[0], "b": workspaces[1], "default": DEFAULT_WORKSPACE_NAME}[where]
    mlflow_client, fast_client = request_apps
    body = {"experiment_ids": [searched[name][0] for name in workspaces], **request_body}
    with WorkspaceContext(workspace):
        while True:
            expected, answer = mlflow_client.post(SEARCH, json=body), fast_client.post(SEARCH, json=body)
            assert answer.status_code == expected.status_code == 200
            assert in_key_order(answer.get_json()) == in_key_order(expected.get_json())
            token = expected.get_json().get("next_page_token")
            if not token:
                break
            body = {**body, "page_token": token}


def test_log_batch_requests_to_a_run_of_another_workspace_get_mlflows_answer(
    mlflow_stack, upstream, request_apps, workspaces, experiments
):
    owner, other = workspaces
    with WorkspaceContext(owner):
        run_id = new_run(upstream, experiments[owner])
    body = {"run_id": run_id, "metrics": [{"key": "m", "value": 1.5, "timestamp": 1, "step": 0}]}
    mlflow_client, fast_client = request_apps
    with WorkspaceContext(other):
        expected, answer = mlflow_client.post(LOG_BATCH, json=body), fast_client.post(LOG_BATCH, json=body)
    assert expected.status_code == 404
    assert (answer.status_code, answer.get_json()) == (expected.status_code, expected.get_json())
    assert rows(mlflow_stack, "metrics", run_id) == []
    with WorkspaceContext(owner):
        assert fast_client.post(LOG_BATCH, json=body).status_code == 200
    assert rows(mlflow_stack, "metrics", run_id) == [("m", 1.5, 1, 0, False)]
