"""The MLflow tracker's errors, under their old import path: they live in mlstack.tracking.errors."""

from mlstack.tracking.errors import (
    ArtifactNotFoundError,
    ExperimentNotFoundError,
    MetricsSpooledError,
    NoActiveRunError,
    ParamConflictError,
    SpoolWriteError,
    TrackingError,
    TrackingInputError,
)

__all__ = [
    "ArtifactNotFoundError",
    "ExperimentNotFoundError",
    "MetricsSpooledError",
    "NoActiveRunError",
    "ParamConflictError",
    "SpoolWriteError",
    "TrackingError",
    "TrackingInputError",
]
