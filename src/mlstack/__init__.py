"""mlstack: MLflow and ClearML stacks in a box, their bootstrap, and a tracking client library."""

__version__ = "0.1.0"
