"""One tracker for both backends: the `Tracker` protocol, its MLflow and ClearML adapters, and
`MultiTracker` (made by `track(...)`), which sends every call to each configured backend.

Which backends: MLSTACK_TRACKERS (comma-separated: mlflow, clearml). Unset, both are on, since each
has somewhere to write without a server: MLflow writes to MLFLOW_TRACKING_URI or the local store
in the state folder (see `setup_mlflow`), ClearML to its server when its credentials are set and it
answers, otherwise to offline sessions that `mlstack clearml sync` uploads later.

A failure in one backend never stops the others. Its first exception is logged as a warning, and
the backend is set aside for the rest of the run (the calls that follow would fail the same way,
or wait out a dead server's retries) and its run is ended FAILED; the other backends still get
every call. `failures` lists what failed, and the run's end sums it up in one warning. Bad input
(a NaN, a changed param, an invalid name) is the caller's mistake, not a backend failure: it is
raised, as either tracker alone raises it, once every backend has had the call.

ClearML keeps one task per process open at a time, so a child run (`child(...)`) is a nested run
in MLflow but part of its parent's task in ClearML: its metrics are lines (series) named after
it and its params a hyperparameter section named after it. The ClearML SDK is imported only when
the clearml backend is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar

from mlstack.errors import ConfigError
from mlstack.settings import Settings
from mlstack.tracking.mlflow.config import current_config
from mlstack.tracking.mlflow.errors import TrackingError, TrackingInputError
from mlstack.tracking.mlflow.registry import set_model_alias
from mlstack.tracking.mlflow.tracker import ExperimentTracker, NestedRunTracker

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

Status = Literal["FINISHED", "FAILED", "KILLED"]
BACKENDS = ("mlflow", "clearml")
T = TypeVar("T")


class Tracker(Protocol):
    """What a backend does for one run. `input_errors` are the exceptions that mean bad input."""

    name: str
    input_errors: tuple[type[Exception], ...]

    @property
    def run_id(self) -> str | None: ...

    def start(self) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, context: str) -> None: ...

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        alias: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        input_example: Any = None,
    ) -> str: ...

    def child(self, run_name: str, tags: Mapping[str, Any]) -> Tracker: ...

    def end(self, status: Status = "FINISHED") -> None: ...


def configured_backends(settings: Settings) -> tuple[str, ...]:
    """The backends MLSTACK_TRACKERS names (comma-separated), in its order; unset or empty: all of them."""
    value = settings.trackers
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    return check_backends(names, source=f"MLSTACK_TRACKERS={value!r}") if names else BACKENDS


def check_backends(names: Iterable[str], source: str = "backends") -> tuple[str, ...]:
    """`names` without repeats, in order; an unknown or missing name raises ConfigError naming the choices."""
    names = tuple(dict.fromkeys(names))
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise ConfigError(
            f"{source}: {', '.join(map(repr, unknown)) or 'no backend'} is not a tracking backend; "
            f"name one or more of {', '.join(BACKENDS)}, comma-separated (e.g. MLSTACK_TRACKERS=mlflow,clearml)"
        )
    return names


def track(
    run_name: str,
    experiment: str | None = None,
    tags: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    backends: Iterable[str] | None = None,
) -> MultiTracker:
    """A run in each backend (default: `configured_backends`), to use as `with track(...) as run:`.

    MLflow logs where `setup_mlflow` pointed it (from Settings on first use), in `experiment` (default:
    the configured one); ClearML logs to the project `experiment` (default: CLEARML_DEFAULT_PROJECT).
    """
    settings = settings or Settings.load()
    names = check_backends(backends) if backends is not None else configured_backends(settings)
    tags = dict(tags or {})
    adapters: list[Tracker] = []
    for name in names:
        if name == "mlflow":
            adapters.append(MLflowBackend(ExperimentTracker(experiment, run_name, tags)))
        else:
            adapters.append(ClearMLBackend(run_name, experiment or settings.clearml_default_project, tags, settings))
    return MultiTracker(run_name, adapters)


@dataclass
class BackendFailure:
    backend: str
    run_name: str
    call: str
    error: BaseException

    def __str__(self) -> str:
        error = f"{type(self.error).__name__}: {self.error}"
        return f"{self.backend} failed in run {self.run_name!r} at {self.call}: {error}"


class MultiTracker:
    """One run in several backends; each call goes to every backend that has not failed in this run."""

    def __init__(self, run_name: str, backends: Iterable[Tracker], parent: MultiTracker | None = None):
        self.run_name = run_name
        self._backends = {backend.name: backend for backend in backends}
        self._live = dict(self._backends)
        self._parent = parent
        self.failures: list[BackendFailure] = []
        self._ended = False

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.end("FINISHED" if exc is None else "FAILED")

    def start(self) -> Self:
        """Start the run in every backend; raises when it starts in none, or on bad input (a run that
        started elsewhere is then ended FAILED)."""
        try:
            self._dispatch("start", lambda backend: backend.start())
        except Exception:
            self.end("FAILED")
            raise
        if not self._live:
            self._ended = True
            raise TrackingError(
                f"run {self.run_name!r} could not start in any backend: " + "; ".join(map(str, self.failures))
            )
        return self

    def end(self, status: Status = "FINISHED") -> None:
        """End the run: `status` where every call went through, FAILED where the backend failed."""
        if self._ended:
            return
        self._ended = True
        for backend in self._backends.values():
            live = backend.name in self._live
            try:
                backend.end(status if live else "FAILED")
            except Exception as error:  # noqa: BLE001 - one backend's end must not skip the others'
                if live:
                    self._set_aside(backend, f"end({status})", error)
                else:
                    self.failures.append(BackendFailure(backend.name, self.run_name, "end(FAILED)", error))
        if self.failures:
            kept = f"; every call reached {', '.join(self._live)}" if self._live else ""
            logger.warning("run %r ended with %s%s", self.run_name, "; ".join(map(str, self.failures)), kept)

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> MultiTracker:
        """A child run in each backend still live here (start it with `with`); a backend that fails in
        the child is set aside here too."""
        children = self._dispatch(f"child({run_name!r})", lambda backend: backend.child(run_name, dict(tags or {})))
        return MultiTracker(run_name, children.values(), parent=self)

    # -- logging ---------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._dispatch("log_params", lambda backend: backend.log_params(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self._dispatch(f"log_metrics(step={step})", lambda backend: backend.log_metrics(metrics, step))

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.log_metrics({key: value}, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._dispatch("set_tags", lambda backend: backend.set_tags(tags))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        self._dispatch(f"log_artifact({path.name!r})", lambda backend: backend.log_artifact(path, artifact_path))

    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, context: str = "training") -> None:
        """Record the data version: an MLflow dataset input; in ClearML a Dataset when its server answers,
        offline the dataset's digest and size as parameters."""
        self._dispatch(f"log_dataset({name!r})", lambda backend: backend.log_dataset(frame, name, source, context))

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        alias: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        input_example: Any = None,
    ) -> dict[str, str]:
        """Register `model` as a new version of `name` in each backend; returns {backend: version or model id}.

        MLflow logs the estimator (or `mlflow.pyfunc.PythonModel`) with its flavour and points `alias` at
        the new version; ClearML uploads it as a joblib file (or takes a weights file path) with
        `metadata` and the alias in its metadata.
        """
        return self._dispatch(
            f"register_model({name!r})",
            lambda backend: backend.register_model(
                model, name, alias=alias, metadata=metadata, input_example=input_example
            ),
        )

    # -- state -----------------------------------------------------------------------------------

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends that still get calls in this run."""
        return tuple(self._live)

    def backend(self, name: str) -> Tracker | None:
        """The adapter of backend `name` while it is live in this run, else None."""
        return self._live.get(name)

    @property
    def run_ids(self) -> dict[str, str | None]:
        """{backend: its run id (MLflow) or task id (ClearML)}, failed backends included."""
        return {name: backend.run_id for name, backend in self._backends.items()}

    # -- failure isolation -----------------------------------------------------------------------

    def _dispatch(self, call: str, action: Callable[[Tracker], T]) -> dict[str, T]:
        results: dict[str, T] = {}
        bad_input: Exception | None = None
        for backend in list(self._live.values()):
            try:
                results[backend.name] = action(backend)
            except backend.input_errors as error:
                bad_input = bad_input or error
            except Exception as error:  # noqa: BLE001 - any backend failure is isolated and reported
                self._set_aside(backend, call, error)
        if bad_input is not None:
            raise bad_input
        return results

    def _set_aside(self, backend: Tracker, call: str, error: Exception) -> None:
        failure = BackendFailure(backend.name, self.run_name, call, error)
        self.failures.append(failure)
        del self._live[backend.name]
        others = f"; {', '.join(self._live)} keeps logging" if self._live else ""
        logger.warning("%s; it gets no more calls in this run%s", failure, others)
        if self._parent is not None:
            self._parent._child_failed(failure)

    def _child_failed(self, failure: BackendFailure) -> None:
        if self._live.pop(failure.backend, None) is not None:
            self.failures.append(failure)
            if self._parent is not None:
                self._parent._child_failed(failure)


class MLflowBackend:
    """`Tracker` over an `ExperimentTracker`: metrics keep its non-blocking pipeline (and its spool)."""

    name = "mlflow"
    input_errors: tuple[type[Exception], ...] = (TrackingInputError,)

    def __init__(self, tracker: ExperimentTracker):
        self.tracker = tracker

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id

    def start(self) -> None:
        self.tracker.start_run()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.tracker.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.tracker.log_metrics(dict(metrics), step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tracker.set_tags(dict(tags))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.tracker.log_artifact(path, artifact_path)

    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, context: str) -> None:
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        dataset = mlflow.data.from_pandas(frame, source=source, name=name)
        entry = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
        current_config().client.log_inputs(self.tracker.run_id, datasets=[entry])

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        alias: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        input_example: Any = None,
    ) -> str:
        info = self.tracker.log_model(model, name="model", input_example=input_example, registered_model_name=name)
        version = str(info.registered_model_version)
        client = current_config().client
        for key, value in (metadata or {}).items():
            client.set_model_version_tag(name, version, key, str(value))
        if alias:
            set_model_alias(name, alias, version)
        return version

    def child(self, run_name: str, tags: Mapping[str, Any]) -> MLflowBackend:
        return MLflowBackend(NestedRunTracker(run_name, dict(tags)))

    def end(self, status: Status = "FINISHED") -> None:
        self.tracker.end_run(status)


class RunEndedError(Exception):
    """How a run that ended FAILED or KILLED without an exception is closed in ClearML."""


class ClearMLBackend:
    """`Tracker` over a `ClearMLTracker` (offline when no ClearML server answers).

    Top-level metrics are graphs with one line named like the metric; a child run shares its parent's
    task (see the module docstring).
    """

    name = "clearml"

    def __init__(
        self,
        run_name: str,
        project: str,
        tags: Mapping[str, Any],
        settings: Settings,
        parent: ClearMLBackend | None = None,
    ):
        from mlstack.tracking.clearml.errors import ClearMLConfigError

        self.input_errors: tuple[type[Exception], ...] = (ClearMLConfigError,)
        self.run_name = run_name
        self.project = project
        self.tags = dict(tags)
        self.settings = settings
        self.parent = parent
        self.tracker = parent.tracker if parent else None

    @property
    def run_id(self) -> str | None:
        return self.tracker.task.id if self.tracker is not None and self.tracker.task is not None else None

    @property
    def offline(self) -> bool:
        return self.tracker is not None and self.tracker.offline

    def start(self) -> None:
        if self.parent is not None:
            if self.tags:
                self._connect("tags", self.tags)
            return
        from mlstack.tracking.clearml.tracker import ClearMLTracker

        cfg = {"clearml": {"project": self.project}}
        tags = [f"{key}:{value}" for key, value in self.tags.items()]
        tracker = ClearMLTracker(cfg, self.run_name, extra_tags=tags, settings=self.settings)
        tracker.__enter__()
        self.tracker = tracker

    def _section(self, kind: str) -> str:
        """Hyperparameter section of this run's `kind` of values (a child's are prefixed with its name)."""
        return kind if self.parent is None else f"{self.run_name} {kind}"

    def _connect(self, kind: str, values: Mapping[str, Any]) -> None:
        self.tracker.connect_dict(self._section(kind), dict(values))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._connect("params", params)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if self.parent is not None:
            self.tracker.log_metrics(metrics, series=self.run_name, iteration=step)
            return
        for key, value in metrics.items():
            self.tracker.log_metrics({key: value}, series=key, iteration=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.parent is not None:
            self._connect("tags", tags)
        else:
            self.tracker.task.add_tags([f"{key}:{value}" for key, value in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        name = "/".join(part for part in (self._prefix(), artifact_path, path.name) if part)
        self.tracker.upload_artifact(name, path)

    def _prefix(self) -> str | None:
        return None if self.parent is None else self.run_name

    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, context: str) -> None:
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
                    name, self.project, [path], metadata=version, settings=self.settings
                )
        self._connect(f"dataset {name}", version)

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        alias: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        input_example: Any = None,
    ) -> str:
        metadata = {**(metadata or {}), **({"alias": alias} if alias else {})}
        if isinstance(model, str | Path):
            return self.tracker.register_model(model, name, metadata)
        import joblib

        with TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.joblib"
            joblib.dump(model, path)
            return self.tracker.register_model(path, name, metadata)

    def child(self, run_name: str, tags: Mapping[str, Any]) -> ClearMLBackend:
        return ClearMLBackend(run_name, self.project, tags, self.settings, parent=self)

    def end(self, status: Status = "FINISHED") -> None:
        if self.tracker is None:
            return
        if self.parent is not None:
            if status != "FINISHED":
                self.tracker.log_text(f"run {self.run_name!r} ended {status}")
            return
        if status == "FINISHED":
            self.tracker.__exit__(None, None, None)
        else:
            error = RunEndedError(f"run {self.run_name!r} ended {status}")
            self.tracker.__exit__(RunEndedError, error, None)
