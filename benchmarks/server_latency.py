"""Per-request latency of the MLflow server as shipped versus a default `mlflow server`, in one run.

Every server shares the running stack's backend store and artifact store: "shipped" is the stack's
own server (with the fast store unless .env turns it off); the candidates are started here on free
ports, on MLflow's own store, and stopped at the end. With authentication on in .env (the default),
every candidate runs MLflow's basic-auth app on the stack's user database: the baseline with
MLflow's default auth configuration (no login cache), the shipped ones with the stack's; one more
row, the shipped server without authentication, names what the auth layer itself costs. Each server is
measured only once its whole process group has gone quiet (MLflow starts a job runner and huey
consumers that import for seconds after /health answers), and the servers take turns, round by
round, so drift in the machine's speed spreads over all of them. Clients are plain `MlflowClient`s,
as users have them; one extra row times raw HTTP (stdlib http.client) against the shipped server,
without the client: about the server's share.

    make up && .venv/bin/python benchmarks/server_latency.py [--requests 300] [--rounds 10] [--deployments] [--metrics]

--deployments adds the deployment variants compared in session 2 (uvicorn h11, gunicorn sync
workers, nginx before uvicorn; nginx from PATH, Debian: nginx-light, else skipped).

--metrics is a mode of its own: the shipped server started twice, its own request metrics on
(MLSTACK_METRICS_ADDRESS, scraped once at the end to show it counted the run) and off, taking turns
with nothing else between them (ratios against "off"), with and without the mlflow client; then
what the metrics cost a request end to end (on minus off, medians) and in-process (the exporter's
hooks around a Flask view, Flask's test client, in multiprocess mode as in a gunicorn worker).
Servers started here get a metrics address only in the "on" row: none takes the stack's own port.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table
from servers import (
    Candidate,
    before_fastapi_routes,
    free_port,
    shipped_server_args,
    start_mlflow,
    start_process,
    wait_until_quiet,
)

from mlstack.health import http_ok
from mlstack.runtime.native.process import ManagedProcess
from mlstack.settings import Settings
from mlstack.tracking.mlflow.config import use_credentials

OPERATIONS = ("runs/get", "log-metric", "set-tag", "log-batch(1000)")
BASELINE = "default mlflow server (uvicorn)"
NO_AUTH = "shipped server without authentication"
#: The shipped server with MLflow's own login check (a per-worker cache): the latency before mlstack's
#: check, which reads the person's row on every request so that a change counts at once.
MLFLOW_LOGIN_CACHE = "shipped server, MLflow's per-worker login cache"
UVICORN_STACK_STORE = "uvicorn (MLflow's server process), the stack's store and login check"
METRICS_ON = "shipped server, its request metrics on"
METRICS_OFF = "shipped server, its request metrics off"
UPLOADS_HELD = 2


def candidates(settings: Settings, deployments: bool, metrics: bool = False) -> list[Candidate]:
    """The servers started here: the baseline, the shipped deployment on MLflow's own store, the shipped
    server without authentication, and with `deployments` the variants of session 2; with `metrics`
    only the shipped server with its request metrics on and off."""
    shipped_gunicorn = shipped_server_args(settings)
    if metrics:
        fast = settings.mlstack_fast_store
        return [
            Candidate(name, shipped_gunicorn, auth="shipped", fast_store=fast) for name in (METRICS_ON, METRICS_OFF)
        ]
    chosen = [
        Candidate(BASELINE),
        Candidate("shipped gunicorn gthread, MLflow's own store", shipped_gunicorn, auth="shipped"),
    ]
    if settings.mlflow_auth:
        fast = settings.mlstack_fast_store
        chosen.append(Candidate(MLFLOW_LOGIN_CACHE, shipped_gunicorn, auth="mlflow-login-cache", fast_store=fast))
        chosen.append(Candidate(NO_AUTH, shipped_gunicorn, auth="off", fast_store=fast))
        chosen.append(before_fastapi_routes(settings))
        # MLflow's own server process (uvicorn >= 0.55: no keep-alive stall, benchmarks/uvicorn_stall.py)
        # with the stack's store and login check, but none of gunicorn's hooks (no request guard, no
        # request-level fast paths): is gunicorn still worth it?
        chosen.append(Candidate(UVICORN_STACK_STORE, auth="shipped", fast_store=fast))
    if deployments:
        chosen += [
            Candidate("uvicorn, h11 parser", ("--uvicorn-opts", "--http h11")),
            Candidate("gunicorn sync workers (no keep-alive)", ("--workers", "2", "--gunicorn-opts", "--timeout 900")),
            Candidate("nginx (host check) -> uvicorn, upstream keep-alive", proxy_keepalive=True),
            Candidate("nginx (host check) -> uvicorn, new upstream connections", proxy_keepalive=False),
        ]
    return chosen


NGINX_CONF = """\
worker_processes 1;
pid {workdir}/nginx-{port}.pid;
error_log {workdir}/nginx-{port}.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_max_body_size 0;
  proxy_request_buffering off;
  proxy_buffering off;
  upstream mlflow {{ server {upstream}; {keepalive} }}
  server {{ listen 127.0.0.1:{port} default_server; return 403; }}
  server {{
    listen 127.0.0.1:{port};
    server_name localhost 127.0.0.1 mlflow;
    location / {{
      proxy_pass http://mlflow;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost;
    }}
  }}
}}
"""


@dataclass
class Server:
    name: str
    url: str
    samples: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    during_uploads: list[float] | None = None


def start_nginx(nginx: str, upstream: str, keepalive: bool, workdir: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    conf = workdir / f"nginx-{port}.conf"
    conf.write_text(
        NGINX_CONF.format(
            workdir=workdir, port=port, upstream=upstream.removeprefix("http://"), keepalive="keepalive 8;" * keepalive
        )
    )
    command = [nginx, "-e", str(workdir / f"nginx-{port}.log"), "-c", str(conf), "-g", "daemon off;"]
    url = f"http://127.0.0.1:{port}"
    process = start_process(command, {"PATH": os.environ["PATH"]}, workdir, f"{url}/health")
    if requests.get(f"{url}/health", headers={"Host": "evil.example.com"}, timeout=10).status_code != 403:
        raise RuntimeError("the nginx candidate does not refuse an unknown Host")
    return process, url


def timed(call: Callable[[], object], count: int, into: list[float]) -> None:
    for _ in range(count):
        start = time.perf_counter()
        call()
        into.append((time.perf_counter() - start) * 1000)


class Workload:
    """One run on one server, and the four requests timed against it."""

    def __init__(self, url: str):
        self.client = MlflowClient(tracking_uri=url)
        experiment_id = self.client.create_experiment(f"latency-{uuid.uuid4().hex[:8]}")
        self.run_id = self.client.create_run(experiment_id).info.run_id
        self.steps = iter(range(10**9))
        timed(lambda: self.client.get_run(self.run_id), 10, [])  # warm connections and workers

    def calls(self) -> dict[str, Callable[[], object]]:
        client, run_id, steps, now = self.client, self.run_id, self.steps, int(time.time() * 1000)
        return {
            "runs/get": lambda: client.get_run(run_id),
            "log-metric": lambda: client.log_metric(run_id, "loss", 0.5, step=next(steps)),
            "set-tag": lambda: client.set_tag(run_id, "stage", "bench"),
            "log-batch(1000)": lambda: client.log_batch(
                run_id, metrics=[Metric("m", float(i), now, next(steps)) for i in range(1000)]
            ),
        }


def metric_point(run_id: str, step: int) -> dict:
    return {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 0, "step": step}


class RawHttpWorkload(Workload):
    """The same requests on one kept-alive stdlib connection (no mlflow client, no `requests`): about
    the server's share alone."""

    def __init__(self, url: str):
        super().__init__(url)
        parsed = urlsplit(url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port)
        login = f"{os.environ.get('MLFLOW_TRACKING_USERNAME', '')}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        self.authorization = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}

    def request(self, method: str, endpoint: str, body: dict | None = None) -> None:
        payload = None if body is None else json.dumps(body)
        headers = {**self.authorization, **({} if body is None else {"Content-Type": "application/json"})}
        self.connection.request(method, f"/api/2.0/mlflow/runs/{endpoint}", body=payload, headers=headers)
        response = self.connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {endpoint}: HTTP {response.status}")

    def calls(self) -> dict[str, Callable[[], object]]:
        run_id, steps = self.run_id, self.steps
        # the server closes connections idle past its keep-alive (5 s) between rounds: reconnect, untimed
        self.connection.close()
        self.request("GET", f"get?run_id={run_id}")
        return {
            "runs/get": lambda: self.request("GET", f"get?run_id={run_id}"),
            "log-metric": lambda: self.request("POST", "log-metric", metric_point(run_id, next(steps))),
            "set-tag": lambda: self.request("POST", "set-tag", {"run_id": run_id, "key": "stage", "value": "bench"}),
        }


def get_run_during_held_uploads(url: str, requests_count: int = 20, limit: float = 10.0) -> list[float] | None:
    """runs/get latencies while UPLOADS_HELD artifact uploads stay open; None if a request waited > `limit` s."""
    workload = Workload(url)
    run = workload.client.get_run(workload.run_id).info
    artifacts = f"{url}/api/2.0/mlflow-artifacts/artifacts/{run.experiment_id}/{run.run_id}/artifacts"
    release, started = threading.Event(), threading.Semaphore(0)

    def held_body():
        yield b"x" * (1024 * 1024)
        started.release()
        release.wait(timeout=120)

    login = (os.environ.get("MLFLOW_TRACKING_USERNAME", ""), os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))

    def upload(index: int) -> None:
        requests.put(f"{artifacts}/held{index}.bin", data=held_body(), auth=login, timeout=180)

    samples: list[float] = []
    with ThreadPoolExecutor(UPLOADS_HELD) as pool:
        for index in range(UPLOADS_HELD):
            pool.submit(upload, index)
        try:
            for _ in range(UPLOADS_HELD):
                started.acquire(timeout=60)
            target = f"{url}/api/2.0/mlflow/runs/get"
            for _ in range(requests_count):
                start = time.perf_counter()
                requests.get(target, params={"run_id": workload.run_id}, auth=login, timeout=limit).raise_for_status()
                samples.append((time.perf_counter() - start) * 1000)
        except requests.Timeout:
            return None
        finally:
            release.set()
    return samples


def counted_requests(metrics_url: str) -> int:
    """How many requests one scrape of a server's metrics counts (every worker's)."""
    text = requests.get(metrics_url, timeout=30).text
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "mlflow_http_request_total"
        )
    )


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per single-call operation and server")
    parser.add_argument("--batches", type=int, default=20, help="log-batch(1000) requests per server")
    parser.add_argument("--rounds", type=int, default=10, help="turns the servers take")
    parser.add_argument("--deployments", action="store_true", help="add session 2's deployment variants")
    parser.add_argument("--metrics", action="store_true", help="the shipped server with its metrics on and off only")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 160)  # the table stays readable in a log file
    settings = Settings.load()
    use_credentials(settings)  # the client account of .env, for every client here
    if not http_ok(f"{settings.mlflow_url}/health"):
        raise SystemExit(f"no MLflow server answers at {settings.mlflow_url}: run `make up` first")
    nginx = shutil.which("nginx")

    store = "fast store" if settings.mlstack_fast_store else "MLflow's own store"
    auth = ", auth with login cache" if settings.mlflow_auth else ""
    servers = [] if args.metrics else [Server(f"shipped (gunicorn gthread, {store}{auth})", settings.mlflow_url)]
    processes: list[ManagedProcess] = []
    metrics_address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        try:
            for candidate in candidates(settings, args.deployments, args.metrics):
                if candidate.proxy_keepalive is None:
                    metrics_env = {"MLSTACK_METRICS_ADDRESS": metrics_address if candidate.name == METRICS_ON else ""}
                    process, url = start_mlflow(settings, candidate, workdir, metrics_env)
                elif nginx is None:
                    console.print(f"[yellow]skipped[/] {candidate.name}: nginx is not on PATH")
                    continue
                else:
                    upstream = next(server.url for server in servers if server.name == BASELINE)
                    process, url = start_nginx(nginx, upstream, candidate.proxy_keepalive, workdir)
                processes.append(process)
                servers.append(Server(candidate.name, url))
            console.print("waiting until every server's processes are quiet ...")
            for process in processes:
                wait_until_quiet(process.pid())
            if args.metrics:
                raws = [Server(f"{server.name}, raw HTTP", server.url) for server in servers]
            else:
                raws = [Server("shipped, raw HTTP (http.client, no mlflow client)", settings.mlflow_url)]
            workloads = [(server, Workload(server.url)) for server in servers]
            workloads += [(raw, RawHttpWorkload(raw.url)) for raw in raws]
            per_round = max(1, args.requests // args.rounds)
            batches_per_round = max(1, args.batches // args.rounds)
            for round_number in range(args.rounds):
                console.print(f"round {round_number + 1}/{args.rounds}")
                for server, workload in workloads:
                    for operation, call in workload.calls().items():
                        count = batches_per_round if operation == "log-batch(1000)" else per_round
                        timed(call, count, server.samples[operation])
            for server in servers:
                server.during_uploads = get_run_during_held_uploads(server.url)
            if args.metrics:
                counted = counted_requests(f"http://{metrics_address}/metrics")
                console.print(f"{METRICS_ON}: one scrape counts {counted} requests (this run's, every worker's)")
        finally:
            for process in processes:
                process.stop()
    print_results(console, servers, raws, args, METRICS_OFF if args.metrics else BASELINE)
    if args.metrics:
        print_metrics_cost(console, servers + raws)


def print_results(
    console: Console, servers: list[Server], raws: list[Server], args: argparse.Namespace, baseline_name: str
) -> None:
    """One row a server: median / p99 ms per request and the median's ratio to the baseline's."""
    baseline = next(server for server in servers if server.name == baseline_name)
    table = Table(
        "server",
        *(f"{operation}\nmedian / p99 ms" for operation in OPERATIONS),
        f"runs/get, {UPLOADS_HELD} uploads\nheld open: median ms",
        title=f"MLflow server latency ({args.rounds} rounds; ratio = {baseline_name}'s median / this median)",
    )
    for server in [*servers, *raws]:
        cells = []
        for operation in OPERATIONS:
            samples = server.samples[operation]
            if not samples:
                cells.append("")
                continue
            median = statistics.median(samples)
            ratio = statistics.median(baseline.samples[operation]) / median
            cells.append(f"{median:.1f} / {p99(samples):.1f} ({ratio:.1f}x)")
        if server in raws:
            held = ""
        elif server.during_uploads is None:
            held = "blocked (> 10 s)"
        else:
            held = f"{statistics.median(server.during_uploads):.1f}"
        table.add_row(server.name, *cells, held)
    console.print(table)


def print_metrics_cost(console: Console, servers: list[Server]) -> None:
    """What the request metrics add to each request: the median with them on minus with them off, through
    the mlflow client and as raw HTTP; then in-process."""
    for suffix in ("", ", raw HTTP"):
        on, off = (next(s for s in servers if s.name == name + suffix) for name in (METRICS_ON, METRICS_OFF))
        costs = [
            f"{operation} {statistics.median(on.samples[operation]) - statistics.median(off.samples[operation]):+.2f}"
            for operation in OPERATIONS
            if on.samples[operation]
        ]
        console.print(f"request metrics on - off{suffix}, medians in ms: " + ", ".join(costs))
    with (
        tempfile.TemporaryDirectory() as folder
    ):  # prometheus_client picks multiprocess mode at import: a process of its own
        code = "import server_latency; print(*server_latency.in_process_cost())"
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}
        answer = subprocess.run(
            [sys.executable, "-c", code], cwd=Path(__file__).parent, env=env, capture_output=True, text=True, check=True
        )
        off_us, on_us = map(float, answer.stdout.split())
    console.print(
        f"in-process, a Flask view: {off_us:.0f} us a request without the request metrics, {on_us:.0f} us with them"
        f" ({on_us - off_us:+.0f} us: the exporter's hooks, multiprocess mode)"
    )


def in_process_cost(batches: int = 200, batch: int = 50) -> tuple[float, float]:
    """Median microseconds a request through Flask's test client to a view answering `{}`: without and
    with mlstack_mlflow_store.metrics.RequestMetrics, taking turns batch by batch."""
    from flask import Flask
    from mlstack_mlflow_store.metrics import RequestMetrics

    clients, samples = [], ([], [])
    for metrics_on in (False, True):
        app = Flask(f"metrics-{metrics_on}")
        app.add_url_rule("/api/2.0/mlflow/runs/get", "get_run", lambda: "{}")
        if metrics_on:
            RequestMetrics(app)
        clients.append(app.test_client())
    for _ in range(batches):
        for client, into in zip(clients, samples, strict=True):
            start = time.perf_counter()
            for _ in range(batch):
                client.get("/api/2.0/mlflow/runs/get")
            into.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(samples[0]), statistics.median(samples[1])


if __name__ == "__main__":
    main()
