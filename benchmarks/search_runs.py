"""search-runs over 10,000 runs through the server: mlflow.search_runs, mlstack's search_runs and
compare_runs, and the UI's call.

    python benchmarks/search_runs.py [--runs 10000] [--repeat 3] [--no-baseline]

The runs (each with metrics rmse and r2, params alpha and model, tags team, stage and seed) are
written straight into the backend store with SQL (PostgreSQL DSN from Settings): creating 10,000
runs through the API takes minutes. Every query then goes through a server: the stack's own, and the
same deployment started here on MLflow's own store (--no-baseline leaves it out). Timed, median of
--repeat, end to end in this process:

- `mlflow.search_runs` of the experiment (all runs, one page of 10,000 in MLflow's client, to a
  DataFrame), and the same request as raw HTTP (the server and the transfer, the answer read with
  `requests`' json());
- mlstack's `search_runs` of the experiment (the same DataFrame) and `compare_runs(metrics=["rmse"])`;
- the first page of the UI's run table: POST ajax-api/2.0/mlflow/runs/search as the UI sends it
  (100 runs, newest first), and a filtered, metric-ordered page (`metrics.rmse < 5000`, ORDER BY
  metrics.rmse, 100 runs).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import mlflow
import psycopg
import requests
from mlflow import MlflowClient
from servers import stack_and_baseline

from mlstack.settings import Settings
from mlstack.tracking import compare_runs, search_runs, setup_mlflow
from mlstack.tracking.mlflow.config import use_credentials

UI_PAGE = {"filter": "", "run_view_type": "ACTIVE_ONLY", "max_results": 100, "order_by": ["attributes.start_time DESC"]}
FILTERED_PAGE = {"filter": "metrics.rmse < 5000", "max_results": 100, "order_by": ["metrics.rmse ASC"]}
MLFLOW_SEARCH = "mlflow.search_runs (all runs, DataFrame)"
MLSTACK_SEARCH = "mlstack search_runs (all runs, same DataFrame)"


def seed_runs(dsn: str, experiment_id: str, count: int) -> None:
    """`count` finished runs, each with 2 latest metrics, 2 params and 3 tags (one of them the run name)."""
    prefix = uuid.uuid4().hex[:20]
    run_id = "%(prefix)s || lpad(n::text, 12, '0')"
    series = "FROM generate_series(1, %(count)s) AS n"
    values = {"prefix": prefix, "experiment": int(experiment_id), "count": count}
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
            f"SELECT {run_id}, 'bulk-' || n, 'LOCAL', '', '', 'bench', 'FINISHED', 1700000000000 + n, "
            f"1700000000000 + n, '', 'active', 'mlflow-artifacts:/bulk/' || n, %(experiment)s {series}",
            values,
        )
        connection.execute(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            f"SELECT key, value, 1700000000000 + n, 0, false, {run_id} {series}, "
            "LATERAL (VALUES ('rmse', n * 1.0), ('r2', 1.0 / n)) AS m(key, value)",
            values,
        )
        connection.execute(
            "INSERT INTO params (key, value, run_uuid) "
            f"SELECT key, value, {run_id} {series}, "
            "LATERAL (VALUES ('alpha', (n %% 10)::text), ('model', 'ridge')) AS p(key, value)",
            values,
        )
        connection.execute(
            "INSERT INTO tags (key, value, run_uuid) "
            f"SELECT key, value, {run_id} {series}, "
            "LATERAL (VALUES ('team', 'vision'), ('stage', 'sweep'), ('mlflow.runName', 'bulk-' || n)) "
            "AS t(key, value)",
            values,
        )


def median_seconds(repeat: int, query: Callable[[], int]) -> tuple[float, int]:
    """Median seconds of `query` over `repeat` calls (after one untimed call), and the rows it returned."""
    rows = query()
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = query()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), rows


def rest_search(url: str, auth: tuple[str, str], route: str, body: dict) -> int:
    answer = requests.post(f"{url}/{route}/2.0/mlflow/runs/search", json=body, auth=auth, timeout=600)
    answer.raise_for_status()
    return len(answer.json().get("runs", []))


def time_queries(url: str, auth: tuple[str, str], experiment: str, experiment_id: str, args, settings) -> dict:
    """Each query's median seconds and rows against the server at `url`."""
    mlflow.set_tracking_uri(url)
    setup_mlflow(experiment, tracking_uri=url, settings=settings)  # mlstack's queries go to `url` too
    everything = {"experiment_ids": [experiment_id], "max_results": args.runs}
    queries = {
        MLFLOW_SEARCH: lambda: len(mlflow.search_runs([experiment_id])),
        "the same request as raw HTTP": lambda: rest_search(url, auth, "api", everything),
        MLSTACK_SEARCH: lambda: len(search_runs(experiment)),
        "mlstack compare_runs(metrics=['rmse'])": lambda: len(compare_runs(experiment, metrics=["rmse"])),
        "UI run table, first page (ajax, 100)": lambda: rest_search(
            url, auth, "ajax-api", {"experiment_ids": [experiment_id], **UI_PAGE}
        ),
        "filtered, ordered by a metric (100)": lambda: rest_search(
            url, auth, "ajax-api", {"experiment_ids": [experiment_id], **FILTERED_PAGE}
        ),
    }
    return {label: median_seconds(args.repeat, query) for label, query in queries.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true", help="only the stack's own server")
    args = parser.parse_args()
    settings = Settings.load()
    use_credentials(settings)
    auth = (settings.mlflow_tracking_username or "", settings.mlflow_tracking_password.get_secret_value())
    stack_uri = settings.mlflow_tracking_uri or settings.mlflow_url
    experiment = f"bench-search-{uuid.uuid4().hex[:8]}"
    setup_mlflow(experiment, tracking_uri=stack_uri, settings=settings)
    experiment_id = MlflowClient(stack_uri).get_experiment_by_name(experiment).experiment_id
    seed_runs(settings.postgres_dsn(), experiment_id, args.runs)

    with stack_and_baseline(settings, baseline=not args.no_baseline) as servers:
        results = {
            server: time_queries(url, auth, experiment, experiment_id, args, settings) for server, url in servers
        }
    print(f"{args.runs:,} runs (2 metrics, 2 params, 3 tags each), median of {args.repeat}\n")
    names = list(results)
    print("| query | rows | " + " | ".join(f"{name} s" for name in names) + " | ratio |")
    print("|---|---:|" + "---:|" * len(names) + "---:|")
    for label in results[names[0]]:
        seconds = [results[name][label][0] for name in names]
        ratio = f"{seconds[-1] / seconds[0]:.1f}x" if len(names) > 1 else ""
        cells = " | ".join(f"{value:.3f}" for value in seconds)
        print(f"| {label} | {results[names[0]][label][1]:,} | {cells} | {ratio} |")
    for name in names:
        theirs, ours = results[name][MLFLOW_SEARCH][0], results[name][MLSTACK_SEARCH][0]
        print(f"\n{name}: mlstack search_runs {ours:.3f} s, mlflow.search_runs {theirs:.3f} s ({theirs / ours:.1f}x)")


if __name__ == "__main__":
    main()
