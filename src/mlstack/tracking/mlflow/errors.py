"""Errors of the MLflow tracking client: each names what failed, the value, and what to do."""

from __future__ import annotations

from pathlib import Path

from mlstack.errors import MlstackError


class TrackingError(MlstackError):
    """Base class of mlstack.tracking errors."""


class TrackingInputError(TrackingError, ValueError):
    """A key or value the server would reject (or silently mangle), refused where it was logged."""


class ParamConflictError(TrackingInputError):
    """A param was logged twice in one run with different values (MLflow params are immutable)."""


class ArtifactNotFoundError(TrackingInputError, FileNotFoundError):
    """A file or folder given to log_artifact(s) does not exist."""


class NoActiveRunError(TrackingError):
    """A logging call or decorator ran outside any run."""


class ExperimentNotFoundError(TrackingError, LookupError):
    """A query named an experiment the tracking server does not have."""


class MetricsSpooledError(TrackingError):
    """Metric points could not reach the server; they were written to a local spool file instead."""

    def __init__(self, points: int, spool_path: Path, cause: BaseException | None):
        self.points = points
        self.spool_path = spool_path
        reason = f" ({type(cause).__name__}: {cause})" if cause else ""
        super().__init__(
            f"The MLflow server did not accept metric points{reason}: {points} points are kept in "
            f"{spool_path}. Nothing was dropped; when the server is reachable run `mlstack sync` "
            "(mlstack.tracking.replay_spool) to send them."
        )
