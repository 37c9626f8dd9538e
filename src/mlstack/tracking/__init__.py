"""mlstack.tracking: the experiment-tracking client library.

The MLflow API is re-exported here (`from mlstack.tracking import ExperimentTracker`), and so are
the ClearML tracker, comparisons and errors (`from mlstack.tracking import ClearMLTracker`). Those are
loaded from `mlstack.tracking.clearml` on first access, so importing this package does not import
the ClearML SDK; the rest of the ClearML API is imported from `mlstack.tracking.clearml`. `track`
(`MultiTracker`) logs each call to both backends (`mlstack.tracking.multi`).
"""

import importlib

from mlstack.tracking.mlflow import *  # noqa: F403 - the public API is mlstack.tracking.mlflow.__all__
from mlstack.tracking.mlflow import __all__ as _mlflow_names
from mlstack.tracking.multi import MultiTracker, Tracker, track

_CLEARML_NAMES = (
    "ClearMLConfigError",
    "ClearMLTracker",
    "ClearMLUnavailableError",
    "compare_clearml_experiments",
    "compare_models",
    "compare_registered_models",
)

__all__ = [*_mlflow_names, "MultiTracker", "Tracker", "track", *_CLEARML_NAMES]


def __getattr__(name: str):
    if name in _CLEARML_NAMES:
        return getattr(importlib.import_module("mlstack.tracking.clearml"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLEARML_NAMES})
