"""Errors of the ClearML client library: each names the value and what to do."""

from __future__ import annotations

from mlstack.errors import MlstackError


class ClearMLConfigError(MlstackError, ValueError):
    """An argument or configuration value is unusable."""


class ClearMLUnavailableError(MlstackError):
    """The operation needs a ClearML server and none is configured or answering."""


class ClearMLUploadError(MlstackError):
    """Model weights could not be uploaded to the output destination."""


class ClearMLSyncError(MlstackError):
    """An offline session was not imported completely; the next sync imports it again."""
