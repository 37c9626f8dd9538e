"""search_runs and compare_runs against the live stack give what mlflow.search_runs gives, page after
page (pages of 3 runs here), for filters, orders, views, several experiments and caps."""

from __future__ import annotations

import math
import time
import uuid

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

from mlstack.tracking import ExperimentNotFoundError, TrackingInputError, compare_runs, search_runs
from mlstack.tracking.mlflow import queries
from tests.unit.tracking.test_run_columns import assert_same_frame

pytestmark = pytest.mark.integration

ODD_TAGS = {
    "odd key-with:chars/and spaces": "quote ' and \" and a\nnewline",
    "ключ": "значение ✓",
    "nested.key.path": '{"json": [1, 2]}',
    "empty": "",
}


@pytest.fixture(scope="module")
def two_experiments(tracking_uri) -> tuple[str, str]:
    """Experiment A: runs with every metric, param and tag, some with gaps, NaN and infinities, one
    running, one failed, one deleted, and seven `bulk-<i>`; experiment B: two runs with keys of their own."""
    client = MlflowClient(tracking_uri)
    names = [f"search-frames-{uuid.uuid4().hex[:8]}", f"search-frames-{uuid.uuid4().hex[:8]}"]
    ids = {name: client.create_experiment(name) for name in names}

    def run(experiment, name, metrics=(), params=(), tags=(), status="FINISHED"):
        run_id = client.create_run(ids[experiment], run_name=name).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            [Metric(key, value, now, 0) for key, value in metrics],
            [Param(key, value) for key, value in params],
            [RunTag(key, value) for key, value in tags],
        )
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        return run_id

    first, second = names
    run(
        first,
        "full",
        [("rmse", 0.5), ("r2", 0.9), ("loss/val", 1e-320)],
        [("alpha", "0.1"), ("model", "ridge"), ("nested.key", "x")],
        [("stage", "hpo"), *ODD_TAGS.items()],
    )
    run(first, "gaps", [("rmse", math.nan)], tags=[("stage", "sweep")])
    run(first, "infinite", [("r2", math.inf), ("rmse", -math.inf)], [("alpha", "")])
    run(first, "running", [("rmse", 2.0)], status="RUNNING")
    run(first, "failed", [("rmse", 9.0)], [("model", "gbm")], status="FAILED")
    client.delete_run(run(first, "deleted", [("rmse", 0.1)], [("alpha", "0.5")], [("stage", "hpo")]))
    for index in range(7):
        run(first, f"bulk-{index}", [("rmse", float(index))], [("alpha", str(index % 3))], [("stage", "bulk")])
    run(second, "other-1", [("accuracy", 0.8)], [("depth", "3")], [("team", "vision")])
    run(second, "other-2", [("rmse", 1.5)], [("depth", "4")])
    return first, second


@pytest.fixture(autouse=True)
def pages_of_three(monkeypatch):
    monkeypatch.setattr(queries, "SERVER_PAGE_LIMIT", 3)


QUERIES = [
    pytest.param({}, id="everything"),
    pytest.param({"run_view_type": ViewType.ALL}, id="deleted-included"),
    pytest.param({"run_view_type": ViewType.DELETED_ONLY}, id="deleted-only"),
    pytest.param({"filter_string": "metrics.rmse < 3", "order_by": ["metrics.rmse DESC"]}, id="filter-order"),
    pytest.param({"filter_string": "tags.stage = 'hpo' and params.alpha = '0.1'"}, id="tags-and-params"),
    pytest.param({"filter_string": "attributes.status != 'FINISHED'"}, id="unfinished"),
    pytest.param({"order_by": ["params.alpha ASC", "attributes.run_name DESC"], "max_results": 5}, id="capped"),
    pytest.param({"order_by": ["attributes.start_time ASC"], "max_results": 3}, id="one-page"),
    pytest.param({"filter_string": "params.model = 'nothing'"}, id="no-match"),
]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("both", [False, True], ids=["one-experiment", "two-experiments"])
def test_search_runs_gives_mlflows_frame(two_experiments, query, both):
    names = list(two_experiments) if both else two_experiments[:1]
    expected = mlflow.search_runs(experiment_names=names, **query)
    frame = search_runs(names, **query)
    assert_same_frame(frame, expected)
    if query in ({}, {"run_view_type": ViewType.ALL}):
        assert len(frame) > 3 * 3, "several pages were read"


def test_compare_runs_holds_mlflows_values_in_its_own_layout(two_experiments):
    experiment, _ = two_experiments
    expected = mlflow.search_runs(experiment_names=[experiment])
    frame = compare_runs(experiment)
    assert list(frame.columns[:7]) == [
        *["run_id", "run_name", "experiment_id", "status", "start_time", "end_time", "artifact_uri"]
    ]
    assert frame["run_name"].tolist() == expected["tags.mlflow.runName"].tolist()
    for column in ("run_id", "experiment_id", "status", "start_time", "end_time", "artifact_uri"):
        assert frame[column].equals(expected[column]), column
    for key in ("rmse", "r2", "loss/val"):
        assert frame[f"metric_{key}"].equals(expected[f"metrics.{key}"]), key
    for key in ("alpha", "model", "nested.key"):
        assert frame[f"param_{key}"].equals(expected[f"params.{key}"]), key


def test_compare_runs_ranks_the_top_n_by_a_metric_it_adds_to_the_columns(two_experiments):
    experiment, _ = two_experiments
    frame = compare_runs(experiment, metrics=["r2", "absent"], sort_by="rmse", mode="max", top_n=5)
    assert list(frame.columns) == [
        *["run_id", "run_name", "experiment_id", "status", "start_time", "end_time", "artifact_uri"],
        *["metric_r2", "metric_absent", "metric_rmse", "param_model", "param_alpha"],
    ]
    assert frame["run_name"].tolist() == ["failed", "bulk-6", "bulk-5", "bulk-4", "bulk-3"]
    assert frame["metric_rmse"].tolist() == [9.0, 6.0, 5.0, 4.0, 3.0]
    assert frame["metric_absent"].isna().all() and frame["metric_absent"].dtype == "float64"


def test_bad_searches_raise_the_librarys_errors(two_experiments):
    experiment, _ = two_experiments
    with pytest.raises(ExperimentNotFoundError, match="no-such-experiment"):
        search_runs([experiment, "no-such-experiment"])
    with pytest.raises(TrackingInputError, match="refused the search"):
        search_runs(experiment, filter_string="metrics.rmse >>> 1")
    with pytest.raises(TrackingInputError, match="refused the search"):
        compare_runs(experiment, sort_by="rmse", filter_string="nonsense = ")
    with pytest.raises(TrackingInputError, match="refused the search"):
        search_runs(experiment, order_by=["metrics.rmse SIDEWAYS"])


def test_the_odd_tags_come_back_as_they_were_logged(two_experiments):
    experiment, _ = two_experiments
    full = search_runs(experiment, filter_string="attributes.run_name = 'full'")
    assert {key: full[f"tags.{key}"].item() for key in ODD_TAGS} == ODD_TAGS
    assert full["metrics.loss/val"].item() == 1e-320
