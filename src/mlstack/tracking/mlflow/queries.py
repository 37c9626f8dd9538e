"""Queries over runs. Paging is always complete: a query over N runs returns N rows unless the
caller asks for fewer with `max_results` (mlflow's own helpers stop at a page or at 100,000).

`search_runs` and `compare_runs` post runs/search themselves, through MLflow's own `http_request`
(the login, TLS and retry settings of every MLflow request), and read the JSON answer straight into
DataFrame columns (run_columns); local stores (sqlite, file) are read through MlflowClient.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException

from mlstack.tracking.errors import ExperimentNotFoundError, TrackingError, TrackingInputError
from mlstack.tracking.mlflow.config import TrackingConfig, current_config
from mlstack.tracking.mlflow.run_columns import (
    RunColumns,
    collection_paused,
    compare_frame,
    run_as_json,
    search_frame,
)

SERVER_PAGE_LIMIT = 50_000  # the most runs the server returns per search request
SEARCH_ENDPOINT = "/api/2.0/mlflow/runs/search"
Mode = Literal["min", "max"]
Page = tuple[list, str | None]  # a page's runs and the next page's token (None after the last)


@dataclass(frozen=True)
class RunQuery:
    """One search over runs: MlflowClient.search_runs' arguments; `max_results` None for every run."""

    experiment_ids: list[str]
    filter_string: str = ""
    run_view_type: int = ViewType.ACTIVE_ONLY
    order_by: list[str] | None = None
    max_results: int | None = None


def find_mlflow_runs(
    experiment_name: str | list[str] | None = None,
    filter_string: str = "",
    max_results: int | None = None,
    order_by: list[str] | None = None,
) -> list[Run]:
    """Every matching run (all pages) as mlflow Run objects; `max_results` caps the count on purpose."""
    query = RunQuery(_experiment_ids(experiment_name), filter_string, order_by=order_by, max_results=max_results)
    return _all_runs(current_config(), query)


def search_runs(
    experiment_name: str | list[str] | None = None,
    filter_string: str = "",
    max_results: int | None = None,
    order_by: list[str] | None = None,
    run_view_type: int = ViewType.ACTIVE_ONLY,
) -> pd.DataFrame:
    """Matching runs as mlflow.search_runs' DataFrame (same columns, order and dtypes): run_id,
    experiment_id, status, artifact_uri, start_time, end_time, metrics.<key>, params.<key>, tags.<key>."""
    query = RunQuery(_experiment_ids(experiment_name), filter_string, run_view_type, order_by, max_results)
    runs = _run_answers(current_config(), query)
    with collection_paused():
        return search_frame(RunColumns(runs))


def compare_runs(
    experiment_name: str | list[str] | None = None,
    metrics: list[str] | None = None,
    top_n: int | None = None,
    sort_by: str | None = None,
    mode: Mode = "min",
    filter_string: str = "",
) -> pd.DataFrame:
    """One row per run: run_id, run_name, experiment_id, status, start_time, end_time, artifact_uri,
    `metric_<name>` and `param_<name>` columns.

    `metrics` limits the metric columns (`sort_by` is added to them); rows are ordered by `sort_by`
    (default: the first of `metrics`) in `mode` order, runs without it last, else newest first;
    `top_n` keeps the first rows.
    """
    sort_by = sort_by or (metrics[0] if metrics else None)
    if metrics is not None and sort_by and sort_by not in metrics:
        metrics = [*metrics, sort_by]
    order_by = [f"metrics.`{sort_by}` {'ASC' if _check_mode(mode) == 'min' else 'DESC'}"] if sort_by else None
    query = RunQuery(_experiment_ids(experiment_name), filter_string, order_by=order_by, max_results=top_n)
    runs = _run_answers(current_config(), query)
    with collection_paused():
        frame = compare_frame(RunColumns(runs), metrics)
    if sort_by:
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


def _all_runs(config: TrackingConfig, query: RunQuery) -> list[Run]:
    def page(size: int, token: str | None) -> Page:
        runs = config.client.search_runs(
            query.experiment_ids, query.filter_string, query.run_view_type, size, query.order_by, token
        )
        return runs, runs.token

    with _search_errors(config):
        return list(_paged(page, query.max_results))


def _run_answers(config: TrackingConfig, query: RunQuery) -> list[dict[str, Any]]:
    """The matching runs as search-runs' JSON answer holds them (all pages, at most `max_results`)."""
    if not config.tracking_uri.startswith(("http://", "https://")):
        return [run_as_json(run) for run in _all_runs(config, query)]
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    host = get_default_host_creds(config.tracking_uri)
    body = {
        "experiment_ids": query.experiment_ids,
        "filter": query.filter_string,
        "run_view_type": ViewType.to_string(query.run_view_type).upper(),
        "order_by": query.order_by or [],
    }

    def page(size: int, token: str | None) -> Page:
        paging = {"max_results": size, "page_token": token} if token else {"max_results": size}
        response = http_request(host, SEARCH_ENDPOINT, "POST", json={**body, **paging})
        if response.status_code != 200:
            verify_rest_response(response, SEARCH_ENDPOINT)  # raises MLflow's error for the answer
        try:
            with collection_paused():
                answer = json.loads(response.content)
        except ValueError as error:
            raise TrackingError(
                f"{config.tracking_uri} answered {SEARCH_ENDPOINT} with something that is not JSON "
                f"({response.content[:200]!r}): is MLFLOW_TRACKING_URI an MLflow server?"
            ) from error
        return answer.get("runs", []), answer.get("next_page_token")

    with _search_errors(config):
        return list(_paged(page, query.max_results))


def _paged(page: Callable[[int, str | None], Page], max_results: int | None) -> Iterator:
    """Every item of every page, or the first `max_results`; `page(size, token)` fetches one."""
    token, returned = None, 0
    while max_results is None or returned < max_results:
        size = SERVER_PAGE_LIMIT if max_results is None else min(SERVER_PAGE_LIMIT, max_results - returned)
        items, token = page(size, token)
        yield from items
        returned += len(items)
        if not token:
            return


@contextmanager
def _search_errors(config: TrackingConfig) -> Iterator[None]:
    """MLflow's errors of a search as the library's: the caller's bad filter or order, or the server's failure."""
    try:
        yield
    except MlflowException as error:
        if error.error_code == "INVALID_PARAMETER_VALUE":
            raise TrackingInputError(f"{config.tracking_uri} refused the search: {error.message}") from error
        raise TrackingError(f"searching runs on {config.tracking_uri} failed: {error.message}") from error


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


def _check_mode(mode: str) -> str:
    if mode not in ("min", "max"):
        raise TrackingInputError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode
