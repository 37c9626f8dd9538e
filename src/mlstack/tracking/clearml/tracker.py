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
from mlstack.tracking.clearml.connection import server_problem, use_offline, use_server
from mlstack.tracking.clearml.errors import ClearMLConfigError

#: Tag carried by tasks whose block raised; offline sessions keep it so `sync` can mark them failed.
FAILED_TAG = "mlstack:failed"
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


def _project_settings(cfg: dict) -> dict:
    section = cfg.get("clearml")
    if not isinstance(section, Mapping) or not isinstance(section.get("project"), str) or not section["project"]:
        raise ClearMLConfigError(
            f"cfg has no clearml.project (clearml section: {section!r:.80}): "
            "add `clearml: {project: <project name>}` to the config"
        )
    tags = section.get("tags") or []
    if isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags):
        raise ClearMLConfigError(f"clearml.tags must be a list of strings, got {tags!r}: e.g. tags: [baseline]")
    return dict(section)


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ClearMLConfigError(f"{kind} must be a non-empty string, got {name!r}")
    return name


class ClearMLTracker:
    """Track one stage (`prepare`, `train`, ...) of an ML workflow as a ClearML task.

    `cfg` is the run configuration (dict or DictConfig) with a `clearml` section: `project`
    (required), optional `task_name` (default: the stage), `tags`, `offline` (force offline) and
    `detect_repository` (default false: with clearml 2.1.12 the background git scan can stall
    `close()` for minutes once a process has run a task; set true to record the repository).
    The whole configuration is attached to the task as its "config" configuration object.
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
        project = _project_settings(self.config)
        self.project_name = project["project"]
        self.task_name = project.get("task_name") or stage
        self.tags = [stage, *project.get("tags", []), *(extra_tags or [])]
        self.force_offline = bool(project.get("offline", False))
        self.detect_repository = bool(project.get("detect_repository", False))
        self.settings = settings or Settings.load()
        self.task: Task | None = None
        self.offline = False

    def __enter__(self) -> ClearMLTracker:
        problem = "offline mode requested in clearml.offline" if self.force_offline else server_problem(self.settings)
        self.offline = problem is not None
        if self.offline:
            use_offline(self.settings, problem)
        else:
            use_server(self.settings)
        self.task = Task.init(
            project_name=self.project_name,
            task_name=self.task_name,
            task_type=self.task_type,
            tags=self.tags,
            reuse_last_task_id=False,
            auto_resource_monitoring=False,
            auto_connect_arg_parser=False,
            auto_connect_frameworks={"detect_repository": self.detect_repository},
        )
        self.task.connect_configuration(self.config, name="config")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        task = self._require_task()
        if exc is None:
            task.close()
            return
        reason = f"{exc_type.__name__}: {exc}"
        task.get_logger().report_text("".join(traceback.format_exception(exc_type, exc, tb)))
        if self.offline:
            # Offline sessions keep no status: the tag carries it to the server on sync.
            task.add_tags([FAILED_TAG])
            task.close()
        else:
            task.close()
            task.mark_failed(status_reason=reason, status_message=reason, force=True)

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

        `metadata` (e.g. metrics) is stored as the model's configuration, which offline sessions
        keep, and online also as typed registry metadata.
        """
        _check_name("model_name", model_name)
        path = Path(model_path)
        if not path.is_file():
            raise ClearMLConfigError(f"model file {path} does not exist: save the model before registering it")
        metadata = dict(metadata or {})
        model = OutputModel(task=self._require_task(), name=model_name, tags=[self.stage], config_dict=metadata or None)
        if self.offline:
            # clearml 2.1.12 offline: OutputModel's placeholder lacks `locked`, so update_weights fails
            # asking whether the model is published. A new model never is.
            model._get_base_model().update(locked=False)
        model.update_weights(weights_filename=str(path), auto_delete_file=False)
        if not self.offline:
            for key, value in metadata.items():
                model.set_metadata(key, str(value), v_type=type(value).__name__)
        return model.id
