"""Errors of the tracking library, for both backends: each names what failed, the value, and what to do.

`TrackingInputError` (and its subclasses, `ClearMLConfigError` among them) is the caller's bad input,
refused where it was logged; every other `TrackingError` is a failure of the backend or its server.
"""

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


class SpoolWriteError(MetricsSpooledError):
    """Metric points reached neither the server nor the spool (the disk is full or read-only): they
    are held in this process's memory and sent as soon as the server answers."""

    def __init__(self, held: int, spooled: int, spool_path: Path, cause: BaseException | None, disk: OSError):
        self.held = held
        TrackingError.__init__(
            self,
            f"The MLflow server did not accept metric points ({type(cause).__name__}: {cause}) and the spool "
            f"{spool_path} could not be written ({disk.strerror or disk}): {held} points are held in this "
            f"process's memory and go to the server as soon as it answers; {spooled} points are kept in "
            f"{spool_path}. Free space in {spool_path.parent}: if this process ends first, the {held} points "
            "held in memory are lost.",
        )
        self.points, self.spool_path = spooled, spool_path


class ClearMLConfigError(TrackingInputError):
    """An argument or configuration value of the ClearML client is unusable."""


class ClearMLUnavailableError(TrackingError):
    """The operation needs a ClearML server and none is configured or answering."""


class ClearMLUploadError(TrackingError):
    """Model weights could not be uploaded to the output destination."""


class ClearMLSyncError(TrackingError):
    """An offline session was not imported completely; the next sync imports it again."""
