"""MLflow bootstrap: the client settings users need, written to .env."""

from __future__ import annotations

from mlstack.bootstrap.steps import Outcome, Step, StepResult
from mlstack.envfile import read_env, update_env
from mlstack.settings import Settings


def write_client_settings(settings: Settings) -> StepResult:
    """MLFLOW_TRACKING_URI in .env, pointing at the server as the host sees it."""
    wanted = {"MLFLOW_TRACKING_URI": settings.mlflow_url}
    current = read_env(settings.env_file)
    if all(current.get(key) == value for key, value in wanted.items()):
        return StepResult("MLflow client settings", Outcome.PRESENT, settings.mlflow_url)
    update_env(settings.env_file, wanted)
    outcome = Outcome.UPDATED if "MLFLOW_TRACKING_URI" in current else Outcome.CREATED
    return StepResult("MLflow client settings", outcome, f"MLFLOW_TRACKING_URI={settings.mlflow_url} in .env")


CLIENT_STEPS = (Step("MLflow client settings", write_client_settings),)
