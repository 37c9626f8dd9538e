"""MLflow 3's FastAPI-only routes, served by the gunicorn workers next to MLflow's Flask app.

Under gunicorn, `mlflow server` serves the Flask app alone, so every route MLflow 3 mounts only on
its FastAPI app (`mlflow.server.fastapi_app`: OTLP trace ingest at /v1/traces, server-side jobs,
the AI gateway, the assistant, the MCP-server registry) answered 404. Each worker here builds that
FastAPI app around its own Flask app, with the auth app's permission middleware when auth is on,
and hands it a request (through a2wsgi: an ASGI app inside a WSGI server) only when the path is
under one of its routes and the Flask app has no route for it. Every other request goes to the
Flask app as before: the Flask routes keep their latency and their answers. The request guard
checks these requests too (size, ids) before FastAPI reads them, and with the request metrics on they
are counted as Flask's are (`metrics`), under the FastAPI-only prefix they fall under.
"""

from __future__ import annotations

import io
import logging
import os
import re

from a2wsgi import ASGIMiddleware
from flask import Flask, Response, jsonify, request

from mlstack_mlflow_store import auth, compat, guard
from mlstack_mlflow_store.metrics import RequestMetrics

_logger = logging.getLogger(f"mlflow.{__name__}")
ENABLE_VAR = "MLSTACK_FASTAPI_ROUTES"
_PLACEHOLDER = re.compile(r"\{[^}]*\}.*$")
_PARAMETER = re.compile(r"\{[^}]*\}")


class NativeRoutes:
    """A WSGI app: FastAPI-only routes to MLflow's FastAPI app, every other request to `flask_app`."""

    def __init__(self, flask_app: Flask, metrics: RequestMetrics | None = None) -> None:
        from mlflow.server.fastapi_app import create_fastapi_app

        fastapi_app = create_fastapi_app(flask_app)
        if auth.auth_on():
            from mlflow.server.auth import add_fastapi_permission_middleware

            add_fastapi_permission_middleware(fastapi_app)
        self.flask_app = flask_app
        self.metrics = metrics
        self.fastapi = ASGIMiddleware(fastapi_app)
        self.flask_routes = flask_app.url_map.bind("localhost")
        # The literal start of the path of each route FastAPI serves (OpenAPI lists them all) that the
        # Flask app does not: a route both have (artifacts, health) stays Flask's for every path.
        self.prefixes = tuple(
            sorted(
                {
                    _PLACEHOLDER.sub("", path)
                    for path, operations in fastapi_app.openapi()["paths"].items()
                    if not all(
                        self.flask_routes.test(_PARAMETER.sub("x", path), method.upper()) for method in operations
                    )
                }
            )
        )

    def __call__(self, environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if not path.startswith(self.prefixes) or self.flask_routes.test(path, method):
            return self.flask_app(environ, start_response)
        if self.metrics is not None:
            family = max((prefix for prefix in self.prefixes if path.startswith(prefix)), key=len)
            return self.metrics.count(self.answer, environ, start_response, family)
        return self.answer(environ, start_response)

    def answer(self, environ, start_response):
        """A request for a FastAPI-only route: the request guard's and the job check's refusal, or
        MLflow's FastAPI app's answer."""
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if guard.enabled() and (refusal := guard.check_for_another_app(self.flask_app, environ)) is not None:
            return refusal(environ, start_response)
        if auth.auth_on() and method == "POST" and path.endswith(JOB_SUBMISSION):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            with self.flask_app.request_context(environ):
                refusal = job_refusal()
            if refusal is not None:
                return refusal(environ, start_response)
            environ["wsgi.input"] = io.BytesIO(body)  # read again, from its start, by the job API
        return self.fastapi(environ, start_response)


#: The jobs API's submission route (mlflow.server.job_api).
JOB_SUBMISSION = "/ajax-api/3.0/jobs/"


#: MLflow's permission resource type of traces (RESOURCE_TYPE_TRACE; jobs write assessments on them).
TRACE = "trace"


def job_refusal() -> Response | None:
    """A job writes into the experiment its params name with the server's credentials, and MLflow's
    auth app asks only for a login to submit one: here a person who is not an admin needs what a
    trace write in that experiment needs (a reader's job would otherwise write assessments)."""
    from mlflow.server.auth import store

    login = auth.authenticate_request_basic_auth()
    if isinstance(login, Response):
        return login
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("params"), dict):
        return _refuse(400, "INVALID_PARAMETER_VALUE", "a job submission is a JSON object with `job_name` and `params`")
    experiment_id = body["params"].get("experiment_id")
    if experiment_id is None or store.get_user(login.username).is_admin:
        return None
    if not compat.create_in_experiment_as(login.username, str(experiment_id), TRACE):
        message = f"{login.username!r} may not write in experiment {experiment_id}, where this job would write"
        return _refuse(403, "PERMISSION_DENIED", message)
    return None


def _refuse(status: int, error_code: str, message: str) -> Response:
    answer = jsonify({"error_code": error_code, "message": message})
    answer.status_code = status
    return answer


def enabled() -> bool:
    """Whether the FastAPI-only routes are served (MLSTACK_FASTAPI_ROUTES, on unless false)."""
    return os.environ.get(ENABLE_VAR, "true").strip().lower() not in {"0", "false", "no", "off"}


def install(worker, metrics: RequestMetrics | None = None) -> None:
    """Serve the FastAPI-only routes from this gunicorn worker (its app becomes `NativeRoutes`), counted
    in `metrics` when given."""
    worker.wsgi = NativeRoutes(worker.wsgi, metrics)
    _logger.info("MLflow's FastAPI-only routes are served under %d path prefixes", len(worker.wsgi.prefixes))
