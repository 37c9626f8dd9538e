"""Model registry helpers built on aliases (`models:/name@alias`).

Registry stages are deprecated upstream since MLflow 2.9; `transition_model_stage` is kept for the
seeds' users and maps a stage onto an alias of the same name in lower case (Production ->
`production`), recording the stage in the version tag `mlstack.stage`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mlstack.tracking.errors import TrackingInputError
from mlstack.tracking.mlflow.config import current_config
from mlstack.tracking.mlflow.queries import Mode, get_best_run

STAGE_TAG = "mlstack.stage"
_STAGES = {"none": "None", "staging": "Staging", "production": "Production", "archived": "Archived"}


def register_best_model(
    experiment_name: str,
    model_name: str,
    metric: str,
    mode: Mode = "min",
    artifact_name: str = "model",
    alias: str | None = None,
) -> str:
    """Register the model `artifact_name` of the best run by `metric` as a new version; returns it."""
    import mlflow

    best = get_best_run(experiment_name, metric, mode)
    version = mlflow.register_model(f"runs:/{best['run_id']}/{artifact_name}", model_name).version
    if alias:
        set_model_alias(model_name, alias, version)
    return str(version)


def set_model_alias(model_name: str, alias: str, version: str | int) -> None:
    """Point `models:/<model_name>@<alias>` at `version` (moves the alias if another version had it)."""
    current_config().client.set_registered_model_alias(model_name, alias, str(version))


def get_model_version_by_alias(model_name: str, alias: str) -> str:
    return str(current_config().client.get_model_version_by_alias(model_name, alias).version)


def load_model_by_alias(model_name: str, alias: str):
    """Load `models:/<model_name>@<alias>` as a pyfunc model."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")


def list_registered_models(filter_string: str | None = None) -> pd.DataFrame:
    """Every registered model (all pages): name, latest_version, aliases ({alias: version}),
    latest_stage (from the `mlstack.stage` tag), description, last_updated."""
    client = current_config().client
    rows: list[dict[str, Any]] = []
    page_token = None
    while True:
        page = client.search_registered_models(filter_string, max_results=1000, page_token=page_token)
        for model in page:
            latest = max(model.latest_versions or [], key=lambda version: int(version.version), default=None)
            rows.append(
                {
                    "name": model.name,
                    "latest_version": latest.version if latest else None,
                    "latest_stage": _stage_of(client, model.name, latest.version) if latest else None,
                    "aliases": dict(model.aliases or {}),
                    "description": model.description,
                    "last_updated": pd.to_datetime(model.last_updated_timestamp, unit="ms", utc=True),
                }
            )
        page_token = page.token
        if not page_token:
            return pd.DataFrame(
                rows, columns=["name", "latest_version", "latest_stage", "aliases", "description", "last_updated"]
            )


def transition_model_stage(model_name: str, version: str | int, stage: str, archive_existing: bool = True) -> None:
    """Deprecated-stage compatibility: move alias `<stage>` to `version` and tag it `mlstack.stage=<Stage>`.

    With `archive_existing`, the version that held the alias is tagged Archived. Stage `Archived` or
    `None` removes the version's staging/production aliases. Prefer `set_model_alias`.
    """
    canonical = _STAGES.get(stage.lower())
    if canonical is None:
        raise TrackingInputError(f"stage must be one of {sorted(_STAGES.values())}, got {stage!r}")
    client = current_config().client
    version = str(version)
    if canonical in ("Archived", "None"):
        held = client.get_model_version(model_name, version).aliases or []
        for alias in ("staging", "production"):
            if alias in held:
                client.delete_registered_model_alias(model_name, alias)
    else:
        alias = canonical.lower()
        aliases = client.get_registered_model(model_name).aliases or {}
        previous = aliases.get(alias)
        client.set_registered_model_alias(model_name, alias, version)
        if archive_existing and previous is not None and str(previous) != version:
            client.set_model_version_tag(model_name, str(previous), STAGE_TAG, "Archived")
    client.set_model_version_tag(model_name, version, STAGE_TAG, canonical)


def _stage_of(client, model_name: str, version: str) -> str:
    return client.get_model_version(model_name, version).tags.get(STAGE_TAG, "None")
