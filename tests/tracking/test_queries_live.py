"""Queries against the live stack: filter strings, ranking, summaries, deletion and complete paging."""

from __future__ import annotations

import uuid

import mlflow
import pytest

from mlstack.tracking import (
    ExperimentNotFoundError,
    ExperimentTracker,
    compare_runs,
    delete_experiment_runs,
    find_mlflow_runs,
    get_best_run,
    get_experiment_summary,
    get_run_by_name,
    search_runs,
)
from tests.unit.tracking.test_run_columns import assert_same_frame

pytestmark = pytest.mark.integration


@pytest.fixture
def five_runs(experiment) -> str:
    """Runs rmse-0..rmse-4 with rmse 4.0..0.0 (rmse-4 best), plus one FAILED run with the best rmse."""
    for index in range(5):
        with ExperimentTracker(experiment, run_name=f"rmse-{index}", tags={"stage": "hpo"}) as tracker:
            tracker.log_params({"depth": index})
            tracker.log_metrics({"rmse": 4.0 - index, "r2": index / 10})
    with pytest.raises(RuntimeError), ExperimentTracker(experiment, run_name="crashed") as tracker:
        tracker.log_metric("rmse", -1.0)
        raise RuntimeError("diverged")
    return experiment


def test_filter_strings_select_runs_as_dataframe_and_as_run_objects(five_runs):
    frame = search_runs(five_runs, filter_string="metrics.rmse < 2.5 AND tags.stage = 'hpo'")
    assert sorted(frame["tags.mlflow.runName"]) == ["rmse-2", "rmse-3", "rmse-4"]
    runs = find_mlflow_runs(five_runs, "params.depth = '1'")
    assert [run.info.run_name for run in runs] == ["rmse-1"]
    assert len(search_runs(five_runs, max_results=2)) == 2


def test_compare_ranks_by_the_requested_metric_and_keeps_the_top_n(five_runs):
    frame = compare_runs(five_runs, metrics=["r2", "rmse"], top_n=3, mode="max")
    assert frame["run_name"].tolist() == ["rmse-4", "rmse-3", "rmse-2"]
    assert {"run_id", "metric_r2", "metric_rmse", "param_depth"} <= set(frame.columns)


def test_best_run_ignores_failed_runs_and_follows_the_mode(five_runs):
    assert get_best_run(five_runs, "rmse", mode="min")["run_name"] == "rmse-4"
    best_r2 = get_best_run(five_runs, "r2", mode="max")
    assert best_r2["metrics"]["r2"] == pytest.approx(0.4) and best_r2["params"] == {"depth": "4"}
    with pytest.raises(LookupError, match="no_such_metric"):
        get_best_run(five_runs, "no_such_metric")


def test_run_by_name_and_summary(five_runs):
    assert get_run_by_name(five_runs, "rmse-2")["metrics"]["rmse"] == 2.0
    assert get_run_by_name(five_runs, "nobody") is None
    summary = get_experiment_summary(five_runs)
    assert (summary["total_runs"], summary["finished_runs"], summary["failed_runs"]) == (6, 5, 1)
    assert summary["metrics"]["rmse"] == {"count": 6, "min": -1.0, "max": 4.0, "mean": pytest.approx(1.5)}


def test_delete_keeps_the_top_n_and_dry_run_deletes_nothing(five_runs):
    planned = delete_experiment_runs(five_runs, keep_top_n=2, metric="rmse", mode="max", dry_run=True)
    assert len(planned) == 4
    assert len(search_runs(five_runs)) == 6
    deleted = delete_experiment_runs(five_runs, keep_top_n=2, metric="rmse", mode="max", dry_run=False)
    assert deleted == planned
    assert sorted(search_runs(five_runs)["tags.mlflow.runName"]) == ["rmse-0", "rmse-1"]


def test_an_unknown_experiment_is_named_in_the_error(tracking_uri):
    with pytest.raises(ExperimentNotFoundError, match="no-such-experiment"):
        search_runs("no-such-experiment")


def test_queries_over_ten_thousand_runs_return_every_run(mlflow_stack, experiment):
    """10,000 runs are written straight into the backend store (API creation would take minutes);
    the queries then go through the server like any other."""
    experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    prefix = uuid.uuid4().hex[:20]
    with mlflow_stack.pg_connect() as connection:
        connection.execute(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
            "SELECT %(prefix)s || lpad(n::text, 12, '0'), 'bulk-' || n, 'LOCAL', '', '', 'tests', 'FINISHED', "
            "1700000000000 + n, 1700000000000 + n, '', 'active', 'mlflow-artifacts:/bulk/' || n, %(experiment)s "
            "FROM generate_series(0, 9999) AS n",
            {"prefix": prefix, "experiment": int(experiment_id)},
        )
        connection.execute(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "SELECT 'rmse', n, 0, 0, false, %(prefix)s || lpad(n::text, 12, '0') FROM generate_series(0, 9999) AS n",
            {"prefix": prefix},
        )
    every_run = search_runs(experiment)
    assert len(every_run) == 10_000
    assert_same_frame(every_run, mlflow.search_runs([experiment_id]))
    assert len(find_mlflow_runs(experiment, "metrics.rmse >= 2500")) == 7_500
    frame = compare_runs(experiment, metrics=["rmse"])
    assert len(frame) == 10_000 and frame["metric_rmse"].tolist() == [float(n) for n in range(10_000)]
    assert get_best_run(experiment, "rmse", mode="max")["run_name"] == "bulk-9999"
