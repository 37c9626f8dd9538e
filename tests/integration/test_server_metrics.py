"""The tracking server's own metrics on real servers, started here as the native runtime starts them
(mlflow_server_command and mlflow_server_env) on the session stack's stores: with MLSTACK_MONITORING
on, one scrape of the metrics port counts every request each gunicorn worker served, under its route
family and with the status sent, FastAPI-only routes included; the public port serves no /metrics;
the workers' metric files go with the server. With it off, nothing listens but the public port and
no worker keeps a metric file."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from mlstack.health import http_ok
from mlstack.runtime.native.process import ManagedProcess
from mlstack.runtime.native.server import mlflow_server_command, mlflow_server_env
from tests.conftest import free_port

pytestmark = pytest.mark.integration

#: The folders the servers' masters make for their workers' metric files (mlstack_mlflow_store.metrics).
FOLDER_PREFIX = "mlstack-mlflow-metrics-"
RUNS_GET = "/api/2.0/mlflow/runs/get"


@dataclass
class Server:
    process: ManagedProcess
    url: str
    port: int
    metrics_port: int | None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def listening_ports(self) -> set[int]:
        """The ports any process of the server's group listens on."""
        ports = set()
        for pid in self.process.group():
            with contextlib.suppress(psutil.Error):
                connections = psutil.Process(pid).net_connections(kind="inet")
                ports |= {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
        return ports

    def metric_files(self) -> dict[int, set[Path]]:
        """pid -> the metric files that process has mapped (a worker maps its own, e.g. counter_PID.db)."""
        mapped = {}
        for pid in self.process.group():
            with contextlib.suppress(psutil.Error):
                paths = {Path(m.path) for m in psutil.Process(pid).memory_maps() if FOLDER_PREFIX in m.path}
                if paths:
                    mapped[pid] = paths
        return mapped

    def workers_that_counted(self) -> set[int]:
        return {pid for pid, paths in self.metric_files().items() if any(p.name == f"counter_{pid}.db" for p in paths)}


@retry(retry=retry_if_result(lambda up: not up), wait=wait_fixed(0.5), stop=stop_after_delay(180))
def healthy(process: ManagedProcess, url: str) -> bool:
    if not process.is_running():
        raise AssertionError(f"the server stopped while starting:\n{process.tail()}")
    return http_ok(f"{url}/health")


@contextlib.contextmanager
def tracking_server(stack, tmp_path: Path, monitoring: bool) -> Iterator[Server]:
    """A tracking server on free ports, on the stack's stores, MLSTACK_MONITORING as given."""
    port, metrics_port = free_port(), free_port()
    settings = stack.settings.model_copy(update={"mlstack_monitoring": monitoring, "mlflow_metrics_port": metrics_port})
    process = ManagedProcess(f"metrics-{port}", tmp_path / "run", tmp_path / "logs")
    process.start(mlflow_server_command(settings, "127.0.0.1", port), env=mlflow_server_env(settings))
    url = f"http://127.0.0.1:{port}"
    try:
        healthy(process, url)
        yield Server(process, url, port, metrics_port if monitoring else None)
    finally:
        process.stop()


def a_run(stack) -> str:
    """A run made through the stack's own server (requests to the server under test are all counted)."""
    with requests.Session() as session:
        session.auth = stack.client_auth
        api = f"{stack.tracking_uri}/api/2.0/mlflow"
        name = f"metrics-{os.urandom(4).hex()}"
        experiment_id = session.post(f"{api}/experiments/create", json={"name": name}, timeout=30).json()
        run = session.post(f"{api}/runs/create", json={"experiment_id": experiment_id["experiment_id"]}, timeout=30)
        return run.json()["run"]["info"]["run_id"]


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """One scrape: each sample name's (labels, value) pairs."""
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, answer.text
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def summed(samples: list[tuple[dict[str, str], float]], *names: str) -> Counter:
    """The samples' values summed by the values of the labels `names`."""
    sums: Counter = Counter()
    for labels, value in samples:
        sums[tuple(labels[name] for name in names)] += value
    return +sums  # without zeros


def test_one_scrape_counts_every_workers_requests_by_route_family(mlflow_stack, tmp_path):
    run_id = a_run(mlflow_stack)
    settings = mlflow_stack.settings
    admin = (settings.mlflow_auth_admin_username, settings.mlflow_auth_admin_password.get_secret_value())
    sent: Counter = Counter()  # (method, route, status) as answered

    def ask(method: str, path: str, route: str, login=mlflow_stack.client_auth, **kwargs) -> None:
        # a connection of its own each: the workers take turns accepting them
        answer = requests.request(method, server.url + path, auth=login, timeout=60, **kwargs)
        sent[(method, route, str(answer.status_code))] += 1

    @retry(retry=retry_if_result(lambda workers: len(workers) < 2), stop=stop_after_delay(120))
    def spread_over_the_workers() -> set[int]:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: ask("GET", RUNS_GET, RUNS_GET, params={"run_id": run_id}), range(16)))
        return server.workers_that_counted()

    with tracking_server(mlflow_stack, tmp_path, monitoring=True) as server:
        assert server.listening_ports() == {server.port, server.metrics_port}
        workers = spread_over_the_workers()
        ask("GET", f"/ajax-api/2.0/mlflow/runs/get?run_id={run_id}", RUNS_GET)  # the UI's path: the same family
        ask("GET", f"{RUNS_GET}?run_id={run_id}", RUNS_GET, login=None)  # refused before MLflow's view
        ask("GET", "/api/2.0/mlflow/no-such-route", "other")
        ask("POST", "/ajax-api/3.0/jobs/search", "/api/3.0/jobs/search", json={})  # FastAPI's, not Flask's
        ask("POST", "/v1/traces", "/v1/traces", data=b"")
        public = requests.get(f"{server.url}/metrics", auth=admin, timeout=30)  # past every permission check
        sent[("GET", "other", str(public.status_code))] += 1
        assert requests.get(f"{server.url}/health", timeout=30).status_code == 200  # not counted

        found = scrape(server.metrics_url)
        folders = {path.parent for paths in server.metric_files().values() for path in paths}  # every worker's

    assert len(workers) >= 2
    assert public.status_code == 404 and "mlflow_http_request" not in public.text
    assert summed(found["mlflow_http_request_duration_seconds_count"], "method", "route", "status") == sent
    assert {status for _, _, status in sent} >= {"200", "401", "404"}
    by_method_and_status: Counter = Counter()
    for (method, _, status), count in sent.items():
        by_method_and_status[(method, status)] += count
    assert summed(found["mlflow_http_request_total"], "method", "status") == by_method_and_status
    assert len(folders) == 1


def test_each_start_counts_from_zero_in_a_folder_of_its_own(mlflow_stack, tmp_path):
    """Stopping a server that served concurrent requests may end in SIGKILL (gunicorn's graceful stop
    outlasting ManagedProcess.stop's 30 s), before the master removes its folder: the next start does."""
    with tracking_server(mlflow_stack, tmp_path, monitoring=True) as server:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda _: requests.get(f"{server.url}/api/2.0/mlflow/nowhere", timeout=60), range(16))
            )
        statuses = Counter((str(answer.status_code),) for answer in answers)
        assert summed(scrape(server.metrics_url)["mlflow_http_request_total"], "status") == statuses
        (first,) = {path.parent for paths in server.metric_files().values() for path in paths}
    with tracking_server(mlflow_stack, tmp_path, monitoring=True) as restarted:
        found = scrape(restarted.metrics_url)
        (second,) = {path.parent for paths in restarted.metric_files().values() for path in paths}
    assert "mlflow_http_request_total" not in found
    assert second != first and not first.exists()


def test_without_monitoring_nothing_but_the_public_port_listens(mlflow_stack, tmp_path):
    run_id = a_run(mlflow_stack)
    with tracking_server(mlflow_stack, tmp_path, monitoring=False) as server:
        answer = requests.get(
            f"{server.url}{RUNS_GET}", params={"run_id": run_id}, auth=mlflow_stack.client_auth, timeout=30
        )
        assert answer.status_code == 200
        assert server.listening_ports() == {server.port}
        assert server.metric_files() == {}
        assert not any("MLSTACK_METRICS_ADDRESS" in psutil.Process(pid).environ() for pid in server.process.group())
