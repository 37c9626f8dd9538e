"""MLflow client library of mlstack: configuration, trackers, decorators, queries, registry, spool."""

from mlstack.tracking.errors import (
    ArtifactNotFoundError,
    ExperimentNotFoundError,
    MetricsSpooledError,
    NoActiveRunError,
    ParamConflictError,
    TrackingError,
    TrackingInputError,
)
from mlstack.tracking.mlflow.config import setup_mlflow
from mlstack.tracking.mlflow.decorators import (
    log_artifact_decorator,
    log_metrics_decorator,
    log_params_decorator,
    mlflow_run,
    timed_execution,
)
from mlstack.tracking.mlflow.presets import (
    MLflowBenchmarkTracker,
    MLflowConversionTracker,
    MLflowSweepTracker,
    MLflowTrainingTracker,
)
from mlstack.tracking.mlflow.queries import (
    compare_runs,
    delete_experiment_runs,
    find_mlflow_runs,
    get_best_run,
    get_experiment_summary,
    get_run_by_name,
    load_best_model,
    search_runs,
)
from mlstack.tracking.mlflow.registry import (
    get_model_version_by_alias,
    list_registered_models,
    load_model_by_alias,
    register_best_model,
    set_model_alias,
    transition_model_stage,
)
from mlstack.tracking.mlflow.spool import replay_run_ends, replay_spool
from mlstack.tracking.mlflow.tracker import (
    ExperimentTracker,
    MLflowExperimentTracker,
    NestedRunTracker,
    create_mlflow_run,
)

__all__ = [
    "ArtifactNotFoundError",
    "ExperimentNotFoundError",
    "ExperimentTracker",
    "MLflowBenchmarkTracker",
    "MLflowConversionTracker",
    "MLflowExperimentTracker",
    "MLflowSweepTracker",
    "MLflowTrainingTracker",
    "MetricsSpooledError",
    "NestedRunTracker",
    "NoActiveRunError",
    "ParamConflictError",
    "TrackingError",
    "TrackingInputError",
    "compare_runs",
    "create_mlflow_run",
    "delete_experiment_runs",
    "find_mlflow_runs",
    "get_best_run",
    "get_experiment_summary",
    "get_model_version_by_alias",
    "get_run_by_name",
    "list_registered_models",
    "load_best_model",
    "load_model_by_alias",
    "log_artifact_decorator",
    "log_metrics_decorator",
    "log_params_decorator",
    "mlflow_run",
    "register_best_model",
    "replay_run_ends",
    "replay_spool",
    "search_runs",
    "set_model_alias",
    "setup_mlflow",
    "timed_execution",
    "transition_model_stage",
]
