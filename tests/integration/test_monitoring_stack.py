"""docs/operations.md run as written on a scratch native stack: MLSTACK_MONITORING=true in .env, `mlstack
up`, a workload, then Prometheus as an admin uses it. Every target is scraped, every dashboard panel's
query returns data, every metrics endpoint answers on loopback only, `status` reports the monitoring
services with Prometheus links to the panels, and stopping the MLflow server fires MLflowServerDown at
a webhook receiver this test runs, through the real Prometheus and Alertmanager."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric
from rich.console import Console

from mlstack.envfile import update_env
from mlstack.errors import MissingToolError
from mlstack.monitoring.dashboards import panel_queries
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.runtime.native.tools import find_tools
from mlstack.settings import Settings
from tests.conftest import REQUIRED_RUNTIME, free_port, make_project, run_mlstack, wait_for
from tests.integration.test_team_access import machine_address
from tests.stack import discard

pytestmark = pytest.mark.integration

#: The dashboard with nothing to show here: no ClearML server runs natively (tests/monitoring evaluates
#: its queries over ClearML series with promtool).
NO_DATA_HERE = "clearml"


class Webhook:
    """Alertmanager's webhook receiver: records every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict] = []
        self.arrived = threading.Condition()
        received, arrived = self.notifications, self.arrived

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with arrived:
                    received.append(body)
                    arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, accept: Callable[[dict], bool], timeout: float) -> dict:
        """The first notification `accept` takes, waiting for it to arrive."""
        with self.arrived:
            found = self.arrived.wait_for(lambda: next(filter(accept, self.notifications), None), timeout)
        assert found, f"no such notification in {timeout:.0f} s; received: {self.notifications}"
        return found


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def monitored(webhook):
    """A scratch project with monitoring on, scraping each second, alerts to `webhook`; `mlstack up` as a
    user runs it. Yields its settings."""
    root = Path(tempfile.mkdtemp(prefix="mlstack-monitoring-"))
    settings = make_project(root / "project")
    update_env(
        settings.env_file,
        {"MLSTACK_MONITORING": "true", "MLSTACK_SCRAPE_INTERVAL": "1s", "MLSTACK_ALERT_WEBHOOK_URL": webhook.url},
    )
    settings = Settings.load(settings.project_dir)
    try:
        find_tools(settings)
    except MissingToolError as missing:
        if REQUIRED_RUNTIME == "native":
            pytest.fail(f"MLSTACK_REQUIRE_RUNTIME=native but monitoring cannot run natively: {missing}")
        pytest.skip(str(missing))
    runtime = NativeRuntime(settings, Console(stderr=True))
    try:
        up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
        assert up.returncode == 0, up.stdout + up.stderr
        yield Settings.load(settings.project_dir)
    finally:
        discard(runtime)
        shutil.rmtree(root, ignore_errors=True)


def prometheus(settings: Settings, path: str, **params) -> dict:
    answer = requests.get(f"http://127.0.0.1:{settings.prometheus_port}/api/v1/{path}", params=params, timeout=10)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", (path, params, body)
    return body["data"]


def targets_all_up(settings: Settings) -> list[dict] | None:
    """Prometheus' active targets once there are some and every one is up, else None."""
    targets = prometheus(settings, "targets")["activeTargets"]
    return targets if targets and all(target["health"] == "up" for target in targets) else None


def workload(settings: Settings) -> None:
    """What a team does in a day, in small: an experiment, runs with metrics, an artifact, a model and
    its version, a finished and a failed run, a request for a run that does not exist; then a backup."""
    client = MlflowClient(settings.mlflow_url)
    experiment = client.create_experiment("monitoring-workload")
    for status in ("FINISHED", "FAILED"):
        run = client.create_run(experiment)
        points = [Metric("loss", 1.0 / (step + 1), 1_700_000_000_000 + step, step) for step in range(500)]
        client.log_batch(run.info.run_id, metrics=points)
        client.log_text(run.info.run_id, "weights " * 1000, "model/weights.txt")
        client.set_terminated(run.info.run_id, status)
    client.create_registered_model("monitoring-model")
    client.create_model_version("monitoring-model", f"runs:/{run.info.run_id}/model", run.info.run_id)
    with pytest.raises(Exception, match="403|RESOURCE_DOES_NOT_EXIST"):  # the auth app answers 403 for it
        client.get_run("0" * 32)
    backup = run_mlstack(settings.project_dir, "backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr


@pytest.fixture(scope="module")
def after_workload(monitored, monkeypatch_module):
    for name, value in {
        "MLFLOW_TRACKING_USERNAME": monitored.mlflow_tracking_username,
        "MLFLOW_TRACKING_PASSWORD": monitored.mlflow_tracking_password.get_secret_value(),
    }.items():
        monkeypatch_module.setenv(name, value)
    workload(monitored)
    return monitored


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_up_starts_monitoring_and_status_links_each_panel_in_prometheus(monitored):
    status = run_mlstack(monitored.project_dir, "status", "--stack", "mlflow", "--runtime", "native")
    assert status.returncode == 0, status.stdout + status.stderr
    for service in ("postgres-exporter", "mlstack-exporter", "alertmanager", "prometheus"):
        assert service in status.stdout
    assert f"127.0.0.1:{monitored.prometheus_port}/graph?" in status.stdout
    config = monitored.state_path / "monitoring"
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in config.iterdir()} == dict.fromkeys(
        ("prometheus.yml", "alertmanager.yml", "alerts.yml"), "0o600"
    )


def test_every_scrape_target_is_up(monitored):
    targets = wait_for("every target scraped and up", lambda: targets_all_up(monitored))
    assert {target["labels"]["job"] for target in targets} == {
        "prometheus",
        "alertmanager",
        "mlflow",
        "postgres",
        "seaweedfs",
        "mlstack",
    }


def test_the_rules_are_loaded(monitored):
    rules = [rule["name"] for group in prometheus(monitored, "rules")["groups"] for rule in group["rules"]]
    assert "MLflowServerDown" in rules and "NoRecentBackup" in rules


@pytest.mark.parametrize("panel", panel_queries(), ids=lambda panel: f"{panel.dashboard}:{panel.panel}")
def test_each_dashboard_panel_returns_data_after_a_workload(after_workload, panel):
    """Every panel's query is valid PromQL for Prometheus; each MLflow panel has data once the workload
    ran (those NO_DATA_HERE only where their source runs)."""
    if panel.dashboard == NO_DATA_HERE:
        prometheus(after_workload, "query", query=panel.expr)
        return
    wait_for(
        f"data for {panel.dashboard} / {panel.panel}: {panel.expr}",
        lambda: prometheus(after_workload, "query", query=panel.expr)["result"],
    )


def test_the_workload_shows_in_the_exporters_numbers(after_workload):
    def value(query: str) -> float | None:
        result = prometheus(after_workload, "query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    wait_for("both runs counted", lambda: value('sum(mlstack_mlflow_runs{status=~"FINISHED|FAILED"})') == 2)
    assert value("mlstack_mlflow_registered_models") == 1
    assert value("mlstack_mlflow_model_versions") == 1
    # PostgreSQL's statistics reach pg_stat_user_tables up to 10 s after an idle connection's inserts
    wait_for("every point counted", lambda: (value("mlstack_mlflow_metric_points_written_total") or 0) >= 1000)
    assert value("sum(mlstack_bucket_objects)") >= 2
    wait_for(
        "the backup counted", lambda: (value("time() - mlstack_backup_last_success_timestamp_seconds") or 1e9) < 600
    )
    wait_for(
        "log-batch counted under its route",
        lambda: (
            value('sum(mlflow_http_request_total{method="POST"})')
            and value('sum(mlflow_http_request_duration_seconds_count{route=~".*/runs/log-batch"})')
        ),
    )


def test_every_metrics_endpoint_and_ui_answers_on_loopback_only(monitored):
    address = machine_address()
    if address.startswith("127."):
        pytest.skip("this machine has no network address other than loopback")
    s = monitored
    ports = (
        s.prometheus_port,
        s.alertmanager_port,
        s.postgres_exporter_port,
        s.mlstack_exporter_port,
        s.mlflow_metrics_port,
    )
    for port in ports:
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200, port
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
            pass


def test_stopping_the_server_fires_mlflow_server_down_at_the_webhook(monitored, webhook):
    """Last: the server stops, Prometheus sees its target down for the rule's `for`, Alertmanager posts."""
    runtime = NativeRuntime(monitored, Console(stderr=True))
    runtime.stop_server()
    try:
        notification = webhook.wait_for(
            lambda body: (
                body["status"] == "firing"
                and any(alert["labels"]["alertname"] == "MLflowServerDown" for alert in body["alerts"])
            ),
            timeout=240,
        )
        alert = next(alert for alert in notification["alerts"] if alert["labels"]["alertname"] == "MLflowServerDown")
        assert alert["annotations"]["runbook"] and alert["labels"]["severity"] == "critical"
    finally:
        runtime.start_server(migrate=False)


def test_on_ha_every_member_is_scraped_and_each_replica_reports_its_lag():
    """The ha topology with monitoring on: each MLflow replica and SeaweedFS member is a target of its own
    and up, the exporter reports the replication lag of exactly the two Patroni replicas, by name."""
    from tests.ha_drills import ha_stack, roles

    with ha_stack("mlstack-monitoring-ha-", {"MLSTACK_MONITORING": "true", "MLSTACK_SCRAPE_INTERVAL": "1s"}) as stack:
        settings = stack.settings

        targets = wait_for("every target of the ha stack up", lambda: targets_all_up(settings))
        per_job = {job: sum(t["labels"]["job"] == job for t in targets) for job in ("mlflow", "seaweedfs")}
        assert per_job == {"mlflow": 2, "seaweedfs": 8}

        def lag_of_both_replicas():
            result = prometheus(settings, "query", query="mlstack_postgres_replication_lag_bytes")["result"]
            return result if len(result) == 2 else None

        lag = {
            item["metric"]["member"]: float(item["value"][1]) for item in wait_for("both lags", lag_of_both_replicas)
        }
        assert set(lag) == {name for name, role in roles(settings).items() if role != "leader"}
        assert all(0 <= behind < 64 * 1024**2 for behind in lag.values()), lag
