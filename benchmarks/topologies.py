"""The ha topology against the single one: ingest and per-request latency, in one run.

    .venv/bin/python benchmarks/topologies.py [--points 100000] [--requests 300] [--rounds 3]

Brings up two scratch native stacks side by side, as the tests make them (free ports, state folders
of their own, removed at the end): MLSTACK_TOPOLOGY=single and MLSTACK_TOPOLOGY=ha. In each round the
two take turns: ingest end to end (MlflowClient.log_batch of 1,000 points a request, and mlstack's
ExperimentTracker), then the per-request latency of server_latency.py's four requests. Prints each
figure for both, and ha against single: the ratio of ingest rates, the difference of median latencies.
That is the cost of synchronous replication and of the proxies (HAProxy before PostgreSQL, SeaweedFS
and the MLflow replicas) on this machine, with every member on it. One more column asks ha's first
replica directly, past its HTTP proxy. (benchmarks/postgres_paths.py measures the PostgreSQL proxy.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from logging_throughput import client_log_batch, mlstack_tracker
from mlflow import MlflowClient
from rich.console import Console
from server_latency import OPERATIONS, timed
from server_latency import Workload as LatencyWorkload

from mlstack.envfile import update_env
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.runtime.native.server import mlflow_replicas
from mlstack.settings import Settings, Topology
from mlstack.tracking import setup_mlflow
from mlstack.tracking.mlflow.config import use_credentials

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import make_project, run_mlstack  # noqa: E402 - the tests' scratch projects

TOPOLOGIES: tuple[Topology, ...] = ("single", "ha")
#: ha's first replica asked directly, past the HTTP proxy: what that proxy adds (latency only).
REPLICA = "ha, one replica directly"
INGEST = {"MlflowClient.log_batch (1000/request)": client_log_batch, "mlstack ExperimentTracker": mlstack_tracker}


def scratch_stack(root: Path, topology: Topology) -> Settings:
    """A scratch project of `topology`, brought up as a user does (`mlstack up`)."""
    settings = make_project(root / topology)
    update_env(settings.env_file, {"MLSTACK_TOPOLOGY": topology})
    up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    if up.returncode != 0:
        raise SystemExit(f"`mlstack up` ({topology}) failed:\n{up.stdout}{up.stderr}")
    return Settings.load(settings.project_dir)


def ingest(settings: Settings, points: int, into: dict[str, list[float]]) -> None:
    """Each INGEST method's points/s, first call until the server holds every point (checked)."""
    use_credentials(settings)
    experiment = f"bench-topology-{uuid.uuid4().hex[:8]}"
    setup_mlflow(experiment, tracking_uri=settings.mlflow_url, settings=settings)
    client = MlflowClient(settings.mlflow_url)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    for label, method in INGEST.items():
        run_id, started, _ = method(client, experiment_id, points)
        into[label].append(points / (time.perf_counter() - started))
        landed = len(client.get_metric_history(run_id, "loss"))
        if landed != points:
            raise SystemExit(f"{label}: {landed} of {points} points on the server")


def latency(settings: Settings, url: str, count: int, into: dict[str, list[float]]) -> None:
    use_credentials(settings)
    workload = LatencyWorkload(url)
    for operation, call in workload.calls().items():
        timed(call, max(1, count // 50) if operation == "log-batch(1000)" else count, into[operation])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000, help="points per ingest method, round and topology")
    parser.add_argument("--requests", type=int, default=300, help="requests per operation, round and topology")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the topologies take turns in each")
    args = parser.parse_args()
    rates = {topology: {label: [] for label in INGEST} for topology in TOPOLOGIES}
    samples = {server: {operation: [] for operation in OPERATIONS} for server in (*TOPOLOGIES, REPLICA)}
    with tempfile.TemporaryDirectory(prefix="mlstack-topologies-") as temporary:
        stacks: dict[Topology, Settings] = {}
        try:
            for topology in TOPOLOGIES:
                print(f"bringing up a scratch {topology} stack ...", flush=True)
                stacks[topology] = scratch_stack(Path(temporary), topology)
            for round_number in range(args.rounds):
                order = TOPOLOGIES if round_number % 2 == 0 else TOPOLOGIES[::-1]  # who goes first alternates
                for topology in order:
                    print(f"round {round_number + 1}/{args.rounds}: {topology}", flush=True)
                    settings = stacks[topology]
                    ingest(settings, args.points, rates[topology])
                    latency(settings, settings.mlflow_url, args.requests // args.rounds, samples[topology])
                    if topology == "ha":
                        replica = mlflow_replicas(settings)[0].url
                        latency(settings, replica, args.requests // args.rounds, samples[REPLICA])
        finally:
            for settings in stacks.values():
                runtime = NativeRuntime(settings, Console(stderr=True, quiet=True))
                runtime.down()
                shutil.rmtree(runtime.postgres.home, ignore_errors=True)  # as root, PostgreSQL's data lives there
    print(f"\n{args.rounds} rounds; medians over rounds (ingest) and requests (latency)\n")
    print(f"| measure | single | ha | ha vs single | {REPLICA} |")
    print("|---|---:|---:|---:|---:|")
    for label in INGEST:
        single, ha = (statistics.median(rates[t][label]) for t in TOPOLOGIES)
        print(f"| {label}, points/s | {single:,.0f} | {ha:,.0f} | {ha / single:.2f}x | |")
    for operation in OPERATIONS:
        single, ha, replica = (statistics.median(samples[t][operation]) for t in (*TOPOLOGIES, REPLICA))
        print(f"| {operation}, median ms | {single:.1f} | {ha:.1f} | {ha - single:+.1f} ms | {replica:.1f} |")


if __name__ == "__main__":
    main()
