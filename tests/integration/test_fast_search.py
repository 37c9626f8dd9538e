"""search-runs of the fast store (services/mlflow-server/store search.py) held to MLflow's own store
on the live backend store: seeded random runs, random filters, orders, views and page sizes, every
page walked with its token; the same runs in the same order, the same tokens, the same errors."""

from __future__ import annotations

import math
import random
import uuid

import mlflow.version
import pytest
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlstack_mlflow_store.store import PostgresFastPathStore
from packaging.version import Version

from tests.integration.test_fast_store import comparable

pytestmark = pytest.mark.integration

ARTIFACT_ROOT = "mlflow-artifacts:/"
VALUES = [0.0, 1.0, 1.0, 2.5, -3.0, math.nan, math.inf, -math.inf]
FILTERS = [
    "",
    "metrics.rmse > 1",
    "metrics.rmse <= 1",
    "metrics.rmse = 1",
    "metrics.r2 != 2.5",
    "params.alpha = '0.1'",
    "params.alpha != '0.1'",
    "params.model LIKE 'ri%'",
    "params.model ILIKE '%GB%'",
    "tags.team = 'vision'",
    "tags.team LIKE 'v%'",
    "tags.team IS NULL",
    "tags.team IS NOT NULL",
    "attributes.status = 'FINISHED'",
    "attributes.status != 'FAILED'",
    "attributes.run_name ILIKE '%run-1%'",
    "attributes.start_time > 1000050",
    "dataset.name = 'train'",
    "metrics.rmse > 0 and params.model = 'ridge'",
    "tags.team = 'nlp' and attributes.start_time <= 1000100",
]
#: MLflow 3.16's store cannot filter runs on a number attribute on PostgreSQL: it binds the number as
#: text (`runs.start_time > '1000050'::VARCHAR`), which PostgreSQL refuses ("operator does not exist:
#: bigint > character varying"), so it answers such a search with an error, not runs (3.17 binds a
#: number). There, the fast store must refuse such a search as MLflow's does (the same error code).
NUMBER_ATTRIBUTE_FILTERS_WORK = Version(mlflow.version.VERSION).release[:2] >= (3, 17)
ORDERS = [
    [],
    ["attributes.start_time DESC"],
    ["attributes.start_time ASC"],
    ["metrics.rmse ASC"],
    ["metrics.rmse DESC"],
    ["metrics.r2 DESC", "params.alpha ASC"],
    ["params.model DESC"],
    ["tags.team ASC"],
    ["attributes.run_name ASC"],
    ["attributes.end_time DESC", "metrics.rmse ASC"],
]


@pytest.fixture(scope="module")
def stores(mlflow_stack):
    uri = mlflow_stack.settings.backend_store_uri()
    upstream, fast = SqlAlchemyStore(uri, ARTIFACT_ROOT), PostgresFastPathStore(uri, ARTIFACT_ROOT)
    yield upstream, fast
    upstream.engine.dispose()
    fast.engine.dispose()


@pytest.fixture(scope="module")
def experiment_id(mlflow_stack, stores) -> str:
    """200 runs: start times with ties, metrics with NaN, infinities, ties and gaps, params and tags
    with gaps, repeated run names, some deleted, some failed, two whose name lives in the tag only,
    a few with dataset inputs."""
    upstream, _ = stores
    generator = random.Random(15)
    experiment_id = upstream.create_experiment(f"fast-search-{uuid.uuid4().hex[:10]}", ARTIFACT_ROOT)
    nameless = []
    for index in range(200):
        start = 1_000_000 + generator.randint(0, 150)
        run_id = upstream.create_run(experiment_id, "tester", start, [], f"run-{generator.randint(0, 30)}").info.run_id
        metrics = [
            Metric(key, generator.choice(VALUES), start, 0) for key in ("rmse", "r2") if generator.random() < 0.8
        ]
        params = [
            Param(key, generator.choice(values))
            for key, values in (("alpha", ["0.1", "1", "10"]), ("model", ["ridge", "gbm", "GBM"]))
            if generator.random() < 0.8
        ]
        tags = [RunTag("team", generator.choice(["vision", "nlp"]))] if generator.random() < 0.7 else []
        upstream.log_batch(run_id, metrics, params, tags)
        if generator.random() < 0.5:
            upstream.update_run_info(
                run_id, RunStatus.from_string(generator.choice(["FINISHED", "FAILED"])), start + 10, None
            )
        if index % 40 == 0:
            upstream.log_inputs(
                run_id,
                datasets=[
                    DatasetInput(
                        Dataset("train", f"d{index}", "local", "{}"), [InputTag("mlflow.data.context", "training")]
                    )
                ],
            )
        if index % 17 == 0:
            upstream.delete_run(run_id)
        if index in (5, 6):
            nameless.append(run_id)
    with mlflow_stack.pg_connect() as connection:
        for run_id in nameless:
            connection.execute("UPDATE runs SET name = NULL WHERE run_uuid = %s", (run_id,))
    return experiment_id


def walk(store, experiment_id, filter_string, view, order_by, page_size) -> list:
    """Every page of the search, as (comparable runs, next page token)."""
    pages, token = [], None
    while True:
        page = store.search_runs([experiment_id], filter_string, view, page_size, order_by, token)
        pages.append(([(run.info.run_id, comparable(run)) for run in page], page.token))
        token = page.token
        if not token:
            return pages


@pytest.mark.parametrize("seed", range(6))
def test_random_searches_return_what_mlflows_store_returns(stores, experiment_id, seed):
    upstream, fast = stores
    generator = random.Random(seed)
    for _ in range(12):
        query = (
            generator.choice(FILTERS),
            generator.choice([ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL]),
            generator.choice(ORDERS),
            generator.choice([1, 7, 50, 1000]),
        )
        if "attributes.start_time" in query[0] and not NUMBER_ATTRIBUTE_FILTERS_WORK:
            with pytest.raises(MlflowException) as refused:
                walk(upstream, experiment_id, *query)
            with pytest.raises(MlflowException) as also_refused:
                walk(fast, experiment_id, *query)
            assert also_refused.value.error_code == refused.value.error_code, query
            continue
        expected = walk(upstream, experiment_id, *query)
        assert walk(fast, experiment_id, *query) == expected, query


def test_the_ui_first_page_and_a_metric_ordered_page_match(stores, experiment_id):
    upstream, fast = stores
    for query in (
        ("", ViewType.ACTIVE_ONLY, ["attributes.start_time DESC"], 100),
        ("metrics.rmse < 5", ViewType.ALL, ["metrics.rmse ASC"], 100),
    ):
        assert walk(fast, experiment_id, *query) == walk(upstream, experiment_id, *query)


@pytest.mark.parametrize(
    ("filter_string", "order_by", "max_results", "page_token"),
    [
        ("metrics.rmse >>> 1", None, 10, None),
        ("", ["metrics.rmse SIDEWAYS"], 10, None),
        ("", ["metrics.rmse", "metrics.rmse"], 10, None),
        ("", None, 50_001, None),
        ("", None, 10, "not-a-token"),
    ],
)
def test_bad_searches_fail_as_mlflows_store_does(
    stores, experiment_id, filter_string, order_by, max_results, page_token
):
    upstream, fast = stores

    def error_of(store):
        with pytest.raises(MlflowException) as caught:
            store.search_runs([experiment_id], filter_string, ViewType.ALL, max_results, order_by, page_token)
        return caught.value.error_code, caught.value.message

    assert error_of(fast) == error_of(upstream)


def test_the_fast_store_builds_no_orm_run_objects(stores, experiment_id, monkeypatch):
    _, fast = stores

    def refuse():
        raise AssertionError("MLflow's ORM loading was used")

    monkeypatch.setattr(SqlAlchemyStore, "_get_eager_run_query_options", staticmethod(refuse))
    assert len(fast.search_runs([experiment_id], "", ViewType.ALL, 1000)) == 200
