"""The columns of a search-runs answer give the DataFrame mlflow.search_runs builds from the same answer
(parsed as MLflow's REST client parses it), and compare_runs' layout; on a local store the same frames."""

from __future__ import annotations

import math
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, ViewType
from mlflow.protos.service_pb2 import SearchRuns
from mlflow.tracking import fluent
from mlflow.utils.proto_json_utils import parse_dict

from mlstack.tracking import ExperimentNotFoundError, TrackingInputError, compare_runs, search_runs, setup_mlflow
from mlstack.tracking.mlflow import queries
from mlstack.tracking.mlflow.run_columns import RunColumns, compare_frame, search_frame

INFO_COLUMNS = ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"]


def assert_same_frame(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    """`frame` is mlflow.search_runs' `expected`: the same columns, dtypes and values, in the same
    order up to the keys a run brings in together (mlflow orders those as a Python set does)."""

    def groups(columns) -> list[str]:
        return [column.split(".")[0] if column not in INFO_COLUMNS else column for column in columns]

    assert groups(frame.columns) == groups(expected.columns)
    assert sorted(frame.columns) == sorted(expected.columns)
    pd.testing.assert_frame_equal(frame, expected[list(frame.columns)])


def mlflows_frame(answer: dict, monkeypatch) -> pd.DataFrame:
    """The DataFrame mlflow.search_runs makes of `answer`, read as MLflow's REST store reads it."""
    response = SearchRuns.Response()
    parse_dict(answer, response)
    runs = [Run.from_proto(run) for run in response.runs]
    monkeypatch.setattr(fluent, "get_results_from_paginated_fn", lambda *args: runs)
    return mlflow.search_runs(experiment_ids=["0"])


def run(number: int, metrics=(), params=(), tags=(), **info) -> dict:
    info = {"run_id": f"{number:032x}", "experiment_id": "7", "status": "FINISHED", "start_time": 1000 + number} | info
    data = {"metrics": [{"key": key, "value": value} for key, value in metrics]}
    data |= {"params": [{"key": key, "value": value} for key, value in params]} if params else {}
    data |= {"tags": [{"key": key, "value": value} for key, value in tags]} if tags else {}
    return {"info": info, "data": data}


ANSWERS = {
    "gaps and every spelling of a metric": [
        run(1, [("rmse", 0.5), ("r2", 2)], [("alpha", "0.1")], [("team", "vision")], end_time=2000),
        run(2, [("r2", "NaN")], tags=[("stage", "hpo")], end_time=2001, artifact_uri="mlflow-artifacts:/2"),
        run(3, [("rmse", "Infinity"), ("loss", "-Infinity"), ("tiny", 5e-324)], [("alpha", ""), ("model", "gbm")]),
        {"info": {"run_id": "4", "experiment_id": "8", "status": "KILLED", "start_time": 5, "end_time": 9}},
    ],
    "odd keys and values": [
        run(
            1,
            [("a.b.c", 1.0), ("loss/val", 2.0), ("with space", 3.0)],
            [("nested.key", "{'json': [1]}"), ("ключ", "значение")],
            [("mlflow.runName", "quote ' \" \n newline"), ("emoji ✓", ""), ("empty", "")],
            end_time=3000,
        ),
        run(2, [("with space", 4.0)], [("ключ", "другое")], [("mlflow.runName", "second")]),
    ],
    "times: int64 as strings, a run not ended, end_time 0": [
        run(1, start_time="1700000000123", end_time="1700000000999"),
        run(2, end_time=0),
        run(3),
    ],
    "no run ended": [run(1, [("m", 1.0)]), run(2, [("m", 2.0)], status="RUNNING")],
    "a field left out: its protobuf default": [
        {"info": {"run_id": "1"}, "data": {"params": [{"key": "p"}], "tags": [{"key": "t"}]}},
        {"info": {"run_id": "2", "start_time": 3}},
    ],
    "no runs": [],
}


@pytest.mark.parametrize("runs", ANSWERS.values(), ids=ANSWERS.keys())
def test_the_frame_is_mlflows_frame_of_the_same_answer(runs, monkeypatch):
    answer = {"runs": runs} if runs else {}
    assert_same_frame(search_frame(RunColumns(runs)), mlflows_frame(answer, monkeypatch))


def test_keys_keep_the_order_they_first_appear_in():
    runs = [run(1, [("b", 1.0), ("a", 2.0)], [("y", "1")], [("t2", "x")]), run(2, [("c", 3.0), ("a", 4.0)])]
    assert list(search_frame(RunColumns(runs)).columns) == [
        *INFO_COLUMNS,
        *["metrics.b", "metrics.a", "metrics.c", "params.y", "tags.t2"],
    ]


def test_compare_layout_with_all_metrics_and_with_chosen_ones():
    runs = ANSWERS["gaps and every spelling of a metric"]
    frame = compare_frame(RunColumns(runs))
    assert list(frame.columns) == [
        *["run_id", "run_name", "experiment_id", "status", "start_time", "end_time", "artifact_uri"],
        *["metric_rmse", "metric_r2", "metric_loss", "metric_tiny", "param_alpha", "param_model"],
    ]
    np.testing.assert_array_equal(frame["metric_rmse"], [0.5, np.nan, np.inf, np.nan])
    assert str(frame["start_time"].dtype) == str(frame["end_time"].dtype) == "datetime64[us, UTC]"
    chosen = compare_frame(RunColumns(runs), ["r2", "absent"])
    assert [column for column in chosen.columns if column.startswith("metric_")] == ["metric_r2", "metric_absent"]
    assert chosen["metric_absent"].dtype == np.float64 and chosen["metric_absent"].isna().all()
    assert list(compare_frame(RunColumns([])).columns)[:2] == ["run_id", "run_name"]


@pytest.fixture
def local_experiment(local_settings, monkeypatch) -> str:
    """A new experiment of the local store (no server) with runs that have gaps, NaN and a deleted one;
    the library reads it in pages of 2."""
    name = f"columns-{uuid.uuid4().hex[:8]}"
    setup_mlflow(name, settings=local_settings)
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(name).experiment_id
    for index in range(5):
        run_id = client.create_run(experiment_id, run_name=f"run-{index}").info.run_id
        metrics = [Metric("rmse", [1.0, math.nan, 3.0, math.inf, 0.5][index], 1, 0)]
        params = [Param("alpha", str(index))] if index % 2 else []
        client.log_batch(run_id, metrics + ([Metric("r2", 0.1, 1, 0)] if index == 4 else []), params, [])
        client.set_tag(run_id, "odd key/ü", f"value '{index}'")
        if index < 3:
            client.set_terminated(run_id)
        if index == 2:
            client.delete_run(run_id)
    monkeypatch.setattr(queries, "SERVER_PAGE_LIMIT", 2)
    return name


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"run_view_type": ViewType.ALL, "order_by": ["metrics.rmse DESC"]},
        {"filter_string": "params.alpha = '3'"},
        {"max_results": 3},
    ],
)
def test_a_local_store_gives_mlflows_frame_too(local_experiment, query):
    expected = mlflow.search_runs(experiment_names=[local_experiment], **query)
    assert_same_frame(search_runs(local_experiment, **query), expected)


def test_bad_input_on_a_local_store_raises_the_librarys_errors(local_experiment):
    with pytest.raises(ExperimentNotFoundError, match="no-such-experiment"):
        compare_runs("no-such-experiment")
    with pytest.raises(TrackingInputError, match="refused the search"):
        search_runs(local_experiment, filter_string="metrics.rmse >>> 1")
