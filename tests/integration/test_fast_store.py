"""The fast store (services/mlflow-server/store) held to MLflow's own store on the live backend store.

Each test does the same thing through both stores, each to a run of its own, and compares what
lands: the `Run` that get_run builds, the metric history and latest-metric rows, the tag rows, the
run's name, and the errors (code and message).
"""

from __future__ import annotations

import json
import logging
import math
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import mlflow.version
import pytest
from flask import Flask
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelInput,
    LoggedModelOutput,
    Metric,
    Param,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.server import handlers
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking._tracking_service.utils import _tracking_store_registry
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from mlstack_mlflow_store import routes
from mlstack_mlflow_store.store import PostgresFastPathStore

pytestmark = pytest.mark.integration

ARTIFACT_ROOT = "mlflow-artifacts:/"


@pytest.fixture(scope="module")
def uri(mlflow_stack) -> str:
    return mlflow_stack.settings.backend_store_uri()


@pytest.fixture(scope="module")
def upstream(uri):
    store = SqlAlchemyStore(uri, ARTIFACT_ROOT)
    yield store
    store.engine.dispose()


@pytest.fixture(scope="module")
def fast(uri):
    store = PostgresFastPathStore(uri, ARTIFACT_ROOT)
    yield store
    store.engine.dispose()


@pytest.fixture(scope="module")
def experiment_id(upstream) -> str:
    return upstream.create_experiment(f"fast-store-{uuid.uuid4().hex[:10]}", ARTIFACT_ROOT)


def new_run(store, experiment_id: str, name: str = "run") -> str:
    return store.create_run(experiment_id, "tester", 1_000, [RunTag("origin", "test")], name).info.run_id


def comparable(run) -> dict:
    """A run as plain data: NaN spelled out, unordered collections sorted, the run id left out."""
    data = run.to_dictionary()
    data["info"].pop("run_id")
    data["info"].pop("artifact_uri")
    data["data"]["metrics"] = sorted((m.key, repr(m.value), m.timestamp, m.step) for m in run.data._metric_objs)
    data["inputs"]["dataset_inputs"] = sorted(
        (d["dataset"]["name"], d["dataset"]["digest"], repr(d["dataset"]), sorted(map(repr, d.get("tags", []))))
        for d in data["inputs"]["dataset_inputs"]
    )
    data["inputs"]["model_inputs"] = sorted(repr(m) for m in data["inputs"]["model_inputs"])
    data["outputs"]["model_outputs"] = sorted(repr(m) for m in data["outputs"]["model_outputs"])
    return data


def rows(mlflow_stack, table: str, run_id: str) -> list[tuple]:
    columns = {
        "metrics": "key, value, timestamp, step, is_nan",
        "latest_metrics": "key, value, timestamp, step, is_nan",
        "tags": "key, value",
        "params": "key, value",
    }[table]
    with mlflow_stack.pg_connect() as connection:
        found = connection.execute(f"SELECT {columns} FROM {table} WHERE run_uuid = %s", (run_id,)).fetchall()
    return sorted(found)


def error_of(call) -> tuple[str, str]:
    with pytest.raises(MlflowException) as caught:
        call()
    return caught.value.error_code, caught.value.message


def furnish(store, experiment_id: str, run_id: str) -> None:
    """Everything runs/get returns: params, tags, metrics (NaN, ±inf, histories), datasets, models."""
    store.log_param(run_id, Param("lr", "0.001"))
    store.log_param(run_id, Param("layers", "4"))
    store.set_tag(run_id, RunTag("team", "vision"))
    store.log_batch(run_id, [Metric("loss", v, 1_000 + i, i) for i, v in enumerate((0.9, 0.5, 0.25))], [], [])
    for key, value in (("nan", math.nan), ("up", math.inf), ("down", -math.inf), ("tiny", 5e-324)):
        store.log_batch(run_id, [Metric(key, value, 2_000, 0)], [], [])
    dataset = Dataset("train", "d1g3st", "local", '{"uri": "/data/train"}', '{"cols": 3}', '{"rows": 10}')
    store.log_inputs(
        run_id,
        datasets=[
            DatasetInput(dataset, [InputTag("mlflow.data.context", "training"), InputTag("split", "a")]),
            DatasetInput(Dataset("eval", "e4l", "local", "{}"), []),
        ],
    )
    model = store.create_logged_model(experiment_id, name="net", source_run_id=run_id)
    store.log_inputs(run_id, models=[LoggedModelInput(model.model_id)])
    store.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=3)])


def test_get_run_returns_what_mlflows_store_returns(upstream, fast, experiment_id):
    run_id = new_run(upstream, experiment_id)
    furnish(upstream, experiment_id, run_id)

    expected = upstream.get_run(run_id)
    assert expected.inputs.dataset_inputs and expected.inputs.model_inputs and expected.outputs.model_outputs
    assert comparable(fast.get_run(run_id)) == comparable(expected)
    assert fast.get_run(run_id).to_proto().info == expected.to_proto().info


def test_get_run_of_a_bare_a_deleted_and_a_nameless_run(mlflow_stack, upstream, fast, experiment_id):
    bare = new_run(upstream, experiment_id)
    deleted = new_run(upstream, experiment_id)
    upstream.delete_run(deleted)
    nameless = new_run(upstream, experiment_id, name="from-tag")
    with mlflow_stack.pg_connect() as connection:  # runs from old MLflow versions carry the name in a tag only
        connection.execute("UPDATE runs SET name = NULL WHERE run_uuid = %s", (nameless,))

    for run_id in (bare, deleted, nameless):
        assert comparable(fast.get_run(run_id)) == comparable(upstream.get_run(run_id))
    assert fast.get_run(nameless).info.run_name == "from-tag"


def test_get_run_of_an_unknown_run_fails_as_mlflows_store_does(upstream, fast):
    missing = uuid.uuid4().hex
    assert error_of(lambda: fast.get_run(missing)) == error_of(lambda: upstream.get_run(missing))


def metric_sequence(seed: int) -> list[Metric]:
    """Points that exercise the latest-metric rule: steps out of order, equal steps with other
    timestamps or values, repeats of recorded points, NaN and infinities."""
    generator = random.Random(seed)
    values = [0.0, 1.0, -1.0, 2.5, math.nan, math.inf, -math.inf, 1e-300]
    points = [
        Metric(generator.choice("abc"), generator.choice(values), generator.randint(0, 3), generator.randint(0, 3))
        for _ in range(150)
    ]
    return points + generator.sample(points, 30)  # repeats: already recorded, left alone


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_log_metric_records_what_mlflows_store_records(mlflow_stack, upstream, fast, experiment_id, seed):
    upstream_run, fast_run = new_run(upstream, experiment_id), new_run(upstream, experiment_id)
    for metric in metric_sequence(seed):
        upstream.log_metric(upstream_run, metric)
        fast.log_metric(fast_run, metric)

    for table in ("metrics", "latest_metrics"):
        assert rows(mlflow_stack, table, fast_run) == rows(mlflow_stack, table, upstream_run), table
    assert comparable(fast.get_run(fast_run))["data"] == comparable(upstream.get_run(upstream_run))["data"]


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_log_batch_records_what_mlflows_store_records(mlflow_stack, upstream, fast, experiment_id, seed):
    """Batches hold repeats of their own points and of earlier batches', and ties on (step, timestamp,
    value) that differ in NaN-ness, where the first point of the batch must win."""
    upstream_run, fast_run = new_run(upstream, experiment_id), new_run(upstream, experiment_id)
    points = metric_sequence(seed)
    batches = [points[i : i + 40] for i in range(0, len(points), 40)] + [[], points[:5] + points[:5]]
    batches.append([Metric("tie", 0.0, 9, 9), Metric("tie", math.nan, 9, 9)])
    batches.append([Metric("tie2", math.nan, 9, 9), Metric("tie2", 0.0, 9, 9)])
    for batch in batches:
        upstream.log_batch(upstream_run, batch, [], [])
        fast.log_batch(fast_run, batch, [], [])

    for table in ("metrics", "latest_metrics"):
        assert rows(mlflow_stack, table, fast_run) == rows(mlflow_stack, table, upstream_run), table


def test_log_batch_with_params_and_tags_records_what_mlflows_store_records(mlflow_stack, upstream, fast, experiment_id):
    upstream_run, fast_run = new_run(upstream, experiment_id), new_run(upstream, experiment_id)
    for store, run_id in ((upstream, upstream_run), (fast, fast_run)):
        store.log_batch(run_id, [Metric("m", 1.0, 1, 0)], [Param("p", "1")], [RunTag(MLFLOW_RUN_NAME, "named")])

    for table in ("metrics", "latest_metrics", "tags"):
        assert rows(mlflow_stack, table, fast_run) == rows(mlflow_stack, table, upstream_run), table
    assert comparable(fast.get_run(fast_run))["data"] == comparable(upstream.get_run(upstream_run))["data"]


def test_concurrent_log_metric_keeps_the_latest_point_latest(mlflow_stack, fast, experiment_id):
    run_id = new_run(fast, experiment_id)
    points = [Metric("loss", float(i % 7), 1_000 + i % 11, i % 13) for i in range(240)]
    random.Random(4).shuffle(points)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda metric: fast.log_metric(run_id, metric), points))

    newest = max(points, key=lambda m: (m.step, m.timestamp, m.value))
    assert rows(mlflow_stack, "latest_metrics", run_id) == [
        ("loss", newest.value, newest.timestamp, newest.step, False)
    ]
    assert len(rows(mlflow_stack, "metrics", run_id)) == len({(m.value, m.timestamp, m.step) for m in points})


def test_set_tag_records_what_mlflows_store_records(mlflow_stack, upstream, fast, experiment_id):
    upstream_run, fast_run = new_run(upstream, experiment_id), new_run(upstream, experiment_id)
    tags = [
        RunTag("stage", "train"),
        RunTag("stage", "eval"),  # overwrite
        RunTag("note", "x" * 9_000),  # longer than MLflow keeps: truncated alike
        RunTag("empty", ""),
        RunTag(MLFLOW_RUN_NAME, "renamed"),  # also renames the run
    ]
    for tag in tags:
        upstream.set_tag(upstream_run, tag)
        fast.set_tag(fast_run, tag)

    assert rows(mlflow_stack, "tags", fast_run) == rows(mlflow_stack, "tags", upstream_run)
    assert fast.get_run(fast_run).info.run_name == upstream.get_run(upstream_run).info.run_name == "renamed"


@pytest.mark.parametrize(
    "write",
    [
        lambda store, run_id: store.log_metric(run_id, Metric("m", 1.0, 1, 0)),
        lambda store, run_id: store.set_tag(run_id, RunTag("k", "v")),
        lambda store, run_id: store.log_batch(run_id, [Metric("m", 1.0, 1, 0)], [], []),
        lambda store, run_id: store.log_batch(run_id, [], [], []),
    ],
    ids=["log_metric", "set_tag", "log_batch", "empty_log_batch"],
)
def test_writes_to_missing_or_deleted_runs_fail_as_mlflows_store_does(
    mlflow_stack, upstream, fast, experiment_id, write
):
    missing = uuid.uuid4().hex
    assert error_of(lambda: write(fast, missing)) == error_of(lambda: write(upstream, missing))

    deleted = new_run(upstream, experiment_id)
    upstream.delete_run(deleted)
    assert error_of(lambda: write(fast, deleted)) == error_of(lambda: write(upstream, deleted))
    assert rows(mlflow_stack, "metrics", deleted) == []
    assert rows(mlflow_stack, "tags", deleted) == [("mlflow.runName", "run"), ("origin", "test")]


@pytest.mark.parametrize(
    "write",
    [
        lambda store, run_id: store.log_metric(run_id, Metric("bad/../key", 1.0, 1, 0)),
        lambda store, run_id: store.log_metric(run_id, Metric("m", "not a number", 1, 0)),
        lambda store, run_id: store.log_metric(run_id, Metric("m", 1.0, "noon", 0)),
        lambda store, run_id: store.set_tag(run_id, RunTag("k" * 251, "v")),
        lambda store, run_id: store.set_tag(run_id, RunTag("bad/../key", "v")),
        lambda store, run_id: store.log_batch(run_id, [Metric("m", 1.0, 1, 0), Metric("m", None, 1, 1)], [], []),
        lambda store, run_id: store.log_batch(run_id, [Metric("m", 1.0, 1, step) for step in range(1001)], [], []),
        lambda store, run_id: store.log_batch("../etc", [Metric("m", 1.0, 1, 0)], [], []),
    ],
    ids=[
        "metric-key",
        "metric-value",
        "metric-timestamp",
        "tag-key-length",
        "tag-key",
        "batch-metric-value",
        "batch-size",
        "batch-run-id",
    ],
)
def test_bad_input_fails_as_mlflows_store_does_and_writes_nothing(mlflow_stack, upstream, fast, experiment_id, write):
    run_id = new_run(upstream, experiment_id)
    assert error_of(lambda: write(fast, run_id)) == error_of(lambda: write(upstream, run_id))
    assert rows(mlflow_stack, "metrics", run_id) == []
    assert rows(mlflow_stack, "tags", run_id) == [("mlflow.runName", "run"), ("origin", "test")]


def test_mlflow_builds_the_fast_store_only_when_asked(uri, monkeypatch):
    """The plugin answers for `postgresql` URIs through MLflow's own registry, and stays out of the
    way unless MLSTACK_FAST_STORE is on, MLflow is the verified version and workspaces are off."""
    stores = []

    def build() -> type:
        store = _tracking_store_registry.get_store_builder(uri)(store_uri=uri, artifact_uri=ARTIFACT_ROOT)
        stores.append(store)
        return type(store)

    monkeypatch.delenv("MLSTACK_FAST_STORE", raising=False)
    assert build() is SqlAlchemyStore
    monkeypatch.setenv("MLSTACK_FAST_STORE", "true")
    assert build() is PostgresFastPathStore
    monkeypatch.setattr(mlflow.version, "VERSION", "3.18.0")
    assert build() is SqlAlchemyStore
    monkeypatch.undo()
    monkeypatch.setenv("MLSTACK_FAST_STORE", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert build() is not PostgresFastPathStore
    for store in stores:
        store.engine.dispose()


# -- the request-level log-batch path (routes.py): MLflow's handler on MLflow's store, and the same
# handler with the fast route installed, answer the same request bodies, each on a run of its own.

LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"
SEARCH = "/ajax-api/2.0/mlflow/runs/search"
UNKNOWN_RUN = uuid.uuid4().hex


@pytest.fixture(scope="module")
def log_batch_apps(upstream, fast):
    """Test clients of two Flask apps serving MLflow's log-batch handler (its store: MLflow's), the
    second with the fast route installed; `taken` counts the requests the fast route wrote itself."""
    apps = {name: Flask(name) for name in ("mlflow", "fast")}
    for app in apps.values():
        app.add_url_rule(LOG_BATCH, routes.LOG_BATCH_ENDPOINT, handlers._log_batch, methods=["POST"])
        app.add_url_rule(SEARCH, routes.SEARCH_RUNS_ENDPOINT, handlers._search_runs, methods=["POST"])
    taken = []

    class CountingStore:
        def log_metric_columns(self, *columns):
            fast.log_metric_columns(*columns)
            taken.append(columns[0])

    routes.install(apps["fast"], CountingStore())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: upstream)
        yield SimpleNamespace(mlflow=apps["mlflow"].test_client(), fast=apps["fast"].test_client(), taken=taken)


def post_both(apps, mlflow_stack, upstream_run, fast_run, make_body, content_type="application/json") -> list:
    """POST make_body(run) to each app; assert the same status, body (run ids aligned) and rows."""
    answers = []
    for client, run_id in ((apps.mlflow, upstream_run), (apps.fast, fast_run)):
        response = client.post(LOG_BATCH, data=json.dumps(make_body(run_id)), content_type=content_type)
        answers.append(
            (response.status_code, response.mimetype, response.get_data(as_text=True).replace(run_id, "RUN"))
        )
    assert answers[1] == answers[0]
    for table in ("metrics", "latest_metrics", "params"):
        assert rows(mlflow_stack, table, fast_run) == rows(mlflow_stack, table, upstream_run), table
    return answers[0]


def as_json(metric: Metric) -> dict:
    value = (
        metric.value
        if math.isfinite(metric.value)
        else {math.inf: "Infinity", -math.inf: "-Infinity"}.get(metric.value, "NaN")
    )
    return {"key": metric.key, "value": value, "timestamp": metric.timestamp, "step": metric.step}


@pytest.mark.parametrize("seed", [8, 9])
def test_log_batch_requests_record_what_mlflows_handler_records(
    mlflow_stack, upstream, experiment_id, log_batch_apps, seed
):
    upstream_run, fast_run = new_run(upstream, experiment_id), new_run(upstream, experiment_id)
    points = [as_json(metric) for metric in metric_sequence(seed)]
    del points[0]["step"]  # a missing step is 0
    points[1]["value"] = 7  # an integer value is a double
    batches = [points[i : i + 60] for i in range(0, len(points), 60)] + [points[:5] + points[:5]]
    taken_before = len(log_batch_apps.taken)
    for batch in batches:
        assert (
            post_both(
                log_batch_apps,
                mlflow_stack,
                upstream_run,
                fast_run,
                lambda run, batch=batch: {"run_id": run, "metrics": batch},
            )[0]
            == 200
        )
    assert len(log_batch_apps.taken) - taken_before == len(batches)  # every one of them by the fast route


@pytest.mark.parametrize(
    "make_body",
    [
        lambda run: {"run_id": run, "metrics": [{"key": "bad/../key", "value": 1, "timestamp": 1}]},
        lambda run: {"run_id": run, "metrics": [{"key": "m", "value": 1, "timestamp": -1}]},
        lambda run: {"run_id": run, "metrics": [{"key": "m", "value": "high", "timestamp": 1}]},
        lambda run: {"run_id": run, "metrics": [{"key": "m", "timestamp": 1}]},
        lambda run: {
            "run_id": run,
            "metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": s} for s in range(1001)],
        },
        lambda run: {"run_id": run, "metrics": [{"key": "m", "value": 1, "timestamp": "12", "step": "3"}]},
        lambda run: {
            "run_id": run,
            "metrics": [{"key": "m", "value": 1, "timestamp": 1}],
            "params": [{"key": "p", "value": "v"}],
        },
        lambda run: {"run_id": UNKNOWN_RUN, "metrics": [{"key": "m", "value": 1, "timestamp": 1}]},
        lambda run: {"metrics": [{"key": "m", "value": 1, "timestamp": 1}]},
    ],
    ids=[
        "bad-key",
        "negative-timestamp",
        "string-value",
        "no-value",
        "1001-points",
        "string-int64s",
        "with-params",
        "unknown-run",
        "no-run-id",
    ],
)
def test_other_log_batch_requests_get_mlflows_answer(mlflow_stack, upstream, experiment_id, log_batch_apps, make_body):
    upstream_run, fast_run = new_run(upstream, experiment_id), new_run(upstream, experiment_id)
    post_both(log_batch_apps, mlflow_stack, upstream_run, fast_run, make_body)


def test_log_batch_to_a_deleted_run_or_as_text_gets_mlflows_answer(
    mlflow_stack, upstream, experiment_id, log_batch_apps
):
    upstream_run, fast_run = new_run(upstream, experiment_id), new_run(upstream, experiment_id)
    batch = [{"key": "m", "value": 1, "timestamp": 1}]
    status, _, _ = post_both(
        log_batch_apps,
        mlflow_stack,
        upstream_run,
        fast_run,
        lambda run: {"run_id": run, "metrics": batch},
        "text/plain",
    )
    assert status == 400
    upstream.delete_run(upstream_run)
    upstream.delete_run(fast_run)
    status, _, answer = post_both(
        log_batch_apps, mlflow_stack, upstream_run, fast_run, lambda run: {"run_id": run, "metrics": batch}
    )
    assert status == 400 and "must be in the 'active' state" in answer


# -- search-runs answered through protojson (routes.py): the same JSON value as MLflow's handler,
# for the requests the client and the UI send, their pages, and bad requests.


@pytest.fixture(scope="module")
def search_apps(upstream):
    """Test clients of MLflow's search-runs handler and of the plugin's, both on MLflow's store."""
    apps = {name: Flask(name) for name in ("mlflow", "fast")}
    for app in apps.values():
        app.add_url_rule(LOG_BATCH, routes.LOG_BATCH_ENDPOINT, handlers._log_batch, methods=["POST"])
        app.add_url_rule(SEARCH, routes.SEARCH_RUNS_ENDPOINT, handlers._search_runs, methods=["POST"])
    routes.install(apps["fast"], upstream)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: upstream)
        yield apps["mlflow"].test_client(), apps["fast"].test_client()


@pytest.fixture(scope="module")
def searched_experiment(upstream, fast) -> str:
    """Runs with NaN and infinite metrics, params, tags, datasets, a logged model, one deleted."""
    experiment_id = upstream.create_experiment(f"fast-search-{uuid.uuid4().hex[:10]}", ARTIFACT_ROOT)
    for index in range(12):
        run_id = new_run(upstream, experiment_id, name=f"run-{index % 5}")
        upstream.log_batch(
            run_id,
            [Metric("rmse", (math.nan, math.inf, -math.inf, 1.5, float(index))[index % 5], 1_000 + index, index)],
            [Param("alpha", str(index % 3))],
            [RunTag("team", ("a", "b")[index % 2])],
        )
        if index == 3:
            furnish(upstream, experiment_id, run_id)
        if index == 7:
            upstream.delete_run(run_id)
    return experiment_id


@pytest.mark.parametrize(
    "request_body",
    [
        {},
        {"max_results": 5},
        {"max_results": 100, "order_by": ["attributes.start_time DESC"], "run_view_type": "ACTIVE_ONLY"},
        {"order_by": ["metrics.rmse ASC", "params.alpha DESC"], "max_results": 4},
        {"filter": "metrics.rmse > 1 and tags.team = 'a'", "run_view_type": "ALL"},
        {"filter": "attributes.run_name ILIKE 'run-1%'", "run_view_type": "DELETED_ONLY"},
        {"max_results": 50001},
        {"order_by": "metrics.rmse"},
        {"filter": "metrics.rmse >>> 1"},
        {"page_token": "not-a-token"},
    ],
)
def test_search_runs_answers_mlflows_json(search_apps, searched_experiment, request_body):
    mlflow_client, fast_client = search_apps
    body = {"experiment_ids": [searched_experiment], **request_body}
    while True:
        expected, answer = mlflow_client.post(SEARCH, json=body), fast_client.post(SEARCH, json=body)
        assert (answer.status_code, answer.mimetype) == (expected.status_code, expected.mimetype)
        assert answer.get_json() == expected.get_json()
        if expected.status_code == 200 and expected.get_json():  # encoded by protojson (compact), not indented
            assert b"\n" not in answer.get_data() and b"\n" in expected.get_data()
        token = expected.get_json().get("next_page_token")
        if not token:
            break
        body = {**body, "page_token": token}


def test_concurrent_writers_of_the_same_points_never_deadlock(mlflow_stack, fast, experiment_id, caplog):
    """8 writers log overlapping batches of one run's keys, each in its own order: the statement takes
    its row locks in one order, so no deadlock is detected (MLflow retries one, but logs its traceback)."""
    run_id = new_run(fast, experiment_id)
    points = [Metric(f"k{i % 20}", float(i % 5), 1_000 + i % 9, i % 11) for i in range(600)]

    def writer(seed: int) -> None:
        for round_ in range(6):
            batch = random.Random(seed * 100 + round_).sample(points, 300)
            fast.log_batch(run_id, batch, [], [])

    caplog.set_level(logging.ERROR, logger="mlflow.store.db.utils")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    deadlocks = [record for record in caplog.records if "deadlock" in record.getMessage().lower()]
    assert deadlocks == [], f"{len(deadlocks)} deadlocks detected (and retried)"
    assert len(rows(mlflow_stack, "metrics", run_id)) == len({(m.key, m.value, m.timestamp, m.step) for m in points})


def test_a_missing_mlflow_internal_gives_mlflows_own_store_and_says_which(uri, monkeypatch, caplog):
    """An MLflow release that renamed an internal the fast paths use (compat's self-check) runs on
    MLflow's own store, and the server log names what is missing, instead of failing requests."""
    from mlflow.utils import validation
    from mlstack_mlflow_store import compat

    monkeypatch.setenv("MLSTACK_FAST_STORE", "true")
    monkeypatch.delattr(validation, "_validate_tag")
    compat.usable.cache_clear()
    caplog.set_level(logging.WARNING, logger="mlflow.mlstack_mlflow_store.compat")
    try:
        store = _tracking_store_registry.get_store_builder(uri)(store_uri=uri, artifact_uri=ARTIFACT_ROOT)
    finally:
        compat.usable.cache_clear()
    assert type(store) is SqlAlchemyStore
    store.engine.dispose()
    assert any("mlflow.utils.validation._validate_tag" in record.getMessage() for record in caplog.records)
