"""The ClearML client's errors, under their old import path: they live in mlstack.tracking.errors."""

from mlstack.tracking.errors import ClearMLConfigError, ClearMLSyncError, ClearMLUnavailableError, ClearMLUploadError

__all__ = ["ClearMLConfigError", "ClearMLSyncError", "ClearMLUnavailableError", "ClearMLUploadError"]
