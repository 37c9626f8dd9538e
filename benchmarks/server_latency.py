"""Per-request latency of the MLflow server as shipped versus a default `mlflow server`, in one run.

Both servers share the running stack's backend store and artifact store; the shipped one is the
stack's own (gunicorn), the others are started here on free ports and stopped at the end. Clients
are plain `MlflowClient`s, as users have them.

    make up && .venv/bin/python benchmarks/server_latency.py [--requests 200] [--batches 20]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric
from rich.console import Console
from rich.table import Table

from mlstack.runtime.health import http_ok
from mlstack.runtime.native.process import ManagedProcess
from mlstack.runtime.native.runtime import mlflow_server_env
from mlstack.settings import Settings


@dataclass(frozen=True)
class Candidate:
    name: str
    extra_args: tuple[str, ...]


#: Servers started for comparison; "shipped" is the stack's running server.
CANDIDATES = (
    Candidate("default (uvicorn)", ()),
    Candidate("uvicorn, h11 parser", ("--uvicorn-opts", "--http h11")),
    Candidate(
        "gunicorn gthread, keep-alive",
        ("--workers", "2", "--gunicorn-opts", "--worker-class gthread --threads 4 --keep-alive 30"),
    ),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_candidate(settings: Settings, candidate: Candidate, workdir: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    process = ManagedProcess(f"bench-{port}", workdir, workdir)
    process.start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--artifacts-destination",
            f"s3://{settings.mlflow_artifact_bucket}",
            *candidate.extra_args,
        ],
        env=mlflow_server_env(settings),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not http_ok(f"{url}/health"):
        if time.monotonic() > deadline or not process.is_running():
            raise RuntimeError(f"{candidate.name} did not start:\n{process.tail()}")
        time.sleep(0.5)
    return process, url


def timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def measure(url: str, requests: int, batches: int) -> dict[str, list[float]]:
    client = MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(f"latency-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment_id).info.run_id
    step = iter(range(10**9))
    timed(lambda: client.get_run(run_id), 10)  # warm the connection pool and the workers
    now = int(time.time() * 1000)
    return {
        "runs/get": timed(lambda: client.get_run(run_id), requests),
        "log-metric": timed(lambda: client.log_metric(run_id, "loss", 0.5, step=next(step)), requests),
        "set-tag": timed(lambda: client.set_tag(run_id, "stage", "bench"), requests),
        "log-batch(1000)": timed(
            lambda: client.log_batch(run_id, metrics=[Metric("m", float(i), now, next(step)) for i in range(1000)]),
            batches,
        ),
    }


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per single-call operation")
    parser.add_argument("--batches", type=int, default=20, help="log-batch(1000) requests")
    args = parser.parse_args()
    console = Console()
    settings = Settings.load()
    if not http_ok(f"{settings.mlflow_url}/health"):
        raise SystemExit(f"no MLflow server answers at {settings.mlflow_url}: run `make up` first")

    results = {"shipped (gunicorn)": measure(settings.mlflow_url, args.requests, args.batches)}
    with tempfile.TemporaryDirectory() as workdir:
        for candidate in CANDIDATES:
            process, url = start_candidate(settings, candidate, Path(workdir))
            try:
                results[candidate.name] = measure(url, args.requests, args.batches)
            finally:
                process.stop()

    baseline = results["default (uvicorn)"]
    table = Table("server", "request", "median ms", "p99 ms", "median vs default", title="MLflow server latency")
    for server, operations in results.items():
        for operation, samples in operations.items():
            ratio = statistics.median(baseline[operation]) / statistics.median(samples)
            table.add_row(
                server, operation, f"{statistics.median(samples):.1f}", f"{p99(samples):.1f}", f"{ratio:.1f}x faster"
            )
    console.print(table)


if __name__ == "__main__":
    main()
