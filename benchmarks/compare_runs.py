"""compare_runs over 10,000 runs against mlflow.search_runs on the same data (same server).

    python benchmarks/compare_runs.py [--tracking-uri URL] [--runs 10000] [--repeat 3]

The runs (each with metric `rmse`) are written straight into the backend store with one SQL
statement (PostgreSQL DSN from Settings), since creating 10,000 runs through the API takes minutes;
both queries then go through the server. Prints the median time of each and the rows returned.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import mlflow
import psycopg
from mlflow import MlflowClient

from mlstack.settings import Settings
from mlstack.tracking import compare_runs, setup_mlflow


def seed_runs(dsn: str, experiment_id: str, count: int) -> None:
    prefix = uuid.uuid4().hex[:20]
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
            "SELECT %(prefix)s || lpad(n::text, 12, '0'), 'bulk-' || n, 'LOCAL', '', '', 'bench', 'FINISHED', "
            "1700000000000 + n, 1700000000000 + n, '', 'active', 'mlflow-artifacts:/bulk/' || n, %(experiment)s "
            "FROM generate_series(1, %(count)s) AS n",
            {"prefix": prefix, "experiment": int(experiment_id), "count": count},
        )
        connection.execute(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "SELECT 'rmse', n, 0, 0, false, %(prefix)s || lpad(n::text, 12, '0') "
            "FROM generate_series(1, %(count)s) AS n",
            {"prefix": prefix, "count": count},
        )


def median_seconds(repeat: int, query) -> tuple[float, int]:
    timings, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = len(query())
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.load()
    uri = args.tracking_uri or settings.mlflow_tracking_uri or settings.mlflow_url
    experiment = f"bench-compare-{uuid.uuid4().hex[:8]}"
    setup_mlflow(experiment, tracking_uri=uri, settings=settings)
    experiment_id = MlflowClient(uri).get_experiment_by_name(experiment).experiment_id
    seed_runs(settings.postgres_dsn(), experiment_id, args.runs)

    theirs, their_rows = median_seconds(args.repeat, lambda: mlflow.search_runs([experiment_id]))
    ours, our_rows = median_seconds(args.repeat, lambda: compare_runs(experiment, metrics=["rmse"]))
    print(f"server {uri}, {args.runs:,} runs, median of {args.repeat}\n")
    print("| query | rows | seconds | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| mlflow.search_runs | {their_rows:,} | {theirs:.2f} | 1.00 |")
    print(f"| mlstack compare_runs(metrics=['rmse']) | {our_rows:,} | {ours:.2f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
