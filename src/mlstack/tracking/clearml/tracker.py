"""ClearMLTracker: one ClearML task per pipeline stage, as a context manager.

The task is created on enter (online when a server answers, otherwise offline into the state
folder) and closed on exit; an exception inside the block marks the task failed and propagates.
"""

from __future__ import annotations

import math
import numbers
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clearml import OutputModel, Task

from mlstack.settings import Settings
from mlstack.tracking.clearml.connection import (
    forget_closed_master,
    forget_inherited_master,
    server_problem,
    use_offline,
    use_server,
)
from mlstack.tracking.clearml.errors import ClearMLConfigError, ClearMLUnavailableError
from mlstack.tracking.clearml.offline import FAILED_TAG, SessionLock, sessions_dir
from mlstack.tracking.clearml.registry import set_typed_metadata, upload_weights

TASK_TYPES = tuple(task_type.value for task_type in Task.TaskTypes)


def config_to_dict(cfg: Any) -> dict:
    """A plain dict from a mapping or an OmegaConf DictConfig (omegaconf is imported only then)."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise ClearMLConfigError(
            f"cfg must be a dict or an OmegaConf DictConfig, got {type(cfg).__name__} ({cfg!r:.80}): "
            "pass e.g. {'clearml': {'project': 'housing'}}"
        )
    return dict(cfg)


def _project_settings(cfg: dict, default_project: str) -> dict:
    """The clearml section, with `project` set to `default_project` when the config names none."""
    section = cfg.get("clearml")
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ClearMLConfigError(
            f"cfg's clearml section must be a mapping, got {type(section).__name__} ({section!r:.80}): "
            "e.g. `clearml: {project: <project name>}`"
        )
    section = {"project": default_project, **section} if section.get("project") is None else dict(section)
    if not isinstance(section["project"], str) or not section["project"].strip():
        raise ClearMLConfigError(
            f"clearml.project must be a non-empty string, got {section['project']!r}: "
            "set `clearml: {project: <project name>}`, or leave it out to use CLEARML_DEFAULT_PROJECT"
        )
    tags = section.get("tags") or []
    if isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags):
        raise ClearMLConfigError(f"clearml.tags must be a list of strings, got {tags!r}: e.g. tags: [baseline]")
    return section


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ClearMLConfigError(f"{kind} must be a non-empty string, got {name!r}")
    return name


class ClearMLTracker:
    """Track one stage (`prepare`, `train`, ...) of an ML workflow as a ClearML task.

    `cfg` is the run configuration (dict or DictConfig) with an optional `clearml` section: `project`
    (default: CLEARML_DEFAULT_PROJECT), `task_name` (default: the stage), `tags`, `offline` (force offline) and
    `detect_repository` (default false: with clearml 2.1.12 the background git scan can stall
    `close()` for minutes once a process has run a task; set true to record the repository).
    The whole configuration is attached to the task as its "config" configuration object. Model
    weights are uploaded to `settings.clearml_output_destination` (offline: on `mlstack clearml sync`).
    """

    def __init__(
        self,
        cfg: Any,
        stage: str,
        task_type: str = "training",
        extra_tags: list[str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.config = config_to_dict(cfg)
        self.stage = _check_name("stage", stage)
        if task_type not in TASK_TYPES:
            raise ClearMLConfigError(f"task_type {task_type!r} is not a ClearML task type: use one of {TASK_TYPES}")
        self.task_type = task_type
        self.settings = settings or Settings.load()
        project = _project_settings(self.config, self.settings.clearml_default_project)
        self.project_name = project["project"]
        self.task_name = project.get("task_name") or stage
        self.tags = [stage, *project.get("tags", []), *(extra_tags or [])]
        self.force_offline = bool(project.get("offline", False))
        self.detect_repository = bool(project.get("detect_repository", False))
        self.task: Task | None = None
        self.offline = False
        self._session_lock: SessionLock | None = None

    def __enter__(self) -> ClearMLTracker:
        problem = "offline mode requested in clearml.offline" if self.force_offline else server_problem(self.settings)
        self.offline = problem is not None
        if self.offline:
            use_offline(self.settings, problem)
            self._session_lock = SessionLock(sessions_dir(self.settings))
        else:
            use_server(self.settings)
        forget_inherited_master()
        try:
            self.task = Task.init(
                project_name=self.project_name,
                task_name=self.task_name,
                task_type=self.task_type,
                tags=self.tags,
                reuse_last_task_id=False,
                output_uri=self.settings.clearml_output_destination,  # offline, the SDK records none
                auto_resource_monitoring=False,
                auto_connect_arg_parser=False,
                auto_connect_frameworks={"detect_repository": self.detect_repository},
            )
            if not isinstance(self.task, Task):
                raise ClearMLUnavailableError(
                    f"Task.init returned {type(self.task).__name__}, not a task: this process looks like a "
                    "ClearML worker of another task (CLEARML_PROC_MASTER_ID); nothing would be recorded"
                )
            if self._session_lock:
                self._session_lock.name_session(self.task.id)
            self.task.connect_configuration(self.config, name="config")
        except BaseException:
            self._release_session_lock()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
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

    @property
    def task_id(self) -> str:
        return self._require_task().id

    def _require_task(self) -> Task:
        if self.task is None:
            raise ClearMLConfigError("the tracker has no task yet: use it as `with ClearMLTracker(...) as tracker:`")
        return self.task

    def connect_dict(self, name: str, payload: Mapping[str, Any]) -> dict:
        """Record `payload` as the hyperparameter section `name`; returns the connected dict."""
        _check_name("connect_dict name", name)
        if not isinstance(payload, Mapping):
            raise ClearMLConfigError(f"connect_dict({name!r}) needs a dict of parameters, got {type(payload).__name__}")
        return self._require_task().connect(dict(payload), name=name)

    def log_metrics(self, metrics: Mapping[str, float], series: str, iteration: int = 0) -> None:
        """Report each metric as a scalar: graph = metric name, line = `series` (e.g. "validation")."""
        _check_name("series", series)
        if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
            raise ClearMLConfigError(f"iteration must be a non-negative integer, got {iteration!r}")
        if not isinstance(metrics, Mapping) or not metrics:
            raise ClearMLConfigError(f"metrics must be a non-empty dict of name -> number, got {metrics!r:.80}")
        for name, value in metrics.items():
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                raise ClearMLConfigError(
                    f"metric {name!r} has value {value!r}, which is not a finite number: log a float or int"
                )
        logger = self._require_task().get_logger()
        for name, value in metrics.items():
            logger.report_scalar(title=str(name), series=series, value=float(value), iteration=iteration)

    def log_text(self, message: str) -> None:
        """Append `message` to the task's console log."""
        self._require_task().get_logger().report_text(str(message))

    def upload_artifact(self, name: str, artifact: Any) -> None:
        """Attach a file (Path or an existing path string) or a Python object as artifact `name`."""
        _check_name("artifact name", name)
        if isinstance(artifact, Path) and not artifact.exists():
            raise ClearMLConfigError(f"artifact {name!r}: file {artifact} does not exist: write it before uploading")
        self._require_task().upload_artifact(name, artifact_object=artifact, wait_on_upload=True)

    def register_model(self, model_path: str | Path, model_name: str, metadata: Mapping[str, Any] | None = None) -> str:
        """Register the weights file as a new version of `model_name`; returns the model id.

        Online the weights are uploaded to the output destination before this returns. Offline
        the session keeps a copy, uploaded by `mlstack clearml sync`. `metadata` (e.g. metrics)
        becomes the model's configuration and typed registry metadata (offline: on sync).
        """
        _check_name("model_name", model_name)
        path = Path(model_path)
        if not path.is_file():
            raise ClearMLConfigError(f"model file {path} does not exist: save the model before registering it")
        metadata = dict(metadata or {})
        task = self._require_task()
        model = OutputModel(task=task, name=model_name, tags=[self.stage], config_dict=metadata or None)
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
