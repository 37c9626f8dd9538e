"""Queries over runs. Paging is always complete: a query over N runs returns N rows unless the
caller asks for fewer with `max_results` (mlflow's own helpers stop at a page or at 100,000)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pandas as pd
from mlflow.entities import Run, ViewType

from mlstack.tracking.errors import ExperimentNotFoundError, TrackingInputError
from mlstack.tracking.mlflow.config import current_config

SERVER_PAGE_LIMIT = 50_000  # the most runs the server returns per search request
Mode = Literal["min", "max"]


def find_mlflow_runs(
    experiment_name: str | list[str] | None = None,
    filter_string: str = "",
    max_results: int | None = None,
    order_by: list[str] | None = None,
) -> list[Run]:
    """Every matching run (all pages) as mlflow Run objects; `max_results` caps the count on purpose."""
    return list(_iter_runs(_experiment_ids(experiment_name), filter_string, order_by, max_results))


def search_runs(
    experiment_name: str | list[str] | None = None,
    filter_string: str = "",
    max_results: int | None = None,
    order_by: list[str] | None = None,
) -> pd.DataFrame:
    """Matching runs as a DataFrame in mlflow.search_runs' layout: run_id, status, ..., metrics.<key>,
    params.<key>, tags.<key>."""
    runs = _iter_runs(_experiment_ids(experiment_name), filter_string, order_by, max_results)
    return _frame([_flat_row(run, "metrics.", "params.", "tags.") for run in runs])


def compare_runs(
    experiment_name: str | list[str] | None = None,
    metrics: list[str] | None = None,
    top_n: int | None = None,
    sort_by: str | None = None,
    mode: Mode = "min",
    filter_string: str = "",
) -> pd.DataFrame:
    """One row per run: run_id, run_name, status, start_time, `metric_<name>` and `param_<name>` columns.

    `metrics` limits the metric columns; rows are ordered by `sort_by` (default: the first of
    `metrics`) in `mode` order, runs without it last, else newest first; `top_n` keeps the first rows.
    """
    sort_by = sort_by or (metrics[0] if metrics else None)
    order_by = [f"metrics.`{sort_by}` {'ASC' if _check_mode(mode) == 'min' else 'DESC'}"] if sort_by else None
    runs = _iter_runs(_experiment_ids(experiment_name), filter_string, order_by, top_n)
    frame = _frame([_flat_row(run, "metric_", "param_", None, metrics) for run in runs])
    if sort_by and not frame.empty:
        column = f"metric_{sort_by}"
        if column not in frame:
            frame[column] = float("nan")
        frame = frame.sort_values(column, ascending=mode == "min", na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def get_best_run(experiment_name: str, metric: str, mode: Mode = "min") -> dict[str, Any]:
    """The FINISHED run with the lowest (`min`) or highest (`max`) `metric`:
    {run_id, run_name, metrics, params, tags}. Raises LookupError when no finished run has it."""
    direction = "ASC" if _check_mode(mode) == "min" else "DESC"
    runs = find_mlflow_runs(
        experiment_name,
        f"attributes.status = 'FINISHED' AND metrics.`{metric}` > -1e308",
        max_results=1,
        order_by=[f"metrics.`{metric}` {direction}"],
    )
    if not runs:
        raise LookupError(f"no FINISHED run in experiment {experiment_name!r} has metric {metric!r}")
    return run_as_dict(runs[0])


def get_run_by_name(experiment_name: str, run_name: str) -> dict[str, Any] | None:
    """The newest run named `run_name` as {run_id, run_name, status, metrics, params, tags}, or None."""
    quoted = run_name.replace("'", "\\'")
    runs = find_mlflow_runs(
        experiment_name, f"attributes.run_name = '{quoted}'", max_results=1, order_by=["attributes.start_time DESC"]
    )
    return run_as_dict(runs[0]) if runs else None


def get_experiment_summary(experiment_name: str) -> dict[str, Any]:
    """Run counts by status and, per metric, {count, min, max, mean} over the runs that logged it."""
    frame = compare_runs(experiment_name)
    statuses = frame["status"].value_counts().to_dict() if not frame.empty else {}
    metric_columns = [column for column in frame.columns if column.startswith("metric_")]
    return {
        "experiment_name": experiment_name,
        "total_runs": len(frame),
        "finished_runs": statuses.get("FINISHED", 0),
        "failed_runs": statuses.get("FAILED", 0),
        "running_runs": statuses.get("RUNNING", 0),
        "metrics": {
            column.removeprefix("metric_"): {
                "count": int(frame[column].count()),
                "min": float(frame[column].min()),
                "max": float(frame[column].max()),
                "mean": float(frame[column].mean()),
            }
            for column in metric_columns
        },
    }


def load_best_model(experiment_name: str, metric: str, mode: Mode = "min", name: str = "model"):
    """Load (as pyfunc) the model `name` logged by the best run by `metric`."""
    import mlflow.pyfunc

    best = get_best_run(experiment_name, metric, mode)
    return mlflow.pyfunc.load_model(f"runs:/{best['run_id']}/{name}")


def delete_experiment_runs(
    experiment_name: str, keep_top_n: int = 10, metric: str | None = None, mode: Mode = "min", dry_run: bool = True
) -> list[str]:
    """Delete all but the best `keep_top_n` runs by `metric` (runs without it rank last), or
    all but the newest `keep_top_n` when `metric` is None. Returns the run ids deleted
    (with `dry_run=True`, the default: that would be deleted, and nothing is deleted)."""
    if keep_top_n < 0:
        raise TrackingInputError(f"keep_top_n must be >= 0, got {keep_top_n}")
    if metric:
        ranked = compare_runs(experiment_name, sort_by=metric, mode=mode)["run_id"].tolist()
    else:
        ranked = [run.info.run_id for run in find_mlflow_runs(experiment_name, order_by=["attributes.start_time DESC"])]
    doomed = ranked[keep_top_n:]
    if not dry_run:
        client = current_config().client
        for run_id in doomed:
            client.delete_run(run_id)
    return doomed


def run_as_dict(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "metrics": dict(run.data.metrics),
        "params": dict(run.data.params),
        "tags": dict(run.data.tags),
    }


def _iter_runs(
    experiment_ids: list[str], filter_string: str, order_by: list[str] | None, max_results: int | None
) -> Iterator[Run]:
    client = current_config().client
    page_token, returned = None, 0
    while max_results is None or returned < max_results:
        page_size = SERVER_PAGE_LIMIT if max_results is None else min(SERVER_PAGE_LIMIT, max_results - returned)
        page = client.search_runs(experiment_ids, filter_string, ViewType.ACTIVE_ONLY, page_size, order_by, page_token)
        yield from page
        returned += len(page)
        page_token = page.token
        if not page_token:
            return


def _experiment_ids(names: str | list[str] | None) -> list[str]:
    config = current_config()
    ids = []
    for name in [names] if isinstance(names, str) or names is None else names:
        name = name or config.experiment_name
        experiment = config.client.get_experiment_by_name(name)
        if experiment is None:
            raise ExperimentNotFoundError(f"experiment {name!r} does not exist on {config.tracking_uri}")
        ids.append(experiment.experiment_id)
    return ids


def _flat_row(
    run: Run, metric_prefix: str, param_prefix: str, tag_prefix: str | None, metric_names: list[str] | None = None
) -> dict[str, Any]:
    info, data = run.info, run.data
    row: dict[str, Any] = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "artifact_uri": info.artifact_uri,
    }
    metrics = data.metrics if metric_names is None else {key: data.metrics.get(key) for key in metric_names}
    row.update((metric_prefix + key, value) for key, value in metrics.items())
    row.update((param_prefix + key, value) for key, value in data.params.items())
    if tag_prefix is not None:
        row.update((tag_prefix + key, value) for key, value in data.tags.items())
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows)
    for column in ("start_time", "end_time"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
    return frame


def _check_mode(mode: str) -> str:
    if mode not in ("min", "max"):
        raise TrackingInputError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode
