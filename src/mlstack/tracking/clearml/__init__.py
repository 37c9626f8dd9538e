"""ClearML backend of mlstack.tracking: tracker, comparisons, registry, datasets, pipeline,
scheduling, monitoring and offline sync."""

from mlstack.tracking.clearml.compare import compare_clearml_experiments, compare_models, compare_registered_models
from mlstack.tracking.clearml.offline import SyncReport, sync_offline_sessions
from mlstack.tracking.clearml.tracker import ClearMLTracker
from mlstack.tracking.errors import ClearMLConfigError, ClearMLUnavailableError

__all__ = [
    "ClearMLConfigError",
    "ClearMLTracker",
    "ClearMLUnavailableError",
    "SyncReport",
    "compare_clearml_experiments",
    "compare_models",
    "compare_registered_models",
    "sync_offline_sessions",
]
