"""ClearMLTracker: one ClearML task per pipeline stage (or run), as a context manager; the ClearML `Tracker`.

The task is created on enter (online when a server answers, otherwise offline into the state
folder) and closed on exit; an exception inside the block marks the task failed and propagates.
A child run (`child`) is part of its parent's task (`ClearMLChildRun`).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any, Self

from clearml import OutputModel, Task

from mlstack.client_settings import ClientSettings
from mlstack.tracking import validation
from mlstack.tracking.base import Status, Tracker
from mlstack.tracking.clearml.config import config_to_dict, project_settings
from mlstack.tracking.clearml.connection import server_problem, use_offline, use_server
from mlstack.tracking.clearml.offline import FAILED_TAG, SessionLock, sessions_dir
from mlstack.tracking.clearml.registry import set_typed_metadata, upload_weights
from mlstack.tracking.environment import forget_closed_master, forget_inherited_master
from mlstack.tracking.errors import ClearMLConfigError, ClearMLUnavailableError

if TYPE_CHECKING:
    import pandas as pd

TASK_TYPES = tuple(task_type.value for task_type in Task.TaskTypes)


class RunEndedError(Exception):
    """How a run that ended FAILED or KILLED without an exception is closed in ClearML."""


def _renamed(name: str, value: Any, seed_name: str, seed_value: Any) -> Any:
    """The argument given as `name`, or under the seeds' name for it; exactly one of them."""
    if (value is None) == (seed_value is None):
        raise TypeError(f"pass {name} (or {seed_name}, the seeds' name for it), and only one of them")
    return seed_value if value is None else value


class ClearMLTracker(Tracker):
    """Track one stage (`prepare`, `train`, ...) of an ML workflow as a ClearML task.

    `cfg` is the run configuration (dict or DictConfig) with an optional `clearml` section: `project`
    (default: CLEARML_DEFAULT_PROJECT), `task_name` (default: the stage), `tags`, `offline` (force offline) and
    `detect_repository` (default false: with clearml 2.1.12 the background git scan can stall
    `close()` for minutes once a process has run a task; set true to record the repository).
    The whole configuration is attached to the task as its "config" configuration object. `tags` are
    the run's `key: value` tags (as ExperimentTracker's), task tags `key:value` beside `extra_tags`. Model
    weights are uploaded to `settings.clearml_output_destination` (offline: on `mlstack clearml sync`).
    """

    name = "clearml"

    def __init__(
        self,
        cfg: Any,
        stage: str,
        task_type: str = "training",
        extra_tags: list[str] | None = None,
        settings: ClientSettings | None = None,
        *,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config_to_dict(cfg)
        self.stage = validation.check_name("stage", stage, ClearMLConfigError)
        if task_type not in TASK_TYPES:
            raise ClearMLConfigError(f"task_type {task_type!r} is not a ClearML task type: use one of {TASK_TYPES}")
        self.task_type = task_type
        self.settings = settings or ClientSettings.load()
        project = project_settings(self.config, self.settings.clearml_default_project)
        self.project_name = project["project"]
        self.task_name = project.get("task_name") or stage
        self.tags = [stage, *project.get("tags", []), *(extra_tags or [])]
        self.run_tags = dict(tags or {})
        self.force_offline = bool(project.get("offline", False))
        self.detect_repository = bool(project.get("detect_repository", False))
        self.task: Task | None = None
        self.offline = False
        self._session_lock: SessionLock | None = None
        self._params: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Create the task: on the server when it answers, else offline (`with tracker:` calls this)."""
        validation.checked_tags(self.run_tags, ClearMLConfigError)
        problem = "offline mode requested in clearml.offline" if self.force_offline else server_problem(self.settings)
        self.offline = problem is not None
        if self.offline:
            use_offline(self.settings, problem)
            self._session_lock = SessionLock(sessions_dir(self.settings))
        else:
            use_server(self.settings)
        forget_inherited_master()
        try:
            task = Task.init(
                project_name=self.project_name,
                task_name=self.task_name,
                task_type=self.task_type,
                tags=[*self.tags, *(f"{key}:{value}" for key, value in self.run_tags.items())],
                reuse_last_task_id=False,
                output_uri=self.settings.clearml_output_destination,  # offline, the SDK records none
                auto_resource_monitoring=False,
                auto_connect_arg_parser=False,
                auto_connect_frameworks={"detect_repository": self.detect_repository},
            )
            if not isinstance(task, Task):
                raise ClearMLUnavailableError(
                    f"Task.init returned {type(task).__name__}, not a task: this process looks like a "
                    "ClearML worker of another task (CLEARML_PROC_MASTER_ID); nothing would be recorded"
                )
            if self._session_lock:
                self._session_lock.name_session(task.id)
            task.connect_configuration(self.config, name="config")
        except BaseException:
            self._release_session_lock()
            raise
        self.task = task
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(exc_type, exc, tb)

    def end(self, status: Status = "FINISHED") -> None:
        """Close the task; FAILED or KILLED closes it as failed, naming the status."""
        if self.task is None:
            return
        if status == "FINISHED":
            self._close(None, None, None)
        else:
            error = RunEndedError(f"run {self.stage!r} ended {status}")
            self._close(RunEndedError, error, None)

    def _close(self, exc_type, exc, tb) -> None:
        task = self._require_task()
        try:
            if exc is not None:
                task.get_logger().report_text("".join(traceback.format_exception(exc_type, exc, tb)))
                if self.offline:
                    # Offline sessions keep no status: the tag carries it to the server on sync.
                    task.add_tags([FAILED_TAG])
            # close() skips the flush once the SDK's exit hook has seen a failing exit, and any
            # sys.exit(1) the process caught earlier counts: flush first, so every point is written.
            task.flush(wait_for_uploads=True)
            task.close()
            forget_closed_master()
            if exc is not None and not self.offline:
                reason = f"{exc_type.__name__}: {exc}"
                task.mark_failed(status_reason=reason, status_message=reason, force=True)
        finally:
            self._release_session_lock()

    def _release_session_lock(self) -> None:
        if self._session_lock:
            self._session_lock.release()
            self._session_lock = None

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> ClearMLChildRun:
        return ClearMLChildRun(self, run_name, tags)

    @property
    def task_id(self) -> str:
        return self._require_task().id

    @property
    def run_id(self) -> str | None:
        return self.task.id if self.task is not None else None

    def _require_task(self) -> Task:
        if self.task is None:
            raise ClearMLConfigError("the tracker has no task yet: use it as `with ClearMLTracker(...) as tracker:`")
        return self.task

    # -- logging ---------------------------------------------------------------------------------

    def connect_dict(self, name: str, payload: Mapping[str, Any]) -> dict:
        """Record `payload` as the hyperparameter section `name`; returns the connected dict."""
        validation.check_name("connect_dict name", name, ClearMLConfigError)
        if not isinstance(payload, Mapping):
            raise ClearMLConfigError(f"connect_dict({name!r}) needs a dict of parameters, got {type(payload).__name__}")
        return self._require_task().connect(dict(payload), name=name)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params as the hyperparameter section "params"; a param cannot change its value."""
        self._connect_params("params", params, self._params)

    def _connect_params(self, section: str, params: Mapping[str, Any], logged: dict[str, str]) -> None:
        """Record `params` as the section `section`; `logged` (that run's params so far) grows."""
        new = validation.new_params(params, logged, self.run_id, ClearMLConfigError)
        self.connect_dict(section, params)
        logged.update(new)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int = 0, *, series: str | None = None, iteration: int | None = None
    ) -> None:
        """Report each metric as a scalar at `step`: graph = metric name, line = `series` (e.g. "validation";
        default: the metric name). `iteration` is the seeds' name for `step`."""
        self._report(metrics, step, iteration, series)

    def _report(self, metrics: Mapping[str, float], step: int, iteration: int | None, series: str | None) -> None:
        argument = "step"
        if iteration is not None:
            if step != 0:
                raise TypeError("pass step or iteration (the seeds' name for it), not both")
            step, argument = iteration, "iteration"
        step = validation.check_step(step, argument, ClearMLConfigError)
        if series is not None:
            validation.check_name("series", series, ClearMLConfigError)
        checked = validation.checked_metrics(metrics, ClearMLConfigError)
        logger = self._require_task().get_logger()
        for name, value in checked.items():
            logger.report_scalar(title=name, series=series or name, value=value, iteration=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Add task tags `key:value`."""
        validation.checked_tags(tags, ClearMLConfigError)
        self._require_task().add_tags([f"{key}:{value}" for key, value in tags.items()])

    def log_text(self, message: str) -> None:
        """Append `message` to the task's console log."""
        self._require_task().get_logger().report_text(str(message))

    def upload_artifact(self, name: str, artifact: Any) -> None:
        """Attach a file (Path or an existing path string) or a Python object as artifact `name`."""
        validation.check_name("artifact name", name, ClearMLConfigError)
        if isinstance(artifact, Path) and not artifact.exists():
            raise ClearMLConfigError(f"artifact {name!r}: file {artifact} does not exist: write it before uploading")
        self._require_task().upload_artifact(name, artifact_object=artifact, wait_on_upload=True)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Upload the file as artifact `<artifact_path>/<file name>`."""
        path = Path(local_path)
        self.upload_artifact("/".join(part for part in (artifact_path, path.name) if part), path)

    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, context: str = "training") -> None:
        """Record the data version as the section "dataset <name>": name, source, context, rows and the
        digest MLflow gives the same frame; with a server, also as a ClearML Dataset version (its id there)."""
        self.connect_dict(f"dataset {name}", self._dataset_version(frame, name, source, context))

    def _dataset_version(self, frame: pd.DataFrame, name: str, source: str, context: str) -> dict[str, Any]:
        import mlflow.data

        version = {
            "name": name,
            "source": source,
            "context": context,
            "rows": len(frame),
            "digest": mlflow.data.from_pandas(frame, source=source, name=name).digest,
        }
        if not self.offline:
            from mlstack.tracking.clearml.datasets import create_dataset_version

            with TemporaryDirectory() as folder:
                path = Path(folder) / f"{name}.csv"
                frame.to_csv(path, index=False)
                version["clearml_dataset_id"] = create_dataset_version(
                    name, self.project_name, [path], metadata=version, settings=self.settings
                )
        return version

    # -- models ----------------------------------------------------------------------------------

    def register_model(
        self,
        model: Any = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        alias: str | None = None,
        input_example: Any = None,
        model_path: str | Path | None = None,
        model_name: str | None = None,
    ) -> str:
        """Register `model` (a weights file, or an object saved with joblib) as a new version of `name`;
        returns the model id. `model_path` and `model_name` are the seeds' names for `model` and `name`.

        Online the weights are uploaded to the output destination before this returns. Offline
        the session keeps a copy, uploaded by `mlstack clearml sync`. `metadata` (e.g. metrics), and
        `alias` under "alias", become the model's configuration and typed registry metadata (offline: on
        sync). `input_example` is MLflow's: ClearML keeps none.
        """
        model = _renamed("model", model, "model_path", model_path)
        name = validation.check_name("model_name", _renamed("name", name, "model_name", model_name), ClearMLConfigError)
        metadata = {**(metadata or {}), **({"alias": alias} if alias else {})}
        if isinstance(model, str | Path):
            return self._register_weights(Path(model), name, metadata)
        import joblib

        with TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.joblib"
            joblib.dump(model, path)
            return self._register_weights(path, name, metadata)

    def _register_weights(self, path: Path, name: str, metadata: dict[str, Any]) -> str:
        if not path.is_file():
            raise ClearMLConfigError(f"model file {path} does not exist: save the model before registering it")
        task = self._require_task()
        model = OutputModel(task=task, name=name, tags=[self.stage], config_dict=metadata or None)
        if self.offline:
            # clearml 2.1.12 offline: OutputModel's placeholder lacks `locked`, so update_weights fails
            # asking whether the model is published. A new model never is.
            model._get_base_model().update(locked=False)
            model.update_weights(weights_filename=str(path), auto_delete_file=False)
            # The SDK writes registered models to the session's task.json only on the task's next
            # edit: make one now, so the session of a process killed later still has the model.
            task.add_tags([])
            return model.id
        upload_weights(model, path, self.settings.clearml_output_destination)
        set_typed_metadata(model, metadata)
        return model.id


class ClearMLChildRun(Tracker):
    """A child run inside its parent's task (ClearML keeps one task per process open at a time): its
    metrics are lines (series) named after it, its params, tags and datasets hyperparameter sections
    prefixed with its name, its artifacts a folder of that name; its own children are its parent's."""

    name = "clearml"

    def __init__(self, parent: ClearMLTracker, run_name: str, tags: Mapping[str, Any] | None = None):
        self.parent = parent
        self.run_name = run_name
        self.tags = dict(tags or {})
        self._params: dict[str, str] = {}

    @property
    def run_id(self) -> str | None:
        return self.parent.run_id

    @property
    def offline(self) -> bool:
        return self.parent.offline

    def start(self) -> Self:
        if self.tags:
            self.set_tags(self.tags)
        return self

    def end(self, status: Status = "FINISHED") -> None:
        """The task stays open (it is the parent's); a run that did not finish says so in its log."""
        if status != "FINISHED":
            self.parent.log_text(f"run {self.run_name!r} ended {status}")

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> ClearMLChildRun:
        return ClearMLChildRun(self.parent, run_name, tags)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.parent._connect_params(f"{self.run_name} params", params, self._params)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.parent._report(metrics, step, None, self.run_name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        validation.checked_tags(tags, ClearMLConfigError)
        self.parent.connect_dict(f"{self.run_name} tags", tags)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self.parent.log_artifact(local_path, "/".join(part for part in (self.run_name, artifact_path) if part))

    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, context: str = "training") -> None:
        version = self.parent._dataset_version(frame, name, source, context)
        self.parent.connect_dict(f"{self.run_name} dataset {name}", version)

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        alias: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        input_example: Any = None,
    ) -> str:
        return self.parent.register_model(model, name, metadata, alias=alias, input_example=input_example)
