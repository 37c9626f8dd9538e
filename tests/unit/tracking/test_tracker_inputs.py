"""Bad input fails where it is logged, with a message that says what to do; good data stays."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest

from mlstack.tracking import (
    ArtifactNotFoundError,
    ExperimentTracker,
    NestedRunTracker,
    NoActiveRunError,
    ParamConflictError,
    TrackingInputError,
)


@pytest.mark.parametrize("key", ["", "bad\nname", "a" * 251, "../escape", "/absolute", "semi;colon"])
def test_invalid_metric_names_are_refused_at_the_call(local_store, key):
    with ExperimentTracker(run_name="names") as tracker, pytest.raises(TrackingInputError):
        tracker.log_metric(key, 1.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "0.5", None, True, [1.0]])
def test_non_finite_and_non_numeric_metric_values_are_refused(local_store, value):
    with ExperimentTracker(run_name="values") as tracker, pytest.raises(TrackingInputError, match="metric 'loss'"):
        tracker.log_metric("loss", value)


def test_numpy_scalars_and_ints_are_accepted_as_metrics(local_store):
    with ExperimentTracker(run_name="numpy") as tracker:
        tracker.log_metrics({"a": np.float32(0.5), "b": np.int64(3), "c": 7}, step=np.int64(2))
    metrics = mlflow.get_run(tracker.run_id).data.metrics
    assert metrics == {"a": 0.5, "b": 3.0, "c": 7.0}


def test_params_over_the_server_limit_and_unserialisable_values_are_refused(local_store):
    with ExperimentTracker(run_name="params") as tracker:
        with pytest.raises(TrackingInputError, match="6000"):
            tracker.log_param("long", "x" * 6001)
        with pytest.raises(TrackingInputError, match="cannot be written as text"):
            tracker.log_param("obj", object())
        tracker.log_params({"alpha": 0.5, "layers": [64, 32], "name": "ridge"})
    assert mlflow.get_run(tracker.run_id).data.params == {"alpha": "0.5", "layers": "[64, 32]", "name": "ridge"}


def test_a_param_logged_again_with_another_value_is_refused_and_the_first_value_stays(local_store):
    with ExperimentTracker(run_name="conflict") as tracker:
        tracker.log_param("alpha", 0.5)
        tracker.log_param("alpha", 0.5)
        with pytest.raises(ParamConflictError, match="already '0.5'"):
            tracker.log_params({"beta": 1, "alpha": 0.7})
    assert mlflow.get_run(tracker.run_id).data.params == {"alpha": "0.5"}


def test_missing_artifacts_and_unserialisable_dicts_are_refused(local_store, tmp_path):
    with ExperimentTracker(run_name="artifacts") as tracker:
        with pytest.raises(ArtifactNotFoundError, match="missing.png"):
            tracker.log_artifact(tmp_path / "missing.png")
        with pytest.raises(ArtifactNotFoundError):
            tracker.log_artifacts(tmp_path / "no-folder")
        with pytest.raises(TrackingInputError, match="not serialisable"):
            tracker.log_dict({"f": object()}, "config.json")


def test_an_exception_in_the_block_fails_the_run_reraises_and_keeps_what_was_logged(local_store):
    with pytest.raises(RuntimeError, match="boom"), ExperimentTracker(run_name="crash") as tracker:
        tracker.log_metric("loss", 0.25, step=1)
        raise RuntimeError("boom")
    run = mlflow.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.metrics == {"loss": 0.25}
    assert mlflow.active_run() is None


def test_logging_outside_a_run_says_how_to_open_one(local_store):
    tracker = ExperimentTracker(run_name="never-started")
    with pytest.raises(NoActiveRunError, match="start_run"):
        tracker.log_metric("loss", 1.0)
    with pytest.raises(NoActiveRunError, match="parent run"):
        NestedRunTracker("orphan").start_run()


def test_nothing_configured_means_a_local_store_in_the_state_folder_announced_once(local_settings, caplog, monkeypatch):
    from mlstack.tracking import setup_mlflow
    from mlstack.tracking.mlflow import config

    monkeypatch.setattr(config, "_local_store_announced", False)
    first = setup_mlflow(settings=local_settings)
    setup_mlflow(settings=local_settings)
    assert first == f"sqlite:///{local_settings.state_path / 'mlflow.db'}"
    with ExperimentTracker(run_name="local") as tracker:
        tracker.log_metric("m", 1.0)
    assert tracker.artifact_uri.startswith((local_settings.state_path / "artifacts").as_uri())
    announcements = [record for record in caplog.records if "MLFLOW_TRACKING_URI is not set" in record.message]
    assert len(announcements) == 1
