"""Decorated functions and seed-004 presets against the live stack."""

from __future__ import annotations

import mlflow
import pytest

from mlstack.tracking import (
    MLflowBenchmarkTracker,
    MLflowSweepTracker,
    MLflowTrainingTracker,
    find_mlflow_runs,
    get_run_by_name,
    log_artifact_decorator,
    log_metrics_decorator,
    log_params_decorator,
    mlflow_run,
    timed_execution,
)

pytestmark = pytest.mark.integration


def test_a_decorated_experiment_records_params_metrics_artifact_and_duration(mlflow_stack, experiment, tmp_path):
    @log_artifact_decorator(artifact_path="plots")
    def save_plot() -> str:
        path = tmp_path / "residuals.txt"
        path.write_text("plot")
        return str(path)

    @mlflow_run(experiment_name=experiment, run_name="rf-tuned", tags={"model": "rf"})
    @log_params_decorator
    @log_metrics_decorator(["r2_score"])
    @timed_execution
    def train_and_evaluate(n_estimators=100, max_depth=10):
        mlflow.log_metric("fluent_metric", 3.0)
        save_plot()
        return {"r2_score": 0.9}

    assert train_and_evaluate(n_estimators=200) == {"r2_score": 0.9}
    run = get_run_by_name(experiment, "rf-tuned")
    assert run["params"] == {"n_estimators": "200", "max_depth": "10"}
    assert {"r2_score", "fluent_metric", "duration_seconds", "train_and_evaluate_duration_seconds"} <= set(
        run["metrics"]
    )
    keys = [item["Key"] for item in mlflow_stack.s3.list_objects_v2(Bucket=mlflow_stack.bucket)["Contents"]]
    assert any(key.endswith(f"{run['run_id']}/artifacts/plots/residuals.txt") for key in keys)


def test_presets_tag_their_process_and_nest_sweep_trials(experiment):
    with MLflowSweepTracker(experiment, run_name="sweep-1") as sweep:
        for number, depth in enumerate([3, 5]):
            with sweep.trial(number, {"depth": depth}) as trial:
                trial.log_metric("f1", depth / 10)
        sweep.log_best_trial(trial, "f1", 0.5)
    with MLflowTrainingTracker(experiment) as training:
        training.log_epoch(0, {"loss": 1.0})
        training.log_epoch(1, {"loss": 0.5})
    with MLflowBenchmarkTracker(experiment) as benchmark:
        benchmark.log_benchmark({"latency_ms": 12.0}, batch_size=8)

    trials = find_mlflow_runs(experiment, f"tags.mlflow.parentRunId = '{sweep.run_id}'")
    assert sorted(run.info.run_name for run in trials) == ["sweep-1-trial-0", "sweep-1-trial-1"]
    assert {run.data.params["depth"] for run in trials} == {"3", "5"}
    assert mlflow.get_run(sweep.run_id).data.tags["best_trial_run_id"] == trial.run_id
    processes = {
        run.info.run_name: run.data.tags["mlstack.process"]
        for run in find_mlflow_runs(experiment, "tags.`mlstack.process` != 'trial'")
    }
    assert processes == {"sweep-1": "sweep", "training": "training", "benchmark": "benchmark"}
    history = mlflow.MlflowClient().get_metric_history(training.run_id, "loss")
    assert [(point.step, point.value) for point in history] == [(0, 1.0), (1, 0.5)]
