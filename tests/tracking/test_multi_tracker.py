"""MultiTracker without a server: MLflow's local store, ClearML offline (the real SDK), and stand-in
backends that fail on cue. Every call reaches every backend; a failing backend is set aside while
the others keep every point; bad input is the caller's and raises."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import Ridge

from mlstack.errors import ConfigError
from mlstack.tracking import ClientSettings, Tracker, setup_mlflow
from mlstack.tracking.errors import TrackingError, TrackingInputError
from mlstack.tracking.mlflow.tracker import ExperimentTracker
from mlstack.tracking.multi import MultiTracker, configured_backends, track
from tests.conftest import run_python

POINTS = 200
FEATURES = pd.DataFrame({"x1": np.arange(20.0), "x2": np.arange(20.0) ** 0.5})
TARGET = 3 * FEATURES["x1"] + 1


def local_settings(root: Path, **values) -> ClientSettings:
    """A scratch project with no server anywhere: MLflow's local store, ClearML without credentials."""
    root.mkdir(parents=True, exist_ok=True)
    return ClientSettings(
        MLSTACK_PROJECT_DIR=root,
        MLSTACK_STATE_DIR=root / "state",
        MLFLOW_TRACKING_URI=None,
        MLSTACK_METRIC_FLUSH_INTERVAL_SECONDS=0.05,
        clearml_api_access_key=None,
        clearml_api_secret_key=None,
        _env_file=None,
        **values,
    )


def clearml_events(folder: Path, kind: str) -> list[dict]:
    """Events of an offline ClearML session file: one JSON list of events per line."""
    path = folder / f"{kind}.jsonl"
    return [event for line in path.read_text().splitlines() if line.strip() for event in json.loads(line)]


class StandIn(Tracker):
    """A backend that records what it gets and raises ConnectionError on cue: at `fail_at` (a call name)
    once step `fail_from` is reached, as a backend whose server went away mid-run."""

    input_errors = ()
    run_id: str | None = None  # a plain attribute, set per instance

    def __init__(self, name: str = "stand-in", fail_at: str | None = None, fail_from: int = 0):
        self.name, self.fail_at, self.fail_from = name, fail_at, fail_from
        self.calls: list[str] = []
        self.points: list[int] = []
        self.ended: str | None = None
        self.run_id = f"{name}-run"

    def _call(self, call: str, step: int = 0) -> None:
        self.calls.append(call)
        if call == self.fail_at and step >= self.fail_from:
            raise ConnectionError(f"{self.name}: the server went away")

    def start(self):
        self._call("start")
        return self

    def log_params(self, params):
        self._call("log_params")

    def log_metrics(self, metrics, step=0):
        self._call("log_metrics", step)
        self.points.append(step)

    def set_tags(self, tags):
        self._call("set_tags")

    def log_artifact(self, path, artifact_path=None):
        self._call("log_artifact")

    def log_dataset(self, frame, name, source, context="training"):
        self._call("log_dataset")

    def register_model(self, model, name, *, alias=None, metadata=None, input_example=None):
        self._call("register_model")
        return "1"

    def child(self, run_name, tags=None):
        self._call("child")
        return StandIn(f"{self.name}", self.fail_at, self.fail_from)

    def end(self, status="FINISHED"):
        self.calls.append("end")
        self.ended = status


@pytest.fixture(scope="module")
def local_mlflow(isolated_sdk, restore_mlflow_setup) -> ClientSettings:
    settings = local_settings(isolated_sdk / "project")
    setup_mlflow("multi", settings=settings)
    return settings


def mlflow_and(*others, run_name: str = "run") -> MultiTracker:
    return MultiTracker(run_name, [ExperimentTracker("multi", run_name), *others])


def mlflow_steps(run_id: str, key: str = "loss") -> list[int]:
    return sorted(metric.step for metric in MlflowClient().get_metric_history(run_id, key))


# -- which backends ------------------------------------------------------------------------------


def test_both_backends_are_on_unless_mlstack_trackers_names_fewer(tmp_path, monkeypatch):
    monkeypatch.delenv("MLSTACK_TRACKERS", raising=False)
    assert configured_backends(local_settings(tmp_path)) == ("mlflow", "clearml")
    monkeypatch.setenv("MLSTACK_TRACKERS", " ClearML, mlflow,clearml ")
    assert configured_backends(local_settings(tmp_path)) == ("clearml", "mlflow")
    (tmp_path / ".env").write_text("MLSTACK_TRACKERS=mlflow\n")
    monkeypatch.delenv("MLSTACK_TRACKERS")
    assert configured_backends(ClientSettings.load(tmp_path)) == ("mlflow",), "from the project's .env"


def test_an_unknown_backend_is_refused_naming_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSTACK_TRACKERS", "mlflow,wandb")
    refused = r"MLSTACK_TRACKERS='mlflow,wandb': 'wandb' is not a tracking backend; name one or more of mlflow, clearml"
    with pytest.raises(ConfigError, match=refused):
        configured_backends(local_settings(tmp_path))


def test_clearml_is_imported_only_when_its_backend_is_used(tmp_path):
    code = f"""
        import sys
        from mlstack.tracking import ClientSettings, setup_mlflow
        from mlstack.tracking.multi import track
        assert "clearml" not in sys.modules
        settings = ClientSettings(MLSTACK_PROJECT_DIR={str(tmp_path)!r}, MLFLOW_TRACKING_URI=None, _env_file=None)
        setup_mlflow("lazy", settings=settings)
        with track("mlflow only", settings=settings, backends=["mlflow"]) as run:
            run.log_metrics({{"loss": 0.5}}, step=1)
        assert not [name for name in sys.modules if name.split(".")[0] == "clearml"]
    """
    result = run_python(code, tmp_path / "home")
    assert result.returncode == 0, result.stderr


def test_clearml_reports_from_a_thread_not_a_child_forked_beside_mlflows_flusher(tmp_path):
    """ClearML's SDK forks its reporter by default on Linux. Forked while MLflow's flusher thread runs,
    the child can start deadlocked: it never reads the pipe, and the run's end waits on it forever (a
    CI run hung so in the `both` fixture). The user's condition, in a fresh process: no child at all."""
    code = f"""
        import psutil
        from mlstack.tracking import ClientSettings, setup_mlflow
        from mlstack.tracking.multi import track
        settings = ClientSettings(
            MLSTACK_PROJECT_DIR={str(tmp_path)!r}, MLFLOW_TRACKING_URI=None, _env_file=None,
            clearml_api_access_key=None, clearml_api_secret_key=None,
        )
        setup_mlflow("fork check", settings=settings)
        with track("both", settings=settings, backends=["mlflow", "clearml"]) as run:
            for step in range(100):
                run.log_metrics({{"loss": 1 / (step + 1)}}, step=step)
            children = psutil.Process().children(recursive=True)
        print("children:", [(child.pid, child.status()) for child in children])
    """
    result = run_python(code, tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "children: []"


# -- both real backends: MLflow's local store and ClearML offline ---------------------------------


@pytest.fixture(scope="module")
def both(local_mlflow, isolated_sdk):
    """One run with children in both backends, exercising every call; bad input tried once on the way."""
    report = isolated_sdk / "report.txt"
    report.write_text("rows: 20")
    model = Ridge().fit(FEATURES, TARGET)
    with track("parent", "multi", {"suite": "multi"}, local_mlflow) as parent:
        parent.log_params({"alpha": 0.5})
        for step in range(POINTS):
            parent.log_metrics({"loss": 1 / (step + 1)}, step=step)
        with pytest.raises(TrackingInputError, match="loss"):
            parent.log_metrics({"loss": float("nan")}, step=POINTS)
        parent.set_tags({"stage": "train"})
        parent.log_artifact(report, "reports")
        parent.log_dataset(FEATURES.assign(target=TARGET), "toy", "https://example.org/toy.csv", "training")
        for alpha in (0.1, 1.0):
            with parent.child(f"ridge alpha={alpha}", {"family": "ridge"}) as child:
                child.log_params({"alpha": alpha})
                child.log_metrics({"val_rmse": 10 * alpha}, step=0)
        versions = parent.register_model(
            model, "multi-model", alias="champion", metadata={"rmse": 1.5}, input_example=FEATURES.head(2)
        )
    session = local_mlflow.clearml_offline_path / "offline" / parent.run_ids["clearml"]
    return SimpleNamespace(parent=parent, versions=versions, session=session)


def test_every_point_param_tag_dataset_and_artifact_reaches_mlflow(both):
    client = MlflowClient()
    run = client.get_run(both.parent.run_ids["mlflow"])
    assert mlflow_steps(run.info.run_id) == list(range(POINTS))
    assert run.data.params == {"alpha": "0.5"}
    assert {"suite": "multi", "stage": "train"}.items() <= run.data.tags.items()
    assert run.info.status == "FINISHED"
    (dataset,) = run.inputs.dataset_inputs
    assert (dataset.dataset.name, dataset.tags[0].value) == ("toy", "training")
    assert [item.path for item in client.list_artifacts(run.info.run_id, "reports")] == ["reports/report.txt"]


def test_every_point_param_tag_dataset_and_artifact_reaches_clearml_offline(both):
    steps = sorted(
        event["iter"]
        for event in clearml_events(both.session, "metrics")
        if event["type"] == "training_stats_scalar" and (event["metric"], event["variant"]) == ("loss", "loss")
    )
    assert steps == list(range(POINTS))
    task = json.loads((both.session / "task.json").read_text())
    assert task["hyperparams"]["params"]["alpha"]["value"] == "0.5"
    assert {"parent", "suite:multi", "stage:train"} <= set(task["tags"])
    digest = MlflowClient().get_run(both.parent.run_ids["mlflow"]).inputs.dataset_inputs[0].dataset.digest
    assert task["hyperparams"]["dataset toy"]["digest"]["value"] == digest, "one data version, named alike in both"
    artifacts = [path for path in (both.session / "data").rglob("*") if path.is_file()]
    assert [path.read_text() for path in artifacts] == ["rows: 20"]


def test_bad_input_raises_to_the_caller_and_sets_no_backend_aside(both):
    assert both.parent.failures == []
    assert both.parent.backends == ("mlflow", "clearml")


def test_children_nest_in_mlflow_and_are_lines_of_the_parent_task_in_clearml(both):
    parent_id = both.parent.run_ids["mlflow"]
    children = MlflowClient().search_runs(
        [MlflowClient().get_run(parent_id).info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert sorted((run.info.run_name, run.data.metrics["val_rmse"]) for run in children) == [
        ("ridge alpha=0.1", 1.0),
        ("ridge alpha=1.0", 10.0),
    ]
    lines = {
        event["variant"]: event["value"]
        for event in clearml_events(both.session, "metrics")
        if event["type"] == "training_stats_scalar" and event["metric"] == "val_rmse"
    }
    assert lines == {"ridge alpha=0.1": 1.0, "ridge alpha=1.0": 10.0}
    sections = json.loads((both.session / "task.json").read_text())["hyperparams"]
    assert sections["ridge alpha=1.0 params"]["alpha"]["value"] == "1.0"
    assert sections["ridge alpha=1.0 tags"]["family"]["value"] == "ridge"


def test_the_model_is_registered_in_both_with_its_alias_and_metadata(both):
    assert both.versions["mlflow"] == "1"
    client = MlflowClient()
    champion = client.get_model_version_by_alias("multi-model", "champion")
    assert (str(champion.version), champion.tags) == ("1", {"rmse": "1.5"})
    assert champion.run_id == both.parent.run_ids["mlflow"]
    (model,) = json.loads((both.session / "task.json").read_text())["offline_output_models"]
    assert model["id"] == both.versions["clearml"]
    assert (model["init"]["name"], model["init"]["config_dict"]) == ("multi-model", {"rmse": 1.5, "alias": "champion"})


# -- failures --------------------------------------------------------------------------------------


def test_a_backend_failing_mid_run_is_set_aside_while_the_other_keeps_every_point(local_mlflow, caplog):
    flaky = StandIn("flaky", fail_at="log_metrics", fail_from=50)
    with caplog.at_level(logging.WARNING, logger="mlstack.tracking.multi"), mlflow_and(flaky) as run:
        for step in range(POINTS):
            run.log_metrics({"loss": 1 / (step + 1)}, step=step)
        run.set_tags({"after": "failure"})

    assert mlflow_steps(run.run_ids["mlflow"]) == list(range(POINTS))
    assert MlflowClient().get_run(run.run_ids["mlflow"]).info.status == "FINISHED"
    assert flaky.points == list(range(50)) and flaky.calls[-1] == "end" and "set_tags" not in flaky.calls
    assert flaky.ended == "FAILED"
    (failure,) = run.failures
    assert (failure.backend, failure.call, type(failure.error)) == ("flaky", "log_metrics(step=50)", ConnectionError)
    warned = [record.getMessage() for record in caplog.records if record.name == "mlstack.tracking.multi"]
    assert len(warned) == 2, warned
    assert warned[0].startswith("flaky failed in run 'run' at log_metrics(step=50): ConnectionError")
    assert warned[0].endswith("it gets no more calls in this run; mlflow keeps logging")
    assert "ended with flaky failed" in warned[1] and "every call reached mlflow" in warned[1]


def test_an_exception_in_the_block_ends_every_backend_failed_and_propagates(local_mlflow):
    other = StandIn()
    with pytest.raises(KeyError, match="boom"), mlflow_and(other) as run:
        run.log_params({"alpha": 1})
        raise KeyError("boom")
    assert MlflowClient().get_run(run.run_ids["mlflow"]).info.status == "FAILED"
    assert other.ended == "FAILED"


def test_a_run_that_starts_in_no_backend_raises_naming_each_failure():
    first, second = StandIn("first", fail_at="start"), StandIn("second", fail_at="start")
    with pytest.raises(TrackingError, match="could not start in any backend: first failed.*second failed"):
        MultiTracker("run", [first, second]).start()


def test_a_backend_failing_in_a_child_run_is_set_aside_in_its_parent_too(local_mlflow):
    flaky = StandIn("flaky", fail_at="log_params")
    with mlflow_and(flaky, run_name="parent") as parent:
        with parent.child("first child") as child:
            child.log_params({"alpha": 1})
            child.log_metrics({"loss": 0.5})
        with parent.child("second child") as second:
            second.log_metrics({"loss": 0.25})
        parent.log_metrics({"loss": 0.1})
    assert second.backends == ("mlflow",) and parent.backends == ("mlflow",)
    assert [failure.run_name for failure in parent.failures] == ["first child"]
    assert flaky.ended == "FAILED"
    assert MlflowClient().get_run(second.run_ids["mlflow"]).data.metrics == {"loss": 0.25}
