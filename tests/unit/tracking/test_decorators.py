"""Decorators keep signature, return value and method binding, compose, and log where expected."""

from __future__ import annotations

import inspect

import mlflow
import pytest

from mlstack.tracking import (
    NoActiveRunError,
    log_artifact_decorator,
    log_metrics_decorator,
    log_params_decorator,
    mlflow_run,
    timed_execution,
)


def last_run() -> mlflow.entities.Run:
    return mlflow.get_run(mlflow.last_active_run().info.run_id)


def test_composed_decorators_log_arguments_with_defaults_metrics_and_duration(local_store):
    @mlflow_run(experiment_name="unit", run_name="composed", tags={"model": "ridge"})
    @log_params_decorator
    @log_metrics_decorator(["rmse", "r2"])
    @timed_execution
    def train(data, alpha: float = 1.0, *, solver: str = "auto") -> dict:
        """Train."""
        return {"rmse": 4.2, "r2": 0.7, "model": "fitted"}

    result = train([1, 2, 3], alpha=0.5)
    assert result == {"rmse": 4.2, "r2": 0.7, "model": "fitted"}
    assert inspect.signature(train) == inspect.signature(train.__wrapped__.__wrapped__.__wrapped__.__wrapped__)
    assert train.__name__ == "train" and train.__doc__ == "Train."
    run = last_run()
    assert run.info.run_name == "composed" and run.data.tags["model"] == "ridge"
    assert run.data.params == {"data": "[1, 2, 3]", "alpha": "0.5", "solver": "auto"}
    assert {"rmse", "r2", "duration_seconds", "train_duration_seconds"} <= set(run.data.metrics)


def test_decorators_work_on_methods_and_skip_self(local_store):
    class Trainer:
        @mlflow_run(experiment_name="unit")
        @log_params_decorator
        def fit(self, depth=3):
            return depth * 2

    assert Trainer().fit(depth=4) == 8
    run = last_run()
    assert run.data.params == {"depth": "4"}
    assert run.info.run_name == "test_decorators_work_on_methods_and_skip_self.<locals>.Trainer.fit"


def test_non_scalar_arguments_are_logged_as_their_type_name(local_store):
    @mlflow_run(experiment_name="unit")
    @log_params_decorator
    def fit(model, features):
        return None

    fit(object(), {"a": [1, 2]})
    assert last_run().data.params == {"model": "<object>", "features": "<dict>"}


def test_the_artifact_decorator_uploads_the_returned_file(local_store, tmp_path):
    @mlflow_run(experiment_name="unit")
    @log_artifact_decorator(artifact_path="plots")
    def plot():
        path = tmp_path / "residuals.txt"
        path.write_text("ok")
        return str(path)

    plot()
    listed = mlflow.MlflowClient().list_artifacts(mlflow.last_active_run().info.run_id, "plots")
    assert [item.path for item in listed] == ["plots/residuals.txt"]


def test_a_logging_decorator_outside_a_run_fails_before_doing_the_work(local_store):
    calls = []

    @timed_execution
    def expensive():
        calls.append(1)

    with pytest.raises(NoActiveRunError, match="mlflow_run"):
        expensive()
    assert calls == []


def test_a_failing_decorated_function_marks_its_run_failed_and_reraises(local_store):
    @mlflow_run(experiment_name="unit", run_name="fails")
    def broken():
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        broken()
    assert last_run().info.status == "FAILED"
