"""Comparison tables of experiments and registered models, as pandas DataFrames."""

from __future__ import annotations

import math

import pandas as pd
from clearml import Model, Task

from mlstack.settings import Settings
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.clearml.errors import ClearMLConfigError


def _metric_from_scalars(scalars: dict, metric_name: str) -> float:
    """The last value of `metric_name`, as a graph title (any line) or as a line name."""
    if metric_name in scalars:
        return next(iter(scalars[metric_name].values()))["last"]
    for series in scalars.values():
        if metric_name in series:
            return series[metric_name]["last"]
    return math.nan


def _flatten_scalars(scalars: dict) -> dict[str, float]:
    return {f"{title}/{series}": value["last"] for title, lines in scalars.items() for series, value in lines.items()}


def _model_metadata(model: Model) -> dict:
    """Metadata a model was registered with: the registry fields online, else its configuration."""
    metadata = dict(model.config_dict or {})
    metadata.update({key: entry.get("value") for key, entry in (model.get_all_metadata() or {}).items()})
    return metadata


def compare_clearml_experiments(
    project_name: str, metric_name: str = "val_rmse", settings: Settings | None = None
) -> pd.DataFrame:
    """One row per task of the project: id, name, status, tags, `metric_name` and every last scalar.

    Sorted by `metric_name` ascending (tasks without it last).
    """
    require_server(settings or Settings.load())
    rows = []
    for task in Task.get_tasks(project_name=project_name):
        scalars = task.get_last_scalar_metrics()
        rows.append(
            {
                "task_id": task.id,
                "name": task.name,
                "status": str(task.status),
                "tags": list(task.get_tags() or []),
                metric_name: _metric_from_scalars(scalars, metric_name),
                **_flatten_scalars(scalars),
            }
        )
    columns = ["task_id", "name", "status", "tags", metric_name]
    return pd.DataFrame(rows, columns=None if rows else columns).sort_values(
        metric_name, na_position="last", ignore_index=True
    )


def compare_registered_models(
    model_name: str, project_name: str | None = None, max_results: int = 50, settings: Settings | None = None
) -> pd.DataFrame:
    """One row per registered version of `model_name`, newest first, with its metadata as columns."""
    if max_results < 1:
        raise ClearMLConfigError(f"max_results must be at least 1, got {max_results}")
    require_server(settings or Settings.load())
    # query_models matches the name exactly and returns the newest first.
    models = Model.query_models(project_name=project_name, model_name=model_name, max_results=max_results)
    rows = [
        {
            "model_id": model.id,
            "name": model.name,
            "published": model.published,
            "tags": list(model.tags or []),
            "task_id": model.task,
            "url": model.url,
            **_model_metadata(model),
        }
        for model in models
    ]
    return pd.DataFrame(rows, columns=None if rows else ["model_id", "name", "published", "tags", "task_id", "url"])


def compare_models(
    project_name: str, metric_name: str, top_n: int = 5, mode: str = "max", settings: Settings | None = None
) -> pd.DataFrame:
    """The `top_n` registered models of the project by `metric_name` (from model metadata, else
    the producing task's last scalar); `mode` "max" (e.g. f1) or "min" (e.g. rmse)."""
    if mode not in ("max", "min"):
        raise ClearMLConfigError(f"mode must be 'max' or 'min', got {mode!r}")
    if top_n < 1:
        raise ClearMLConfigError(f"top_n must be at least 1, got {top_n}")
    require_server(settings or Settings.load())
    rows = []
    for model in Model.query_models(project_name=project_name):
        metadata = _model_metadata(model)
        value = metadata.get(metric_name)
        if value is None and model.task:
            value = _metric_from_scalars(Task.get_task(task_id=model.task).get_last_scalar_metrics(), metric_name)
        rows.append(
            {
                "model_id": model.id,
                "name": model.name,
                "tags": list(model.tags or []),
                metric_name: float(value) if value is not None else math.nan,
                "metadata": metadata,
            }
        )
    frame = pd.DataFrame(rows, columns=["model_id", "name", "tags", metric_name, "metadata"])
    frame = frame.dropna(subset=[metric_name])
    return frame.sort_values(metric_name, ascending=mode == "min", ignore_index=True).head(top_n)
