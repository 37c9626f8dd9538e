"""mlstack.tracking: the experiment-tracking client library.

`Tracker` (mlstack.tracking.base) is one run in one backend, in the signatures both backends
implement: the MLflow tracker (`ExperimentTracker`, with the rest of the MLflow API re-exported here)
and the ClearML tracker (`from mlstack.tracking import ClearMLTracker`). `track` (`MultiTracker`) logs
each call to several backends (mlstack.tracking.multi). The library reads `ClientSettings` (the
environment and the project's `.env`); errors of both backends live in mlstack.tracking.errors.

The ClearML tracker and comparisons are loaded from `mlstack.tracking.clearml` on first access, so
importing this package does not import the ClearML SDK; the rest of the ClearML API is imported from
`mlstack.tracking.clearml`.
"""

import importlib

from mlstack.client_settings import ClientSettings
from mlstack.tracking.base import Tracker
from mlstack.tracking.errors import ClearMLConfigError, ClearMLUnavailableError
from mlstack.tracking.mlflow import *  # noqa: F403 - the public API is mlstack.tracking.mlflow.__all__
from mlstack.tracking.mlflow import __all__ as _mlflow_names
from mlstack.tracking.multi import MultiTracker, track

_CLEARML_NAMES = ("ClearMLTracker", "compare_clearml_experiments", "compare_models", "compare_registered_models")

__all__ = [
    *_mlflow_names,
    "ClearMLConfigError",
    "ClearMLUnavailableError",
    "ClientSettings",
    "MultiTracker",
    "Tracker",
    "track",
    *_CLEARML_NAMES,
]


def __getattr__(name: str):
    if name in _CLEARML_NAMES:
        return getattr(importlib.import_module("mlstack.tracking.clearml"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLEARML_NAMES})
