"""`Tracker`: one run in one backend, in the one set of signatures every backend implements.

The MLflow tracker (`ExperimentTracker`) and the ClearML tracker (`ClearMLTracker`) are Trackers, each
with its own calls besides; `MultiTracker` sends each call of this set to several of them. Bad input
(an invalid name, NaN, a changed param) raises one of `input_errors`, the same input in every backend
(mlstack.tracking.validation); any other exception is a failure of the backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from mlstack.tracking.errors import TrackingInputError

if TYPE_CHECKING:
    import pandas as pd

Status = Literal["FINISHED", "FAILED", "KILLED"]


class Tracker(ABC):
    """One run: start it (or `with tracker:`), log to it, end it. Leaving the block ends the run
    FINISHED, or FAILED when an exception escapes (the exception propagates)."""

    #: The backend's name ("mlflow", "clearml").
    name: ClassVar[str]
    #: The exceptions that mean the caller's input was bad, not that the backend failed.
    input_errors: ClassVar[tuple[type[Exception], ...]] = (TrackingInputError,)

    @property
    @abstractmethod
    def run_id(self) -> str | None:
        """The backend's id of the run (ClearML: its task), None before the start."""

    @abstractmethod
    def start(self) -> Self:
        """Open the run in the backend; returns self."""

    @abstractmethod
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params; a param cannot change its value within a run."""

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Record each metric's value at `step` (a non-negative integer)."""

    @abstractmethod
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tag the run with `key: value` pairs."""

    @abstractmethod
    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Store the file `local_path` with the run, in the folder `artifact_path`."""

    @abstractmethod
    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, context: str = "training") -> None:
        """Record the data version `frame` was (named, where it came from, what it was used for)."""

    @abstractmethod
    def register_model(
        self,
        model: Any,
        name: str,
        *,
        alias: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        input_example: Any = None,
    ) -> str:
        """Register `model` as a new version of `name`, `alias` pointing at it; returns the backend's
        version (MLflow) or model id (ClearML)."""

    @abstractmethod
    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> Tracker:
        """A child run of this one, not started yet (start it with `with`)."""

    @abstractmethod
    def end(self, status: Status = "FINISHED") -> None:
        """End the run with `status`; a run that never started is left alone."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.end("FINISHED" if exc is None else "FAILED")
