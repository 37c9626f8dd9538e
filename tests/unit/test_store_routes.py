"""The store plugin's request-level paths (services/mlflow-server/store routes.py): which log-batch
bodies the fast path takes (only what MLflow's handler accepts exactly as it is; every other body goes
to MLflow's handler: tests/integration/test_fast_store.py holds the two to the same result), and
which answers still go through the auth app's logged-model redactions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from flask import Flask, Response
from mlflow.server import handlers
from mlstack_mlflow_store import gunicorn_hooks, routes
from mlstack_mlflow_store.routes import metric_columns, only_with_model_links
from mlstack_mlflow_store.store import PostgresFastPathStore

RUN = "0123456789abcdef0123456789abcdef"


def body(*points, **fields) -> dict:
    return {"run_id": RUN, "metrics": list(points), **fields}


def point(**fields) -> dict:
    return {"key": "loss", "value": 0.5, "timestamp": 1_700_000_000_000, "step": 3, **fields}


def test_a_metrics_only_batch_becomes_columns_in_order():
    columns = metric_columns(body(point(), point(key="acc", value=1, step=4), params=[], tags=[]))
    assert columns == (RUN, ["loss", "acc"], [0.5, 1.0], [1_700_000_000_000] * 2, [3, 4])
    assert type(columns[2][1]) is float


def test_protobuf_json_spellings_of_nan_and_infinities_are_values():
    _, _, values, _, _ = metric_columns(body(point(value="NaN"), point(value="Infinity"), point(value="-Infinity")))
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]


def test_a_missing_step_is_zero_as_in_the_protobuf_message():
    point_without_step = point()
    del point_without_step["step"]
    assert metric_columns(body(point_without_step))[4] == [0]


def test_a_full_batch_of_1000_is_taken_and_1001_is_left_to_mlflow():
    assert metric_columns(body(*[point(step=i) for i in range(1000)])) is not None
    assert metric_columns(body(*[point(step=i) for i in range(1001)])) is None


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "a double-encoded body",
        [],
        body(),
        body(point(), params=[{"key": "lr", "value": "0.1"}]),
        body(point(), tags=[{"key": "team", "value": "a"}]),
        body(point(), experiment_id="1"),
        {"metrics": [point()]},
        body(point(), run_id=7),
        body(point(), run_id="../etc"),
        body(point(), run_id=""),
        {"run_id": RUN, "metrics": point()},
        body("loss"),
        body(point(model_id="m-1")),
        body(point(dataset_name="train")),
        body(point(key=None)),
        body(point(key="")),
        body(point(key="a/../b")),
        body(point(key="/abs")),
        body(point(key="bad*name")),
        body(point(key="k" * 251)),
        body(point(value=None)),
        body(point(value=True)),
        body(point(value="0.5")),
        body(point(value="nan")),
        body(point(value=2**63)),
        body(point(timestamp=None)),
        body(point(timestamp="1700000000000")),
        body(point(timestamp=1.7e12)),
        body(point(timestamp=-1)),
        body(point(timestamp=2**63)),
        body(point(step=1.0)),
        body(point(step="3")),
        body(point(step=True)),
        body(point(step=2**63)),
        body(point(step=-(2**63) - 1)),
    ],
)
def test_anything_else_is_left_to_mlflows_handler(payload):
    assert metric_columns(payload) is None


@pytest.mark.parametrize(
    ("answer", "redacted"),
    [
        ('{"run": {"info": {"run_id": "r"}, "data": {"tags": [{"key": "model", "value": "ridge"}]}}}', False),
        ('{"runs": [{"outputs": {"model_outputs": [{"model_id": "m-1", "step": 0}]}}]}', True),
        ('{"run": {"inputs": {"model_inputs": [{"model_id": "m-1"}]}}}', True),
        ('{"metrics": [{"key": "loss", "value": 0.5, "model_id": "m-1"}]}', True),
    ],
)
def test_only_answers_naming_a_logged_model_go_through_the_auth_apps_redaction(answer, redacted):
    seen = []
    only_with_model_links(seen.append)(Response(answer, mimetype="application/json"))
    assert bool(seen) is redacted


def test_the_gunicorn_hook_leaves_mlflows_views_alone_unless_the_store_is_the_fast_one(monkeypatch):
    """MLSTACK_FAST_STORE=false (or another MLflow version) builds MLflow's own store: no request-level path."""
    app = Flask("hook")
    app.add_url_rule("/log-batch", routes.LOG_BATCH_ENDPOINT, handlers._log_batch, methods=["POST"])
    app.add_url_rule("/search", routes.SEARCH_RUNS_ENDPOINT, handlers._search_runs, methods=["POST"])
    views = dict(app.view_functions)
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda: object())
    gunicorn_hooks.post_worker_init(SimpleNamespace(wsgi=app))
    assert app.view_functions == views

    monkeypatch.setattr(handlers, "_get_tracking_store", lambda: PostgresFastPathStore.__new__(PostgresFastPathStore))
    gunicorn_hooks.post_worker_init(SimpleNamespace(wsgi=app))
    assert app.view_functions[routes.LOG_BATCH_ENDPOINT] is not views[routes.LOG_BATCH_ENDPOINT]
    assert app.view_functions[routes.SEARCH_RUNS_ENDPOINT] is routes.search_runs


def test_every_mlflow_internal_the_plugin_names_is_there_on_the_pinned_mlflow():
    from mlstack_mlflow_store import compat

    assert compat.missing() == []
    for name in compat.INTERNALS:
        if compat.INTERNALS[name][0] != "mlflow.server.auth":
            assert getattr(compat, name) is not None


def test_the_request_level_paths_have_a_switch_of_their_own(monkeypatch):
    app = Flask("switch")
    app.add_url_rule("/log-batch", routes.LOG_BATCH_ENDPOINT, handlers._log_batch, methods=["POST"])
    views = dict(app.view_functions)
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda: PostgresFastPathStore.__new__(PostgresFastPathStore))
    monkeypatch.setenv("MLSTACK_FAST_ROUTES", "false")
    gunicorn_hooks.post_worker_init(SimpleNamespace(wsgi=app))
    assert app.view_functions == views
