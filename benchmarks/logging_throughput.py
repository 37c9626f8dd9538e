"""Metric logging throughput against live MLflow servers, four ways, in one run.

    python benchmarks/logging_throughput.py [--points N] [--rounds N] [--no-baseline] [--before-routes]

Servers on the same backend and artifact stores: the stack's own (MLFLOW_TRACKING_URI from .env,
else the stack's MLflow port), the same deployment started here on MLflow's own store (the
server without mlstack's store plugin; --no-baseline leaves it out), and with --before-routes the
shipped server as it was before it served MLflow 3's FastAPI-only routes. Columns: points logged, end-to-end
points/s (first call until the server has every point), the caller's median and p99 time per call
in microseconds, and points found on the server afterwards.
"""

from __future__ import annotations

import argparse
import time
import uuid

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from servers import stack_and_baseline

from mlstack.settings import Settings
from mlstack.tracking import ExperimentTracker, setup_mlflow
from mlstack.tracking.mlflow.config import use_credentials


def timed_calls(count: int, call) -> tuple[float, list[int]]:
    """Run call(i) for i in range(count); returns the start time and each call's duration in ns."""
    durations = []
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for index in range(count):
        before = clock()
        call(index)
        durations.append(clock() - before)
    return started, durations


def fluent_sync(client: MlflowClient, experiment_id: str, points: int):
    with mlflow.start_run(experiment_id=experiment_id, run_name="mlflow.log_metric") as run:
        started, durations = timed_calls(points, lambda i: mlflow.log_metric("loss", 1 / (i + 1), step=i))
    return run.info.run_id, started, durations


def fluent_async(client: MlflowClient, experiment_id: str, points: int):
    with mlflow.start_run(experiment_id=experiment_id, run_name="mlflow async") as run:
        started, durations = timed_calls(
            points, lambda i: mlflow.log_metric("loss", 1 / (i + 1), step=i, synchronous=False)
        )
        mlflow.flush_async_logging()
    return run.info.run_id, started, durations


def client_log_batch(client: MlflowClient, experiment_id: str, points: int):
    run_id = client.create_run(experiment_id, run_name="MlflowClient.log_batch").info.run_id
    now = int(time.time() * 1000)

    def send(batch: int) -> None:
        client.log_batch(
            run_id,
            metrics=[Metric("loss", 1 / (step + 1), now, step) for step in range(batch * 1000, (batch + 1) * 1000)],
        )

    started, durations = timed_calls(points // 1000, send)
    client.set_terminated(run_id)
    return run_id, started, durations


def mlstack_tracker(client: MlflowClient, experiment_id: str, points: int):
    with ExperimentTracker(run_name="mlstack ExperimentTracker") as tracker:
        started, durations = timed_calls(points, lambda i: tracker.log_metric("loss", 1 / (i + 1), step=i))
    return tracker.run_id, started, durations


def percentile(sorted_values: list[int], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000, help="points for log_batch and mlstack")
    parser.add_argument("--sync-points", type=int, default=1_000, help="points for mlflow.log_metric")
    parser.add_argument("--async-points", type=int, default=5_000, help="points for mlflow async logging")
    parser.add_argument("--no-baseline", action="store_true", help="no server on MLflow's own store")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the servers take turns in each")
    parser.add_argument(
        "--before-routes", action="store_true", help="also the shipped server before MLflow 3's FastAPI-only routes"
    )
    args = parser.parse_args()
    settings = Settings.load()
    use_credentials(settings)  # the client account of .env, for every client here
    cases = [
        ("mlflow.log_metric (per call)", fluent_sync, args.sync_points),
        ("mlflow.log_metric(synchronous=False)", fluent_async, args.async_points),
        ("MlflowClient.log_batch (1000/request; per request)", client_log_batch, args.points),
        ("mlstack ExperimentTracker.log_metric", mlstack_tracker, args.points),
    ]
    print(f"mlstack flushers: {settings.metric_flusher_threads}\n")
    print("| round | server | method | points | points/s | caller median us | caller p99 us | points on server |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    with stack_and_baseline(settings, not args.no_baseline, args.before_routes) as servers:
        for round_number in range(1, args.rounds + 1):
            shift = (round_number - 1) % len(servers)  # who goes first rotates, so drift falls on all alike
            for server, uri in servers[shift:] + servers[:shift]:
                experiment = f"bench-logging-{uuid.uuid4().hex[:8]}"
                setup_mlflow(experiment, tracking_uri=uri, settings=settings)
                client = MlflowClient(uri)
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
                for label, method, points in cases:
                    run_id, started, durations = method(client, experiment_id, points)
                    elapsed = time.perf_counter() - started
                    found = len(client.get_metric_history(run_id, "loss"))
                    durations.sort()
                    print(
                        f"| {round_number} | {server} | {label} | {points:,} | {points / elapsed:,.0f} | "
                        f"{percentile(durations, 0.5):,.1f} | {percentile(durations, 0.99):,.1f} | {found:,} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
