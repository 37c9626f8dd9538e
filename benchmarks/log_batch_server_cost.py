"""What the MLflow server spends on one log-batch of 1000 points, from request parsing to commit.

    python benchmarks/log_batch_server_cost.py [--batches 50] [--profile]

In this process, against the stack's PostgreSQL (DSN from Settings), through MLflow's own Flask
handler on MLflow's store, the same handler on mlstack's store, and mlstack's request-level path;
no HTTP and no auth, so the numbers are the server's own CPU and database time per request. Prints
the median ms per batch, us per point and the ratio to MLflow's path; --profile adds where each
path's time goes (cProfile, by function, cumulative).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
import uuid

from flask import Flask
from mlflow.server import handlers
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlstack_mlflow_store import routes
from mlstack_mlflow_store.store import PostgresFastPathStore

from mlstack.settings import Settings

LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"
ARTIFACT_ROOT = "mlflow-artifacts:/"


def client_for(store, request_level: bool):
    """A Flask test client serving MLflow's log-batch handler on `store`, optionally with mlstack's route."""
    app = Flask(f"bench-{uuid.uuid4().hex[:6]}")
    app.add_url_rule(LOG_BATCH, routes.LOG_BATCH_ENDPOINT, handlers._log_batch, methods=["POST"])
    app.add_url_rule(
        "/search", routes.SEARCH_RUNS_ENDPOINT, handlers._search_runs, methods=["POST"]
    )  # install wraps it
    if request_level:
        routes.install(app, store)
    return app.test_client()


def bodies(run_id: str, count: int) -> list[str]:
    now = int(time.time() * 1000)
    return [
        json.dumps(
            {
                "run_id": run_id,
                "metrics": [
                    {"key": "loss", "value": 1 / (step + 1), "timestamp": now, "step": step}
                    for step in range(batch * 1000, (batch + 1) * 1000)
                ],
            }
        )
        for batch in range(count)
    ]


def measure(store, client, experiment_id: str, batches: int, profile: bool) -> tuple[float, str]:
    """Median ms per batch into a new run (after 5 warm-up batches), and the profile text if asked."""
    run_id = store.create_run(experiment_id, "bench", int(time.time() * 1000), [], "log-batch cost").info.run_id
    requests = bodies(run_id, batches + 5)
    timings, profiler = [], cProfile.Profile()
    handlers._get_tracking_store = lambda *args, **kwargs: store  # the store MLflow's handler writes to
    for index, body in enumerate(requests):
        started = time.perf_counter()
        if index >= 5 and profile:
            profiler.enable()
        response = client.post(LOG_BATCH, data=body, content_type="application/json")
        profiler.disable()
        assert response.status_code == 200, response.get_data(as_text=True)
        if index >= 5:
            timings.append((time.perf_counter() - started) * 1000)
    text = ""
    if profile:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        text = out.getvalue()
    return statistics.median(timings), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    uri = Settings.load().backend_store_uri()
    upstream, fast = SqlAlchemyStore(uri, ARTIFACT_ROOT), PostgresFastPathStore(uri, ARTIFACT_ROOT)
    experiment_id = upstream.create_experiment(f"bench-log-batch-{uuid.uuid4().hex[:8]}", ARTIFACT_ROOT)
    paths = [
        ("MLflow's handler, MLflow's store", upstream, False),
        ("MLflow's handler, mlstack's store (one statement)", fast, False),
        ("mlstack's request-level path", fast, True),
    ]
    results = []
    for label, store, request_level in paths:
        median, profile = measure(store, client_for(store, request_level), experiment_id, args.batches, args.profile)
        results.append((label, median, profile))
    baseline = results[0][1]
    print(f"{args.batches} batches of 1000 points each, median\n")
    print("| path | ms per batch (= us per point) | ratio |")
    print("|---|---:|---:|")
    for label, median, _ in results:
        print(f"| {label} | {median:.1f} | {baseline / median:.1f}x |")
    for label, _, profile in results:
        if profile:
            print(f"\n## {label}\n{profile}")


if __name__ == "__main__":
    main()
