"""The tracking server's own metrics (services/mlflow-server/store metrics.py and its gunicorn hooks):
the route family label, the metrics address and who refuses a bad one, what the native runtime
passes the single server and each ha replica, what a worker records, and the master's folder.
tests/integration/test_server_metrics.py scrapes a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import prometheus_client  # noqa: F401  imported before any test sets PROMETHEUS_MULTIPROC_DIR: in-memory values here
import pytest
from flask import Flask, Response, abort, request
from mlflow.server import handlers
from mlstack_mlflow_store import gunicorn_hooks, metrics
from mlstack_mlflow_store.launch import Refused, prepare
from werkzeug.test import Client

from mlstack.envfile import update_env
from mlstack.runtime.native.ha_ports import MLFLOW_BLOCK
from mlstack.runtime.native.server import (
    mlflow_metrics_targets,
    mlflow_replicas,
    mlflow_server_env,
)
from mlstack.settings import Settings

# --- the route family ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_app() -> Flask:
    from mlflow.server import app

    return app


def route_of(app: Flask, path: str, method: str = "GET") -> str:
    with app.test_request_context(path, method=method):
        return metrics.route(request)


@pytest.mark.parametrize(
    ("path", "method", "family"),
    [
        ("/api/2.0/mlflow/runs/get", "GET", "/api/2.0/mlflow/runs/get"),
        ("/ajax-api/2.0/mlflow/runs/get", "GET", "/api/2.0/mlflow/runs/get"),
        ("/api/2.0/mlflow/runs/log-batch", "POST", "/api/2.0/mlflow/runs/log-batch"),
        ("/ajax-api/2.0/mlflow/runs/log-batch", "POST", "/api/2.0/mlflow/runs/log-batch"),
        (
            "/api/2.0/mlflow-artifacts/artifacts/1/0123abcd/artifacts/model.pkl",
            "PUT",
            "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>",
        ),
        ("/static-files/static/js/main.1234.js", "GET", "/static-files/<path:path>"),
        ("/api/2.0/mlflow/no-such-route", "GET", metrics.OTHER),
        ("/wp-login.php", "GET", metrics.OTHER),
        ("/api/2.0/mlflow/runs/log-batch", "GET", metrics.OTHER),  # 405: no rule for the method
    ],
)
def test_the_route_family_is_the_url_rule_with_ajax_api_folded_onto_api(mlflow_app, path, method, family):
    assert route_of(mlflow_app, path, method) == family


def test_route_families_are_bounded_by_the_apps_rules_whatever_the_paths(mlflow_app):
    rules = {metrics.family(rule.rule) for rule in mlflow_app.url_map.iter_rules()}
    paths = [f"/api/2.0/mlflow/{os.urandom(6).hex()}" for _ in range(50)] + [
        f"/api/2.0/mlflow-artifacts/artifacts/{n}/{os.urandom(8).hex()}/f.txt" for n in range(50)
    ]
    families = {route_of(mlflow_app, path) for path in paths}
    assert families == {metrics.OTHER, "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"}
    assert families - {metrics.OTHER} <= rules
    assert not any("/ajax-api/" in rule for rule in rules)


# --- the address -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:9189", ("127.0.0.1", 9189)),
        ("0.0.0.0:9189", ("0.0.0.0", 9189)),
        (" 127.0.0.1:1 ", ("127.0.0.1", 1)),
        ("[::1]:9189", ("::1", 9189)),
        ("", None),
    ],
)
def test_the_metrics_address_is_host_and_port_or_nothing(value, parsed):
    assert metrics.address({metrics.ADDRESS_VAR: value}) == parsed
    assert metrics.address({}) is None


@pytest.mark.parametrize(
    "value", ["9189", ":9189", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:91x9", "127.0.0.1:٩١٨٩"]
)
def test_a_metrics_address_that_is_not_host_and_port_is_refused_by_the_launcher_naming_it(value):
    environ = {metrics.ADDRESS_VAR: value, "MLFLOW_AUTH": "false"}
    with pytest.raises(ValueError) as raised:
        metrics.address(environ)
    assert f"MLSTACK_METRICS_ADDRESS={value!r}" in str(raised.value)
    with pytest.raises(Refused) as refused:
        prepare(["mlflow", "server"], environ)
    assert str(refused.value) == str(raised.value)


def test_the_launcher_passes_a_metrics_address_on():
    _, env, _ = prepare(["mlflow", "server"], {metrics.ADDRESS_VAR: "127.0.0.1:9189", "MLFLOW_AUTH": "false"})
    assert env[metrics.ADDRESS_VAR] == "127.0.0.1:9189"


# --- what the native runtime passes ------------------------------------------------------------


def test_the_single_server_serves_metrics_on_loopback_only_with_monitoring_on(project):
    assert metrics.ADDRESS_VAR not in mlflow_server_env(project)
    update_env(project.env_file, {"MLSTACK_MONITORING": "true", "MLFLOW_METRICS_PORT": "19189"})
    settings = Settings.load(project.project_dir)

    assert mlflow_server_env(settings)[metrics.ADDRESS_VAR] == "127.0.0.1:19189"
    assert mlflow_metrics_targets(settings) == ["127.0.0.1:19189"]


def test_each_ha_replica_serves_its_metrics_on_a_port_of_its_own_in_the_mlflow_block(project):
    update_env(
        project.env_file, {"MLSTACK_TOPOLOGY": "ha", "MLSTACK_HA_PORT_BASE": "21000", "MLSTACK_MONITORING": "true"}
    )
    settings = Settings.load(project.project_dir)
    replicas = mlflow_replicas(settings)

    addresses = [mlflow_server_env(settings, replica)[metrics.ADDRESS_VAR] for replica in replicas]
    assert addresses == mlflow_metrics_targets(settings) == [f"127.0.0.1:{r.metrics_port}" for r in replicas]
    first, size = MLFLOW_BLOCK
    ports = [r.port for r in replicas] + [r.metrics_port for r in replicas]
    assert len(set(ports)) == len(ports)
    assert all(21000 + first <= port < 21000 + first + size for port in ports)
    assert str(settings.mlflow_metrics_port) not in " ".join(addresses)


# --- one worker -------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """A multiprocess folder, as the master gives its workers (the exporter insists on one)."""
    monkeypatch.setenv(metrics.FOLDER_VAR, str(tmp_path))
    return tmp_path


def samples(metric) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, for every sample of `metric`."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in metric.collect()
        for sample in family.samples
    }


def app_with_a_guard_and_a_rewriter() -> Flask:
    """Flask with what the shipped app has around MLflow's views: a before-request refusal (the guard,
    the auth app) and an after-request function that changes the status (the guard's hide_database_errors)."""
    app = Flask("metrics")
    app.before_request(lambda: Response("no login", 401) if "anonymous" in request.args else None)

    def rewrite(response: Response) -> Response:
        if response.status_code == 500:
            response.status_code = 400
        return response

    app.after_request(rewrite)
    app.add_url_rule("/api/2.0/mlflow/runs/get", "get_run", lambda: "{}")
    app.add_url_rule("/ajax-api/2.0/mlflow/runs/get", "ajax_get_run", lambda: "{}")
    app.add_url_rule("/api/2.0/mlflow/runs/broken", "broken", lambda: abort(500))
    app.add_url_rule("/health", "health", lambda: "OK")
    return app


def test_a_worker_counts_every_request_under_its_route_family_with_the_status_sent(folder):
    app = app_with_a_guard_and_a_rewriter()
    recorded = metrics.RequestMetrics(app)
    client = Client(app)
    for path in ("/api/2.0/mlflow/runs/get", "/ajax-api/2.0/mlflow/runs/get", "/api/2.0/mlflow/runs/get?anonymous=1"):
        client.get(path)
    assert client.get("/api/2.0/mlflow/runs/broken").status_code == 400
    client.get("/nowhere")
    client.get("/health")

    route = "/api/2.0/mlflow/runs/get"
    counts = {
        labels: value
        for (name, labels), value in samples(recorded.duration).items()
        if name.endswith("_count") and value
    }
    assert counts == {
        (("method", "GET"), ("route", route), ("status", "200")): 2,
        (("method", "GET"), ("route", route), ("status", "401")): 1,  # refused before the view: timed too
        (("method", "GET"), ("route", "/api/2.0/mlflow/runs/broken"), ("status", "400")): 1,  # as sent
        (("method", "GET"), ("route", metrics.OTHER), ("status", "404")): 1,
    }
    totals = {labels: value for (name, labels), value in samples(recorded.total).items() if name.endswith("_total")}
    assert sum(totals.values()) == 5  # /health is not counted, as in MLflow's exporter
    assert totals[(("method", "GET"), ("status", "401"))] == 1


def test_the_public_app_gets_no_metrics_route(folder):
    app = app_with_a_guard_and_a_rewriter()
    metrics.RequestMetrics(app)
    assert Client(app).get("/metrics").status_code == 404


def test_a_request_another_app_answers_is_counted_under_its_prefix_until_its_body_is_sent(folder):
    recorded = metrics.RequestMetrics(Flask("metrics"))
    sent = []

    def streaming(environ, start_response):
        start_response("202 Accepted", [])
        yield b"one"
        sent.append("body")
        yield b"two"

    def failing(environ, start_response):
        raise RuntimeError("the app broke")
        yield b""

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/traces"}
    answer = recorded.count(streaming, environ, lambda *args: None, "/ajax-api/3.0/jobs/")
    assert not samples(recorded.total)  # nothing until the answer is read
    assert b"".join(answer) == b"onetwo" and sent == ["body"]
    with pytest.raises(RuntimeError):
        list(recorded.count(failing, environ, lambda *args: None, "/v1/traces"))

    counts = {labels: value for (name, labels), value in samples(recorded.duration).items() if name.endswith("_count")}
    assert counts == {
        (("method", "POST"), ("route", "/api/3.0/jobs/"), ("status", "202")): 1,
        (("method", "POST"), ("route", "/v1/traces"), ("status", "500")): 1,
    }
    exceptions = {labels: value for (name, labels), value in samples(recorded.exceptions).items() if "total" in name}
    assert exceptions == {(("method", "POST"), ("status", "500")): 1}


def test_without_a_metrics_address_neither_the_master_nor_a_worker_loads_anything(monkeypatch):
    monkeypatch.delenv(metrics.ADDRESS_VAR, raising=False)
    monkeypatch.setenv(metrics.FOLDER_VAR, "untouched")
    monkeypatch.setenv("MLSTACK_FASTAPI_ROUTES", "false")
    monkeypatch.setenv("MLSTACK_REQUEST_GUARD", "false")
    monkeypatch.setattr(handlers, "_get_tracking_store", object)  # not the fast store: no request-level paths
    worker = SimpleNamespace(wsgi=Flask("off"))
    gunicorn_hooks.post_worker_init(worker)
    assert worker.wsgi.before_request_funcs == {} and worker.wsgi.after_request_funcs == {}
    gunicorn_hooks.on_starting(None)
    gunicorn_hooks.on_exit(None)
    assert os.environ[metrics.FOLDER_VAR] == "untouched"


# --- the master ------------------------------------------------------------------------------------


def test_each_server_start_gets_a_fresh_private_folder_removed_at_exit(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv(metrics.ADDRESS_VAR, "127.0.0.1:9189")
    monkeypatch.setenv(metrics.FOLDER_VAR, "left by an earlier start")
    folders = []
    for _ in range(2):
        gunicorn_hooks.on_starting(None)
        folders.append(Path(os.environ[metrics.FOLDER_VAR]))
        assert folders[-1].is_dir() and not any(folders[-1].iterdir())
        assert folders[-1].stat().st_mode & 0o777 == 0o700
        gunicorn_hooks.on_exit(None)
        assert not folders[-1].exists()
    assert folders[0] != folders[1]


def test_the_folders_of_masters_that_died_go_at_the_next_start(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv(metrics.ADDRESS_VAR, "127.0.0.1:9189")
    monkeypatch.setenv(metrics.FOLDER_VAR, "")
    finished = subprocess.Popen(["true"])
    finished.wait()
    # a dead master's, one of this process's number (a master of an earlier start in a container), a live one's
    names = [f"{metrics.FOLDER_PREFIX}{pid}-x" for pid in (finished.pid, os.getpid(), os.getppid())]
    for name in [*names, "unrelated"]:
        (tmp_path / name).mkdir()
    gunicorn_hooks.on_starting(None)
    fresh = Path(os.environ[metrics.FOLDER_VAR])
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([names[2], "unrelated", fresh.name])
    assert fresh.name.startswith(f"{metrics.FOLDER_PREFIX}{os.getpid()}-")


def test_a_dead_workers_gauges_go_and_its_counts_stay(folder, monkeypatch):
    monkeypatch.setenv(metrics.ADDRESS_VAR, "127.0.0.1:9189")
    files = ["counter_41.db", "histogram_41.db", "gauge_all_41.db", "gauge_livesum_41.db", "gauge_all_42.db"]
    for name in files:
        (folder / name).write_bytes(b"")
    gunicorn_hooks.child_exit(None, SimpleNamespace(pid=41))
    assert sorted(path.name for path in folder.iterdir()) == ["counter_41.db", "gauge_all_42.db", "histogram_41.db"]


def test_a_metrics_address_in_use_stops_the_server_naming_it(folder, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        monkeypatch.setenv(metrics.ADDRESS_VAR, f"127.0.0.1:{port}")
        with pytest.raises(SystemExit) as stopped:
            gunicorn_hooks.when_ready(None)
    assert f"MLSTACK_METRICS_ADDRESS=127.0.0.1:{port}" in str(stopped.value.code)
