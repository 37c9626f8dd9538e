"""How clients reach the ha topology's PostgreSQL leader: HAProxy (checking Patroni's /primary) against
libpq's multi-host connection string with target_session_attrs=read-write, in one run.

    .venv/bin/python benchmarks/postgres_paths.py [--count 300] [--rounds 5]

Brings up a scratch ha stack (as topologies.py does), then in each round, for each path in turn: the
time to open a connection, run `SELECT 1` and close it (what a client without a pool pays, and a
pool on every reconnect after a failover), and the time of `SELECT 1` on a connection kept open
(what MLflow's pooled server pays per query). Also the direct connection to the leader, the floor
both are measured against. With libpq's multi-host string the hosts are tried in order until one
accepts writes, so its figure depends on where the leader is: both the best case (leader first) and
the worst (leader last) are measured.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from rich.console import Console
from topologies import scratch_stack

from mlstack.runtime.native.postgres_cluster import cluster_members, cluster_state
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.settings import Settings


def conninfo(settings: Settings, hosts: list[tuple[str, int]], read_write: bool) -> str:
    password = settings.postgres_password.get_secret_value()
    return psycopg.conninfo.make_conninfo(
        host=",".join(host for host, _ in hosts),
        port=",".join(str(port) for _, port in hosts),
        user=settings.postgres_user,
        password=password,
        dbname="postgres",
        **({"target_session_attrs": "read-write"} if read_write else {}),
    )


def paths(settings: Settings) -> dict[str, str]:
    """Each way to the leader, as a conninfo string."""
    leader = next(m["name"] for m in cluster_state(settings) or [] if m["role"] == "leader")
    members = {m.patroni: ("127.0.0.1", m.postgres) for m in cluster_members(settings)}
    others = [address for name, address in members.items() if name != leader]
    return {
        "direct to the leader (the floor)": conninfo(settings, [members[leader]], False),
        "HAProxy (Patroni's /primary)": conninfo(settings, [("127.0.0.1", settings.postgres_port)], False),
        "libpq multi-host read-write, leader first": conninfo(settings, [members[leader], *others], True),
        "libpq multi-host read-write, leader last": conninfo(settings, [*others, members[leader]], True),
    }


def connect_query_close(info: str, count: int, into: list[float]) -> None:
    for _ in range(count):
        start = time.perf_counter()
        with psycopg.connect(info) as connection:
            connection.execute("SELECT 1").fetchone()
        into.append((time.perf_counter() - start) * 1000)


def query_on_open_connection(info: str, count: int, into: list[float]) -> None:
    with psycopg.connect(info, autocommit=True) as connection:
        for _ in range(count):
            start = time.perf_counter()
            connection.execute("SELECT 1").fetchone()
            into.append((time.perf_counter() - start) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="operations per path, kind and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the paths take turns in each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlstack-postgres-paths-") as temporary:
        print("bringing up a scratch ha stack ...", flush=True)
        settings = scratch_stack(Path(temporary), "ha")
        try:
            ways = paths(settings)
            connects = {name: [] for name in ways}
            queries = {name: [] for name in ways}
            for round_number in range(args.rounds):
                order = list(ways) if round_number % 2 == 0 else list(ways)[::-1]
                for name in order:
                    connect_query_close(ways[name], max(1, args.count // 10), connects[name])
                    query_on_open_connection(ways[name], args.count, queries[name])
        finally:
            runtime = NativeRuntime(settings, Console(stderr=True, quiet=True))
            runtime.down()
            shutil.rmtree(runtime.postgres.home, ignore_errors=True)
    print(f"\n{args.rounds} rounds; median ms (p95)\n")
    print("| path | connect, SELECT 1, close | SELECT 1 on an open connection |")
    print("|---|---:|---:|")
    for name in ways:
        cells = [
            f"{statistics.median(samples):.2f} ({statistics.quantiles(samples, n=20)[-1]:.2f})"
            for samples in (connects[name], queries[name])
        ]
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
