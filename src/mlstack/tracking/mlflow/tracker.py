"""Run trackers: `ExperimentTracker` (alias `MLflowExperimentTracker`) and `NestedRunTracker`, the
MLflow `Tracker`s.

A tracker is an MLflow run that is also the active fluent run while it is open, so plain
`mlflow.log_*` calls inside the block land in it too. Metrics go through the non-blocking pipeline
(buffer.py); params, tags, artifacts and models are sent at once, after validation, so errors are
raised where they were logged. Leaving the block flushes the metrics and ends the run: FINISHED,
or FAILED when an exception escapes (the exception is re-raised).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import mlflow
from mlflow.entities import Param, RunTag

from mlstack.tracking import validation
from mlstack.tracking.base import Status, Tracker
from mlstack.tracking.errors import (
    ArtifactNotFoundError,
    MetricsSpooledError,
    NoActiveRunError,
    TrackingError,
    TrackingInputError,
)
from mlstack.tracking.mlflow.config import current_config, metric_pipeline
from mlstack.tracking.mlflow.ending import end_locally, end_on_server
from mlstack.tracking.mlflow.spool import spool_folder
from mlstack.tracking.mlflow.transport import server_answers

if TYPE_CHECKING:
    import pandas as pd

MAX_PARAMS_OR_TAGS_PER_REQUEST = 100
_open_trackers: ContextVar[tuple[ExperimentTracker, ...]] = ContextVar("mlstack_open_trackers", default=())


class ExperimentTracker(Tracker):
    """One MLflow run, used as a context manager (or `start_run` ... `end_run`)."""

    name = "mlflow"

    def __init__(
        self, experiment_name: str | None = None, run_name: str | None = None, tags: dict[str, Any] | None = None
    ):
        self.experiment_name = experiment_name
        self.run_name = run_name
        self._initial_tags = dict(tags or {})
        self._run_id: str | None = None
        self._experiment_id: str | None = None
        self._artifact_uri: str | None = None
        self._params: dict[str, str] = {}
        self._metric_keys: set[str] = set()
        self._owns_run = True
        self._ended = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start_run(self, run_name: str | None = None, tags: dict[str, Any] | None = None) -> Self:
        """Create the run (child of the active run, if any) and make it the active run; returns self."""
        if self._run_id is not None:
            raise TrackingError(f"run {self._run_id} was already started by this tracker; create a new tracker")
        all_tags = validation.checked_tags({**self._initial_tags, **(tags or {})})
        config = current_config()
        parent = mlflow.active_run()
        experiment_id = self._experiment_for(config, parent)
        run = mlflow.start_run(
            experiment_id=experiment_id, run_name=run_name or self.run_name, tags=all_tags, nested=parent is not None
        )
        self._attach(run, config)
        _open_trackers.set((*_open_trackers.get(), self))
        return self

    def start(self) -> Self:
        """`start_run()`, by the `Tracker` name."""
        return self.start_run()

    def _experiment_for(self, config, parent) -> str:
        return config.experiment_id(self.experiment_name)

    def _attach(self, run, config) -> None:
        self._run_id = run.info.run_id
        self._experiment_id = run.info.experiment_id
        self._artifact_uri = run.info.artifact_uri
        self.run_name = run.info.run_name
        self._client = config.client
        self._pipeline = metric_pipeline(config)
        self._tracking_uri = config.tracking_uri
        self._spool_folder = spool_folder(config.settings)

    @classmethod
    def for_active_run(cls) -> ExperimentTracker:
        """The innermost open tracker, or one attached to a run opened with plain `mlflow.start_run`."""
        open_trackers = _open_trackers.get()
        active = mlflow.active_run()
        if open_trackers and (active is None or open_trackers[-1].run_id == active.info.run_id):
            return open_trackers[-1]
        if active is None:
            raise NoActiveRunError(
                "no active MLflow run: wrap the call in @mlflow_run(...) or `with ExperimentTracker(...)`"
            )
        tracker = cls(run_name=active.info.run_name)
        tracker._attach(active, current_config())
        tracker._owns_run = False
        return tracker

    def __enter__(self) -> Self:
        if self._run_id is None:
            self.start_run()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc is None:
            self.end_run("FINISHED")
            return
        try:
            self.end_run("FAILED")
        except MetricsSpooledError as spooled:
            exc.add_note(str(spooled))

    def flush(self) -> None:
        """Block until every metric logged so far is stored (raises MetricsSpooledError if spooled)."""
        self._require_run()
        self._pipeline.flush()

    def end_run(self, status: str = "FINISHED") -> None:
        """Flush this run's metrics, then end it with `status` (FINISHED, FAILED or KILLED).

        If the server does not answer, the end is spooled for `mlstack sync` (with a warning)
        rather than left to the mlflow client's retries, which can take minutes.
        """
        if self._run_id is None or self._ended:
            return
        self._ended = True
        spooled: MetricsSpooledError | None = None
        try:
            self._pipeline.flush()
        except MetricsSpooledError as error:
            spooled = error
        if self._owns_run:
            _open_trackers.set(tuple(t for t in _open_trackers.get() if t is not self))
            if not server_answers(self._tracking_uri):
                end_locally(self._spool_folder, self._tracking_uri, self._run_id, status, spooled)
            else:
                end_on_server(self._client, self._tracking_uri, self._run_id, status, spooled)
        if spooled is not None:
            raise spooled

    def end(self, status: Status = "FINISHED") -> None:
        """`end_run(status)`, by the `Tracker` name."""
        self.end_run(status)

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> NestedRunTracker:
        """A child run of this one (start it with `with`, inside this run)."""
        return NestedRunTracker(run_name, dict(tags or {}))

    # -- properties ------------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        return self._experiment_id

    @property
    def artifact_uri(self) -> str | None:
        return self._artifact_uri

    # -- metrics (non-blocking) ------------------------------------------------------------------

    def log_metric(self, key: str, value: float, step: int | None = None, timestamp: int | None = None) -> None:
        """Queue one point; returns in microseconds. Invalid names and NaN/inf raise here."""
        if self._run_id is None or self._ended:
            self._require_run()
        if key not in self._metric_keys:
            self._metric_keys.add(validation.check_key("metric", key))
        if type(value) is not float or value - value != 0.0:  # not a float, or NaN/inf
            value = validation.metric_value(key, value)
        if step is None:
            step = 0
        elif type(step) is not int or step < 0:
            step = validation.check_step(step, f"step of metric {key!r}")
        self._pipeline.put(self._run_id, key, value, int(time.time() * 1000) if timestamp is None else timestamp, step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Queue several metrics; every one is validated before any is queued."""
        for key, value in validation.checked_metrics(metrics).items():
            self.log_metric(key, value, step)

    # -- params and tags (sent at once) ----------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Send params; a key logged before with a different value raises ParamConflictError."""
        self._require_run()
        new = validation.new_params(params, self._params, self._run_id)
        items = [Param(key, value) for key, value in new.items()]
        for start in range(0, len(items), MAX_PARAMS_OR_TAGS_PER_REQUEST):
            chunk = items[start : start + MAX_PARAMS_OR_TAGS_PER_REQUEST]
            self._client.log_batch(self._run_id, params=chunk)
            self._params.update((param.key, param.value) for param in chunk)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._require_run()
        items = [RunTag(key, value) for key, value in validation.checked_tags(tags).items()]
        for start in range(0, len(items), MAX_PARAMS_OR_TAGS_PER_REQUEST):
            self._client.log_batch(self._run_id, tags=items[start : start + MAX_PARAMS_OR_TAGS_PER_REQUEST])

    # -- artifacts and models --------------------------------------------------------------------

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._require_run()
        path = Path(local_path)
        if not path.is_file():
            raise ArtifactNotFoundError(
                f"artifact {str(path)!r} is not an existing file (use log_artifacts for a folder)"
            )
        self._client.log_artifact(self._run_id, str(path), artifact_path)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self._require_run()
        path = Path(local_dir)
        if not path.is_dir():
            raise ArtifactNotFoundError(f"artifact folder {str(path)!r} does not exist")
        self._client.log_artifacts(self._run_id, str(path), artifact_path)

    def log_dict(self, dictionary: Any, artifact_file: str) -> None:
        """Store `dictionary` as JSON (or YAML for .yaml/.yml); refuses values that cannot be serialised."""
        self._require_run()
        try:
            json.dumps(dictionary)
        except (TypeError, ValueError) as error:
            raise TrackingInputError(f"log_dict({artifact_file!r}): the value is not serialisable ({error})") from None
        self._client.log_dict(self._run_id, dictionary, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._require_run()
        self._client.log_text(self._run_id, text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Store a matplotlib or plotly figure (.png, .svg, .html ...)."""
        self._require_run()
        self._client.log_figure(self._run_id, figure, artifact_file)

    def log_model(
        self,
        model: Any,
        name: str = "model",
        *,
        artifact_path: str | None = None,
        input_example: Any = None,
        signature: Any = None,
        registered_model_name: str | None = None,
        **flavor_kwargs: Any,
    ):
        """Log a scikit-learn estimator or an `mlflow.pyfunc.PythonModel` (MLflow 3: `name=`).

        The signature is inferred from `input_example` when not given. Returns mlflow's ModelInfo
        (`model_uri` is `models:/<model_id>`); with `registered_model_name` a registry version is made.
        """
        self._require_run()
        if artifact_path is not None:
            warnings.warn(
                "log_model(artifact_path=...) is deprecated in MLflow 3; use name=...", DeprecationWarning, stacklevel=2
            )
            name = artifact_path
        active = mlflow.active_run()
        if active is None or active.info.run_id != self._run_id:
            raise TrackingError(
                f"log_model needs run {self._run_id} to be the innermost open run; "
                "log the model before opening child runs or from the child tracker"
            )
        common = {
            "name": name,
            "input_example": input_example,
            "signature": signature,
            "registered_model_name": registered_model_name,
            **flavor_kwargs,
        }
        if _is_sklearn_model(model):
            from mlflow import sklearn as sklearn_flavor

            return sklearn_flavor.log_model(model, run_id=self._run_id, **common)
        from mlflow import pyfunc

        if isinstance(model, pyfunc.PythonModel):
            return pyfunc.log_model(python_model=model, **common)
        raise TrackingInputError(
            f"log_model supports scikit-learn estimators and mlflow.pyfunc.PythonModel, "
            f"got {type(model).__name__}; wrap it in a PythonModel"
        )

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        alias: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        input_example: Any = None,
    ) -> str:
        """Log `model` as in `log_model` (artifact "model") as a new version of registered model `name`,
        with `metadata` as version tags and `alias` pointing at it; returns the version."""
        info = self.log_model(model, name="model", input_example=input_example, registered_model_name=name)
        version = str(info.registered_model_version)
        for key, value in (metadata or {}).items():
            self._client.set_model_version_tag(name, version, key, str(value))
        if alias:
            self._client.set_registered_model_alias(name, alias, version)
        return version

    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, context: str = "training") -> None:
        """Record `frame` as a dataset input of the run (name, source, digest, schema), tagged `context`."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        from mlstack.mlflow_compat import dataset_entity

        self._require_run()
        dataset = mlflow.data.from_pandas(frame, source=source, name=name)
        entry = DatasetInput(dataset_entity(dataset), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
        self._client.log_inputs(self._run_id, datasets=[entry])

    def _require_run(self) -> None:
        if self._run_id is None:
            raise NoActiveRunError("this tracker has no run yet: use it as `with tracker:` or call start_run()")
        if self._ended:
            raise NoActiveRunError(f"run {self._run_id} has already ended")


#: The seeds' name for the same tracker: `MLflowExperimentTracker(name).start_run(run_name, tags)`.
MLflowExperimentTracker = ExperimentTracker


class NestedRunTracker(ExperimentTracker):
    """A child run of the active run (cross-validation folds, grid-search points), in its experiment."""

    def __init__(self, run_name: str | None = None, tags: dict[str, Any] | None = None):
        super().__init__(run_name=run_name, tags=tags)

    def _experiment_for(self, config, parent) -> str:
        if parent is None:
            raise NoActiveRunError(
                "NestedRunTracker needs an open parent run: open it inside "
                "`with ExperimentTracker(...)` or an @mlflow_run function"
            )
        return parent.info.experiment_id


def create_mlflow_run(
    run_name: str | None = None, tags: dict[str, Any] | None = None, experiment_name: str | None = None
) -> ExperimentTracker:
    """`with create_mlflow_run(run_name, tags) as run:` (seed 004): a tracker in the configured experiment."""
    return ExperimentTracker(experiment_name, run_name, tags)


def _is_sklearn_model(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:
        return False
    return isinstance(model, BaseEstimator)
