"""Every route a default `mlflow server` of the pinned version serves is served by the shipped stack,
behind the same authentication: the Flask app's rules and the routes MLflow 3 mounts only on its
FastAPI app (OTLP traces, jobs, gateway, assistant, MCP servers), each asked as the admin with its
placeholders filled, must reach a handler (an answer about the request, never "no such route");
asked without a login, every one but the public few (health, the UI's files) must be refused (401, or
403 where the request guard refuses the request itself)."""

from __future__ import annotations

import re

import pytest
import requests

pytestmark = pytest.mark.integration

#: What fills a route's placeholders: a file of the UI's build for its static routes, experiment 0's
#: artifact folder for artifact paths, else "0".
UI_FILE = "favicon.ico"
ARTIFACT_PATH = "0/route-probe/file.txt"
#: Methods a route answers by itself (HEAD and OPTIONS come with every route).
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
#: Answered without a login by a server with basic auth: health, the UI's files, the version.
PUBLIC = re.compile(r"^/(health|version|static-files/|build/|$)")


def filled(path: str) -> str:
    """`path` (a Flask rule or a FastAPI path) with its placeholders filled."""
    if path.startswith(("/static-files/", "/build/")):
        return re.sub(r"<[^>]+>", UI_FILE, path)
    path = re.sub(r"<(?:path:)?artifact_path>|\{artifact_path(?::path)?\}", ARTIFACT_PATH, path)
    return re.sub(r"<[^>]+>|\{[^}]+\}", "0", path)


def default_server_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of MLflow's default server app (`mlflow.server.fastapi_app`:
    the Flask app's rules and the FastAPI app's own routes), placeholders filled."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import create_fastapi_app

    routes = {
        (method, filled(rule.rule)) for rule in flask_app.url_map.iter_rules() for method in rule.methods & METHODS
    }
    for path, operations in create_fastapi_app(flask_app).openapi()["paths"].items():
        routes |= {(method.upper(), filled(path)) for method in operations if method.upper() in METHODS}
    return sorted(routes)


def no_such_route(response: requests.Response) -> bool:
    """The answer of a server without the route: Flask's 404 page, FastAPI's {"detail": "Not Found"},
    or a 405 from the app that does not serve the method. A handler's own 404 (an entity MLflow does
    not have, MLflow's `_not_implemented` routes) is an answer."""
    if response.status_code == 405:
        return True
    return response.status_code == 404 and (
        "<title>404 Not Found</title>" in response.text or response.text == '{"detail":"Not Found"}'
    )


ROUTES = default_server_routes()


def test_the_default_server_has_the_fastapi_only_routes_to_check():
    paths = {path for _, path in ROUTES}
    assert {"/v1/traces", "/ajax-api/3.0/jobs/search", "/ajax-api/3.0/mlflow/assistant/config"} <= paths
    assert any(path.startswith("/api/3.0/mlflow/mcp-servers") for path in paths)
    assert any(path.startswith("/gateway/") for path in paths)
    assert len(ROUTES) > 200


def test_every_route_of_the_default_server_answers_on_the_stack(mlflow_stack):
    settings = mlflow_stack.settings
    admin = (settings.mlflow_auth_admin_username, settings.mlflow_auth_admin_password.get_secret_value())
    missing = []
    with requests.Session() as session:
        for method, path in ROUTES:
            body = {"data": b"route probe"} if method == "PUT" else {"json": {}}
            response = session.request(method, mlflow_stack.tracking_uri + path, auth=admin, timeout=60, **body)
            if no_such_route(response):
                missing.append(f"{method} {path}: {response.status_code} {response.text[:80]!r}")
    assert not missing, f"{len(missing)} of {len(ROUTES)} routes missing:\n" + "\n".join(missing)


def test_every_route_but_the_public_ones_refuses_an_anonymous_request(mlflow_stack):
    answered = []
    with requests.Session() as session:
        for method, path in ROUTES:
            if PUBLIC.match(path):
                continue
            response = session.request(method, mlflow_stack.tracking_uri + path, json={}, timeout=60)
            if response.status_code not in (401, 403):
                answered.append(f"{method} {path}: {response.status_code} {response.text[:80]!r}")
    assert not answered, "answered without a login:\n" + "\n".join(answered)
