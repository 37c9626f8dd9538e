"""mlstack.tracking: the experiment-tracking client library.

The MLflow API is re-exported here (`from mlstack.tracking import ExperimentTracker`); the ClearML
API lives in `mlstack.tracking.clearml` and is imported from there.
"""

from mlstack.tracking.mlflow import *  # noqa: F403 - the public API is mlstack.tracking.mlflow.__all__
from mlstack.tracking.mlflow import __all__  # noqa: F401
