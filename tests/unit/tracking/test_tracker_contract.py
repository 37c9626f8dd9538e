"""The `Tracker` contract: both backends' trackers (and their child runs) are Trackers, MultiTracker
composes any Tracker, and the one validation refuses the same input whichever tracker gets it. MLflow
runs in the local store, ClearML offline with the real SDK."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from mlstack.tracking import ClientSettings, ExperimentTracker, MultiTracker, NestedRunTracker, Tracker
from mlstack.tracking.clearml.tracker import ClearMLChildRun, ClearMLTracker
from mlstack.tracking.errors import ParamConflictError, TrackingInputError
from mlstack.tracking.mlflow.presets import MLflowSweepTracker, MLflowTrainingTracker

KINDS = ("mlflow", "mlflow child", "clearml", "clearml child")


def offline_settings(root: Path) -> ClientSettings:
    return ClientSettings(
        MLSTACK_PROJECT_DIR=root,
        MLSTACK_STATE_DIR=root / "state",
        clearml_api_access_key=None,
        clearml_api_secret_key=None,
        _env_file=None,
    )


@pytest.fixture(scope="module")
def clearml_run(isolated_sdk):
    """One offline ClearML task for the module (the SDK keeps one task per process open)."""
    with ClearMLTracker({}, stage="contract", settings=offline_settings(isolated_sdk / "contract")) as tracker:
        yield tracker


@pytest.fixture(params=KINDS)
def tracker(request, local_store, clearml_run):
    """A started run of each kind: MLflow (local store) and ClearML (offline), each top-level and child."""
    if request.param.startswith("clearml"):
        yield clearml_run if request.param == "clearml" else clearml_run.child("contract child").start()
        return
    with ExperimentTracker(run_name="contract") as run:
        if request.param == "mlflow":
            yield run
        else:
            with run.child("contract child") as child:
                yield child


# -- both backends are Trackers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "tracker_class",
    [ExperimentTracker, NestedRunTracker, MLflowSweepTracker, MLflowTrainingTracker, ClearMLTracker, ClearMLChildRun],
)
def test_every_tracker_of_both_backends_is_a_tracker(tracker_class):
    assert issubclass(tracker_class, Tracker)
    assert tracker_class.name in ("mlflow", "clearml")


def test_children_are_trackers_of_their_backend(isolated_sdk):
    clearml = ClearMLTracker({}, stage="unstarted", settings=offline_settings(isolated_sdk / "unstarted"))
    for parent in (ExperimentTracker(run_name="unstarted"), clearml):
        child = parent.child("child", {"fold": 1})
        assert isinstance(child, Tracker) and child.name == parent.name
        assert parent.run_id is None, "nothing starts before `start` (or `with`)"


def test_a_tracker_must_implement_every_call():
    class OnlyMetrics(Tracker):
        name = "partial"

        def log_metrics(self, metrics, step=0):
            pass

    with pytest.raises(TypeError, match="abstract"):
        OnlyMetrics()


# -- MultiTracker composes any Tracker ---------------------------------------------------------------


class Recorder(Tracker):
    """A Tracker that records each call; NaN metrics are its bad input."""

    def __init__(self, name: str):
        self.name = name
        self.calls: list[tuple] = []
        self.started = False

    @property
    def run_id(self) -> str | None:
        return f"{self.name}-run" if self.started else None

    def start(self):
        self.started = True
        self.calls.append(("start",))
        return self

    def log_params(self, params):
        self.calls.append(("log_params", dict(params)))

    def log_metrics(self, metrics, step=0):
        self.calls.append(("log_metrics", dict(metrics), step))
        if any(math.isnan(value) for value in metrics.values()):
            raise TrackingInputError(f"{self.name}: NaN")

    def set_tags(self, tags):
        self.calls.append(("set_tags", dict(tags)))

    def log_artifact(self, local_path, artifact_path=None):
        self.calls.append(("log_artifact", Path(local_path).name, artifact_path))

    def log_dataset(self, frame, name, source, context="training"):
        self.calls.append(("log_dataset", name, len(frame), source, context))

    def register_model(self, model, name, *, alias=None, metadata=None, input_example=None):
        self.calls.append(("register_model", name, alias, metadata))
        return f"{self.name}-1"

    def child(self, run_name, tags=None):
        self.calls.append(("child", run_name, dict(tags or {})))
        return Recorder(self.name)

    def end(self, status="FINISHED"):
        self.calls.append(("end", status))


def test_multitracker_sends_every_call_to_each_tracker_it_composes(tmp_path):
    first, second = Recorder("first"), Recorder("second")
    artifact = tmp_path / "notes.txt"
    artifact.write_text("notes")
    with MultiTracker("run", [first, second]) as run:
        run.log_params({"alpha": 0.5})
        run.log_metrics({"loss": 0.25}, step=3)
        run.set_tags({"team": "pricing"})
        run.log_artifact(artifact, "reports")
        run.log_dataset(pd.DataFrame({"x": [1, 2]}), "toy", "memory")
        versions = run.register_model("weights.bin", "model", alias="champion", metadata={"rmse": 1.0})
        with run.child("fold 1", {"fold": 1}) as child:
            child.log_metrics({"loss": 0.5})
        with pytest.raises(TrackingInputError, match="first: NaN"):
            run.log_metrics({"loss": math.nan}, step=4)
    assert versions == {"first": "first-1", "second": "second-1"}
    assert run.run_ids == {"first": "first-run", "second": "second-run"}
    assert run.failures == [] and run.backends == ("first", "second"), "bad input sets no backend aside"
    expected = [
        ("start",),
        ("log_params", {"alpha": 0.5}),
        ("log_metrics", {"loss": 0.25}, 3),
        ("set_tags", {"team": "pricing"}),
        ("log_artifact", "notes.txt", "reports"),
        ("log_dataset", "toy", 2, "memory", "training"),
        ("register_model", "model", "champion", {"rmse": 1.0}),
        ("child", "fold 1", {"fold": 1}),
        ("log_metrics", {"loss": math.nan}, 4),
        ("end", "FINISHED"),
    ]
    assert first.calls[:8] == second.calls[:8] == expected[:8]
    assert [call[0] for call in first.calls[8:]] == [call[0] for call in second.calls[8:]] == ["log_metrics", "end"]


def test_multitracker_refuses_what_is_not_a_tracker():
    with pytest.raises(TypeError, match="is not a mlstack.tracking.Tracker"):
        MultiTracker("run", [Recorder("good"), object()])


# -- one validation for both backends ----------------------------------------------------------------

BAD_METRICS = [
    ({"loss": math.nan}, 0),
    ({"loss": math.inf}, 0),
    ({"loss": -math.inf}, 0),
    ({"loss": "0.5"}, 0),
    ({"loss": None}, 0),
    ({"loss": True}, 0),
    ({"": 1.0}, 0),
    ({"semi;colon": 1.0}, 0),
    ({"../escape": 1.0}, 0),
    ({"a" * 251: 1.0}, 0),
    ({"loss": 1.0}, -1),
    ({"loss": 1.0}, 1.5),
    ({"loss": 1.0}, True),
    ("loss", 0),
]


@pytest.mark.parametrize(("metrics", "step"), BAD_METRICS, ids=repr)
def test_bad_metrics_are_refused_by_every_tracker(tracker, metrics, step):
    with pytest.raises(TrackingInputError):
        tracker.log_metrics(metrics, step=step)


@pytest.mark.parametrize(
    "params",
    [{"long": "x" * 6001}, {"obj": object()}, {"bad;name": 1}, {"": 1}],
    ids=["long", "object", "name", "empty"],
)
def test_bad_params_are_refused_by_every_tracker(tracker, params):
    with pytest.raises(TrackingInputError):
        tracker.log_params(params)


@pytest.mark.parametrize("tags", [{"bad;tag": "x"}, {"long": "x" * 8001}], ids=["name", "long"])
def test_bad_tags_are_refused_by_every_tracker(tracker, tags):
    with pytest.raises(TrackingInputError):
        tracker.set_tags(tags)


def test_a_changed_param_is_refused_by_every_tracker(tracker, request):
    key = f"alpha_{request.node.callspec.id.replace(' ', '_')}"
    tracker.log_params({key: 0.5})
    tracker.log_params({key: 0.5})
    with pytest.raises(ParamConflictError, match="already '0.5'"):
        tracker.log_params({key: 0.7})


def test_numpy_numbers_are_accepted_by_every_tracker(tracker):
    tracker.log_metrics({"a": np.float32(0.5), "b": np.int64(3), "c": 7}, step=np.int64(2))


# -- the ClearML tracker keeps the seeds' names ----------------------------------------------------


def test_clearml_keeps_the_seeds_argument_names(clearml_run, tmp_path):
    weights = tmp_path / "ridge.joblib"
    weights.write_bytes(b"weights")
    clearml_run.log_metrics(metrics={"val_rmse": 4.2}, series="validation", iteration=0)
    assert clearml_run.register_model(model_path=weights, model_name="seed-model", metadata={"val_rmse": 4.2})
    assert clearml_run.register_model(weights, "positional-model", {"val_rmse": 4.2})
    assert clearml_run.register_model(Ridge(), "object-model", alias="champion"), "an object is saved with joblib"
    with pytest.raises(TypeError, match="model_path"):
        clearml_run.register_model(weights, "both", model_path=weights)
    with pytest.raises(TypeError, match="iteration"):
        clearml_run.log_metrics({"loss": 1.0}, step=1, iteration=1)
