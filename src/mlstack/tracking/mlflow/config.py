"""`setup_mlflow`: the single source of MLflow configuration for mlstack.tracking.

Everything comes from `ClientSettings` (environment and `.env`): MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME,
MLFLOW_TRACKING_USERNAME/PASSWORD and the metric pipeline knobs (MLSTACK_METRIC_*). With no tracking
URI configured, runs go to a local sqlite store in the project's state folder (no server needed).
"""

from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass, field

import mlflow
from mlflow import MlflowClient

from mlstack.client_settings import ClientSettings
from mlstack.tracking.environment import use_mlflow_login
from mlstack.tracking.mlflow.buffer import MetricPipeline
from mlstack.tracking.mlflow.spool import MetricSpool, spool_folder
from mlstack.tracking.mlflow.transport import sender_for

logger = logging.getLogger(__name__)


@dataclass
class TrackingConfig:
    """The resolved configuration; one per process, replaced by each setup_mlflow call."""

    settings: ClientSettings
    tracking_uri: str
    experiment_name: str
    is_local: bool
    client: MlflowClient
    _experiment_ids: dict[str, str] = field(default_factory=dict)

    def experiment_id(self, name: str | None = None) -> str:
        """The id of experiment `name` (default: the configured one), created if missing."""
        name = name or self.experiment_name
        if name not in self._experiment_ids:
            self._experiment_ids[name] = _ensure_experiment(self, name)
        return self._experiment_ids[name]


_lock = threading.RLock()
_config: TrackingConfig | None = None
_pipelines: dict[str, MetricPipeline] = {}
_local_store_announced = False


def setup_mlflow(
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    settings: ClientSettings | None = None,
    *,
    local_store_reason: str | None = None,
) -> str:
    """Point mlflow (and every mlstack tracker) at one store and experiment; returns the tracking URI.

    Arguments override `settings` (default: `ClientSettings.load()`). Call it again to switch. With
    `local_store_reason` (why the configured server is not used) the local store is used whatever
    the settings say, and the one notice about the local store gives that reason.
    """
    global _config, _local_store_announced
    settings = settings or ClientSettings.load()
    uri = None if local_store_reason else tracking_uri or settings.mlflow_tracking_uri
    is_local = uri is None
    if is_local:
        settings.state_path.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{settings.state_path / 'mlflow.db'}"
        if not _local_store_announced:
            _local_store_announced = True
            logger.warning(
                "%s: tracking to the local store %s (no server). To use the stack, run `mlstack up` "
                "and `mlstack bootstrap` (which sets MLFLOW_TRACKING_URI in .env).",
                local_store_reason or "MLFLOW_TRACKING_URI is not set",
                uri,
            )
    use_credentials(settings)
    name = experiment_name or settings.mlflow_experiment_name
    with _lock:
        mlflow.set_tracking_uri(uri)
        _config = TrackingConfig(settings, uri, name, is_local, MlflowClient(uri))
        mlflow.set_experiment(experiment_id=_config.experiment_id(name))
    return uri


def use_credentials(settings: ClientSettings) -> None:
    """MLFLOW_TRACKING_USERNAME/PASSWORD of `settings` (from .env) for every MLflow request of this process."""
    if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
        use_mlflow_login(settings.mlflow_tracking_username, settings.mlflow_tracking_password.get_secret_value())


def current_config() -> TrackingConfig:
    """The active configuration, set up from ClientSettings on first use."""
    with _lock:
        if _config is None:
            setup_mlflow()
        return _config


def metric_pipeline(config: TrackingConfig) -> MetricPipeline:
    """The process-wide metric pipeline for the configured store (flushed at interpreter exit)."""
    with _lock:
        pipeline = _pipelines.get(config.tracking_uri)
        if pipeline is None:
            settings = config.settings
            pipeline = MetricPipeline(
                lambda: sender_for(config.tracking_uri),
                MetricSpool(spool_folder(settings), config.tracking_uri),
                capacity=settings.metric_buffer_points,
                flush_interval=settings.metric_flush_interval_seconds,
                flushers=settings.metric_flusher_threads,
                outage_budget=settings.metric_outage_budget_seconds,
            )
            _pipelines[config.tracking_uri] = pipeline
        return pipeline


@atexit.register
def _flush_at_exit() -> None:
    for pipeline in list(_pipelines.values()):
        try:
            pipeline.close()
        except Exception as error:  # noqa: BLE001 - at exit the message is all we can give
            logger.error("%s", error)


def _ensure_experiment(config: TrackingConfig, name: str) -> str:
    experiment = config.client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = (config.settings.state_path / "artifacts").as_uri() if config.is_local else None
    try:
        return config.client.create_experiment(name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:
        experiment = config.client.get_experiment_by_name(name)  # created concurrently by another process
        if experiment is None:
            raise
        return experiment.experiment_id
