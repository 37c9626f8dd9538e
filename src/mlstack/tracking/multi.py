"""One run in several backends: `MultiTracker` (made by `track(...)`) sends every call of the `Tracker`
set (mlstack.tracking.base) to each of its trackers, one per configured backend.

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
from typing import TYPE_CHECKING, Any, Self, TypeVar

from mlstack.client_settings import ClientSettings
from mlstack.errors import ConfigError
from mlstack.tracking.base import Status, Tracker
from mlstack.tracking.errors import TrackingError
from mlstack.tracking.mlflow.tracker import ExperimentTracker

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

BACKENDS = ("mlflow", "clearml")
T = TypeVar("T")


def configured_backends(settings: ClientSettings) -> tuple[str, ...]:
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
    settings: ClientSettings | None = None,
    backends: Iterable[str] | None = None,
) -> MultiTracker:
    """A run in each backend (default: `configured_backends`), to use as `with track(...) as run:`.

    MLflow logs where `setup_mlflow` pointed it (from the settings on first use), in `experiment` (default:
    the configured one); ClearML logs to the project `experiment` (default: CLEARML_DEFAULT_PROJECT).
    """
    settings = settings or ClientSettings.load()
    names = check_backends(backends) if backends is not None else configured_backends(settings)
    tags = dict(tags or {})
    trackers: list[Tracker] = []
    for name in names:
        if name == "mlflow":
            trackers.append(ExperimentTracker(experiment, run_name, tags))
        else:
            from mlstack.tracking.clearml.tracker import ClearMLTracker

            config = {"clearml": {"project": experiment or settings.clearml_default_project}}
            trackers.append(ClearMLTracker(config, run_name, tags=tags, settings=settings))
    return MultiTracker(run_name, trackers)


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
    """One run in several backends, a `Tracker` each; each call goes to every backend that has not failed
    in this run."""

    def __init__(self, run_name: str, backends: Iterable[Tracker], parent: MultiTracker | None = None):
        self.run_name = run_name
        self._backends = {backend.name: backend for backend in map(_checked, backends)}
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
        """The tracker of backend `name` while it is live in this run, else None."""
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


def _checked(backend: Any) -> Tracker:
    if not isinstance(backend, Tracker):
        raise TypeError(f"{backend!r} is not a mlstack.tracking.Tracker: a MultiTracker composes Trackers")
    return backend
