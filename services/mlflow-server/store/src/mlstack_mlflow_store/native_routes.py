"""MLflow 3's FastAPI-only routes, served by the gunicorn workers next to MLflow's Flask app.

Under gunicorn, `mlflow server` serves the Flask app alone, so every route MLflow 3 mounts only on
its FastAPI app (`mlflow.server.fastapi_app`: OTLP trace ingest at /v1/traces, server-side jobs,
the AI gateway, the assistant, the MCP-server registry) answered 404. Each worker here builds that
FastAPI app around its own Flask app, with the auth app's permission middleware when auth is on,
and hands it a request (through a2wsgi: an ASGI app inside a WSGI server) only when the path is
under one of its routes and the Flask app has no route for it. Every other request goes to the
Flask app as before: the Flask routes keep their latency and their answers. The request guard
checks these requests too (size, ids) before FastAPI reads them.
"""

from __future__ import annotations

import logging
import re

from a2wsgi import ASGIMiddleware
from flask import Flask

from mlstack_mlflow_store import auth, guard

_logger = logging.getLogger(f"mlflow.{__name__}")
_PLACEHOLDER = re.compile(r"\{[^}]*\}.*$")


class NativeRoutes:
    """A WSGI app: FastAPI-only routes to MLflow's FastAPI app, every other request to `flask_app`."""

    def __init__(self, flask_app: Flask) -> None:
        from mlflow.server.fastapi_app import create_fastapi_app

        fastapi_app = create_fastapi_app(flask_app)
        if auth.auth_on():
            from mlflow.server.auth import add_fastapi_permission_middleware

            add_fastapi_permission_middleware(fastapi_app)
        self.flask_app = flask_app
        self.fastapi = ASGIMiddleware(fastapi_app)
        self.flask_routes = flask_app.url_map.bind("localhost")
        # The literal start of each route's path (OpenAPI lists every route FastAPI serves).
        self.prefixes = tuple(sorted({_PLACEHOLDER.sub("", path) for path in fastapi_app.openapi()["paths"]}))

    def __call__(self, environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if not path.startswith(self.prefixes) or self.flask_routes.test(path, method):
            return self.flask_app(environ, start_response)
        if guard.enabled() and (refusal := guard.check_for_another_app(self.flask_app, environ)) is not None:
            return refusal(environ, start_response)
        return self.fastapi(environ, start_response)


def install(worker) -> None:
    """Serve the FastAPI-only routes from this gunicorn worker (its app becomes `NativeRoutes`)."""
    worker.wsgi = NativeRoutes(worker.wsgi)
    _logger.info("MLflow's FastAPI-only routes are served under %d path prefixes", len(worker.wsgi.prefixes))
