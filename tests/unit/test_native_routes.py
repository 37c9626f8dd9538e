"""Which app answers what (services/mlflow-server/store native_routes.py): a path of MLflow 3's
FastAPI-only routes goes to MLflow's FastAPI app after the request guard, every path the Flask app
has a route for stays with the Flask app, and the switch leaves the worker's app as it was.
tests/integration/test_server_routes.py asks every route on a live stack."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from flask import Flask
from mlflow.server import handlers
from mlstack_mlflow_store import auth, gunicorn_hooks
from mlstack_mlflow_store.native_routes import NativeRoutes
from mlstack_mlflow_store.store import PostgresFastPathStore
from werkzeug.test import Client


@pytest.fixture(autouse=True)
def without_the_auth_app(monkeypatch):
    """Dispatch alone: the auth app's middleware is the live tests' (another test may have loaded it)."""
    monkeypatch.setattr(auth, "auth_on", lambda: False)


@pytest.fixture
def client(monkeypatch) -> Client:
    monkeypatch.setenv("MLSTACK_MAX_REQUEST_BYTES", "1024")
    app = Flask("flask-side")
    app.add_url_rule("/health", "health", lambda: "flask")
    app.add_url_rule("/api/3.0/mlflow/server-info", "server_info", lambda: "flask server-info")
    return Client(NativeRoutes(app))


def test_a_fastapi_only_route_is_answered_by_the_fastapi_app(client):
    answer = client.post("/v1/traces", data=b"", headers={"Content-Type": "application/x-protobuf"})
    assert answer.status_code == 422  # FastAPI's validation: the experiment header is missing
    assert answer.get_json()["detail"][0]["loc"] == ["header", "x-mlflow-experiment-id"]


def test_a_route_both_apps_have_stays_with_flask(client):
    assert client.get("/health").get_data(as_text=True) == "flask"
    assert client.get("/api/3.0/mlflow/server-info").get_data(as_text=True) == "flask server-info"


def test_a_path_neither_serves_gets_flasks_404(client):
    answer = client.get("/api/2.0/mlflow/nothing-here")
    assert answer.status_code == 404 and "<title>404 Not Found</title>" in answer.get_data(as_text=True)


def test_the_request_guard_checks_fastapi_requests_before_they_are_read(client):
    too_large = client.post("/v1/traces", data=b"x" * 2048, headers={"X-Mlflow-Experiment-Id": "1"})
    assert too_large.status_code == 413
    assert "MLSTACK_MAX_REQUEST_BYTES" in too_large.get_json()["message"]
    odd_id = client.post("/ajax-api/3.0/jobs/search", json={"params": {"experiment_id": "01"}})
    assert odd_id.status_code == 400 and "01" in json.dumps(odd_id.get_json())


def test_the_fastapi_routes_have_a_switch(monkeypatch):
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda: PostgresFastPathStore.__new__(PostgresFastPathStore))
    monkeypatch.setenv("MLSTACK_FAST_ROUTES", "false")
    monkeypatch.setenv("MLSTACK_FASTAPI_ROUTES", "false")
    worker = SimpleNamespace(wsgi=Flask("switch"))
    app = worker.wsgi
    gunicorn_hooks.post_worker_init(worker)
    assert worker.wsgi is app


def test_a_route_both_apps_have_stays_with_flask_for_every_path():
    from mlflow.server import app as mlflow_flask_app

    routes = NativeRoutes(mlflow_flask_app)
    assert "/v1/traces" in routes.prefixes
    odd = "/api/2.0/mlflow-artifacts/artifacts/1\n/run/artifacts/x.txt"  # Flask's rule does not match it
    assert not odd.startswith(routes.prefixes) and not "/health".startswith(routes.prefixes)
