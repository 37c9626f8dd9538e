"""Comparison tables of experiments and registered models, as pandas DataFrames."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

import pandas as pd
from clearml import Model, Task

from mlstack.client_settings import ClientSettings
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.errors import ClearMLConfigError

PREFERRED_SERIES = "validation"

# Parsers for the types Model.set_metadata records (it stores str(value); other types become "None").
_METADATA_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "bool": lambda text: {"true": True, "false": False}[text.strip().lower()],
    "str": str,
    "basestring": str,
    "list": lambda text: list(ast.literal_eval(text)),
    "tuple": lambda text: tuple(ast.literal_eval(text)),
    "dict": lambda text: dict(ast.literal_eval(text)),
}


def _metric_from_scalars(scalars: dict, metric_name: str, series: str | None, source: str) -> float:
    """The last value of the line of `scalars` ({graph: {line: {"last", ...}}}) that
    `compare_clearml_experiments` documents; `source` names the task in errors."""
    if series is not None:
        return scalars.get(metric_name, {}).get(series, {}).get("last", math.nan)
    if metric_name in scalars:
        lines = scalars[metric_name]
        if len(lines) == 1:
            return next(iter(lines.values()))["last"]
        for preferred in (metric_name, PREFERRED_SERIES):
            if preferred in lines:
                return lines[preferred]["last"]
        raise ClearMLConfigError(
            f"{source}: graph {metric_name!r} has lines {sorted(lines)}: name one with series='<line>' "
            f"or metric_name='{metric_name}/<line>'"
        )
    flattened = _flatten_scalars(scalars)
    if metric_name in flattened:
        return flattened[metric_name]
    graphs = sorted(title for title, lines in scalars.items() if metric_name in lines)
    if len(graphs) > 1:
        raise ClearMLConfigError(
            f"{source}: line {metric_name!r} is in several graphs {[f'{title}/{metric_name}' for title in graphs]}: "
            "pass one of them as metric_name"
        )
    return scalars[graphs[0]][metric_name]["last"] if graphs else math.nan


def _flatten_scalars(scalars: dict) -> dict[str, float]:
    return {f"{title}/{series}": value["last"] for title, lines in scalars.items() for series, value in lines.items()}


def _parse_metadata_value(parse: Callable[[str], Any], text: str) -> Any:
    """`text` in its recorded type; the text itself when it does not parse as that type."""
    try:
        return parse(text)
    except (ValueError, TypeError, SyntaxError, KeyError):
        return text


def _model_metadata(model: Model) -> dict:
    """Metadata a model was registered with, typed: registry entries parsed back to the type they were
    recorded with; the configuration (all an offline session keeps) fills in keys the registry lacks
    and values whose type it did not record (e.g. numpy numbers, recorded as type "None")."""
    metadata = dict(model.config_dict or {})
    for key, entry in (model.get_all_metadata() or {}).items():
        parse = _METADATA_PARSERS.get(entry.get("type"))
        if parse is None:
            metadata.setdefault(key, entry.get("value"))
        else:
            metadata[key] = _parse_metadata_value(parse, entry.get("value"))
    return metadata


def compare_clearml_experiments(
    project_name: str, metric_name: str = "val_rmse", series: str | None = None, settings: ClientSettings | None = None
) -> pd.DataFrame:
    """One row per task of the project: id, name, status, tags, `metric_name` and every last scalar
    (as "graph/line" columns), sorted by `metric_name` ascending (tasks without it last).

    The `metric_name` column holds the last value of one reported line:
    1. `series` given: line `series` of graph `metric_name`;
    2. `metric_name` is a graph: its only line, else its line named `metric_name`, else its
       "validation" line;
    3. `metric_name` is "graph/line", as the flattened columns are named;
    4. `metric_name` is a line of exactly one graph (e.g. graph "Metrics", line "f1").
    NaN when a task reported no such line; ClearMLConfigError naming the candidates when several
    match and none is preferred.
    """
    require_server(settings or ClientSettings.load())
    rows = []
    for task in Task.get_tasks(project_name=project_name):
        scalars = task.get_last_scalar_metrics()
        rows.append(
            {
                "task_id": task.id,
                "name": task.name,
                "status": str(task.status),
                "tags": list(task.get_tags() or []),
                metric_name: _metric_from_scalars(scalars, metric_name, series, f"task {task.name!r} ({task.id})"),
                **_flatten_scalars(scalars),
            }
        )
    columns = ["task_id", "name", "status", "tags", metric_name]
    return pd.DataFrame(rows, columns=None if rows else columns).sort_values(
        metric_name, na_position="last", ignore_index=True
    )


def compare_registered_models(
    model_name: str, project_name: str | None = None, max_results: int = 50, settings: ClientSettings | None = None
) -> pd.DataFrame:
    """One row per registered version of `model_name`, newest first, with its metadata as columns."""
    if max_results < 1:
        raise ClearMLConfigError(f"max_results must be at least 1, got {max_results}")
    require_server(settings or ClientSettings.load())
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
    project_name: str,
    metric_name: str,
    top_n: int = 5,
    mode: str = "max",
    series: str | None = None,
    settings: ClientSettings | None = None,
) -> pd.DataFrame:
    """The `top_n` registered models of the project by `metric_name` (from model metadata, else
    the producing task's last scalar, its line chosen as in `compare_clearml_experiments`);
    `mode` "max" (e.g. f1) or "min" (e.g. rmse)."""
    if mode not in ("max", "min"):
        raise ClearMLConfigError(f"mode must be 'max' or 'min', got {mode!r}")
    if top_n < 1:
        raise ClearMLConfigError(f"top_n must be at least 1, got {top_n}")
    require_server(settings or ClientSettings.load())
    rows = []
    for model in Model.query_models(project_name=project_name):
        metadata = _model_metadata(model)
        value = metadata.get(metric_name)
        if value is None and model.task:
            scalars = Task.get_task(task_id=model.task).get_last_scalar_metrics()
            value = _metric_from_scalars(scalars, metric_name, series, f"task {model.task} of model {model.name!r}")
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
