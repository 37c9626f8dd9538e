"""The request guard: what every request must satisfy before MLflow (and its auth app) sees it.

Installed in every worker by the gunicorn hooks, first of the app's before-request functions, and
answers a clear 400 or 413 naming the value and the limit:

- **Size.** A body is at most MLSTACK_MAX_REQUEST_BYTES (API and UI routes), MLSTACK_MAX_GRAPHQL_BYTES
  (GraphQL) or MLSTACK_MAX_ARTIFACT_BYTES (artifact uploads, streamed to the store); chunked bodies
  are cut at the same limit. `filter` and `order_by` are at most MLSTACK_MAX_FILTER_LENGTH characters
  (MLflow's filter parser holds ~160 bytes per character), `max_results` at most
  MLSTACK_MAX_PAGE_SIZE; JSON nests at most 32 deep.
- **Ids in the one form the store uses.** The auth app looks a permission up by the id as written,
  the store then reads it with `int()`: `"01"`, `" 1"`, `"+1"`, `"١"` reached experiment 1 past a
  DENY. Every experiment id (query string, JSON body at any depth in snake or camel case, GraphQL
  arguments and variables, the first segment of an artifact path) must be canonical: ASCII digits,
  no sign, space or leading zero, within int64.
- **Numbers that fit.** A metric's timestamp and step, and a run's start and end time, are integers
  within int64; a metric's value a number or "NaN"/"Infinity"/"-Infinity": anything else was stored
  as 0 or broke a batch half-way. A number too large for a double (`1e400`) is refused.
- **Artifacts inside an experiment.** Artifact requests name `<experiment id>/...`; the bucket's
  root (every experiment's id) is not listed; backslashes, `.` and `..` segments are refused.
- **Page tokens** that decode to anything but MLflow's `{"offset": n}` with n >= 0 are refused.
- `server-info` needs a login like every other route but `/health` and the UI's static files.

Error answers never carry SQL: a database error's message is replaced by a plain one (the full
text goes to the server log). The limits live in `limits`, the checks of what a request carries in
`fields`; this module installs them and answers.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from mlstack_mlflow_store import fields
from mlstack_mlflow_store.limits import Refused, limit

_logger = logging.getLogger(f"mlflow.{__name__}")

ENABLE_VAR = "MLSTACK_REQUEST_GUARD"
_ARTIFACT_PATH = re.compile(r"/mlflow-artifacts/(?:artifacts|mpu/(?:create|complete|abort))(?:/(?P<path>.*))?$")


def enabled() -> bool:
    return os.environ.get(ENABLE_VAR, "true").strip().lower() not in {"0", "false", "no", "off"}


def install(app: Flask) -> None:
    """Put the guard before every other before-request function of `app` (the auth app's included)."""
    app.before_request_funcs.setdefault(None, []).insert(0, check_request)
    app.after_request_funcs.setdefault(None, []).append(hide_database_errors)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    _logger.info("the request guard checks sizes, ids and numbers of every request (%s)", ENABLE_VAR)


def check_request() -> Response | None:
    try:
        _check()
    except Refused as refused:
        if refused.status == 413:
            _drain()
        return _answer(refused.status, str(refused))
    return None


def check_for_another_app(app: Flask, environ: dict) -> Response | None:
    """The guard's checks for a request another WSGI app answers (`native_routes`): the refusal, or
    None with the body, read within the size limit, put back in `environ` for that app to read."""
    with app.request_context(environ):
        if (refusal := check_request()) is not None:
            return refusal
        try:
            body = request.get_data()
        except RequestEntityTooLarge as error:
            return _too_large(error)
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return None


_ERROR_CODES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}


def _answer(status: int, message: str) -> Response:
    response = jsonify({"error_code": _ERROR_CODES.get(status, "INVALID_PARAMETER_VALUE"), "message": message})
    response.status_code = status
    return response


def _too_large(error: RequestEntityTooLarge) -> Response:
    family, name = _family(request.path)
    _drain()
    return _answer(413, f"the request body is larger than {limit(name)} bytes, the limit for {family} ({name})")


#: How long the rest of a refused body is read and dropped before the 413 goes out (nginx's
#: lingering_time): a client or the TLS front still sending it then reads the answer, where a close
#: with the body unread would reset the connection (Python's requests sees a broken connection, the
#: front a 502). Memory stays at one piece; a body still arriving after this gets the 413 and a close.
DRAIN_SECONDS = 30.0


def _drain() -> None:
    stream, deadline = request.environ.get("wsgi.input"), time.monotonic() + DRAIN_SECONDS
    while stream is not None and time.monotonic() < deadline and stream.read(65536):
        pass


def _family(path: str) -> tuple[str, str]:
    if "/mlflow-artifacts/" in path:
        return "artifact requests", "MLSTACK_MAX_ARTIFACT_BYTES"
    if path.endswith("/graphql"):
        return "GraphQL requests", "MLSTACK_MAX_GRAPHQL_BYTES"
    return "API requests", "MLSTACK_MAX_REQUEST_BYTES"


def _check() -> None:
    path = request.path
    family, name = _family(path)
    request.max_content_length = limit(name)  # a chunked body is cut here too (413 on reading it)
    if request.content_length is not None and request.content_length > limit(name):
        raise Refused(
            413, f"the request body is {request.content_length} bytes; {family} take at most {limit(name)} ({name})"
        )
    if path.endswith("/mlflow/server-info"):
        _require_login()
    if match := _ARTIFACT_PATH.search(path):
        fields.check_artifact_path(match["path"] if match["path"] is not None else request.args.get("path"))
    elif path.endswith("/get-artifact") or path.endswith("/get-artifact/"):
        fields.check_relative_path(request.args.get("path", ""))
    for key, value in request.args.items(multi=True):
        fields.check_field(key, value, path)
    if request.mimetype == "application/json" and (request.content_length or request.headers.get("Transfer-Encoding")):
        body = fields.parse_json()
        if path.endswith("/graphql"):
            fields.check_graphql(body)
        else:
            fields.check_body(body, path)
            if "/mlflow/" in path:  # protobuf's JSON reads a null field as unset; MLflow's checks iterate it
                for key in [key for key, value in body.items() if value is None]:
                    del body[key]
    elif path.endswith("/graphql") and request.method == "GET":
        fields.check_graphql({"query": request.args.get("query"), "variables": request.args.get("variables")})


def _require_login() -> None:
    from mlstack_mlflow_store.auth import auth_on, authenticate_request_basic_auth

    if auth_on() and isinstance(authenticate_request_basic_auth(), Response):
        raise Refused(401, "you are not authenticated: log in (basic auth) to read server-info")


# --- answers ------------------------------------------------------------------------------------

_SQL_MARKERS = ("[SQL:", "(Background on this error", "psycopg.", "sqlalchemy.")


def hide_database_errors(response: Response) -> Response:
    """An error answer quoting SQL (statement, bind parameters) gets a plain message; the server log
    keeps the full text."""
    if response.status_code < 400 or response.mimetype != "application/json" or response.is_streamed:
        return response
    text = response.get_data(as_text=True)
    if not any(marker in text for marker in _SQL_MARKERS):
        return response
    _logger.error("database error answering %s %s: %s", request.method, request.path, text[:4000])
    try:
        error_code = json.loads(text).get("error_code", "INTERNAL_ERROR")
    except ValueError:
        error_code = "INTERNAL_ERROR"
    status = 400 if error_code == "INVALID_PARAMETER_VALUE" else response.status_code
    message = "the database refused this request; the server log has the details"
    replaced = jsonify({"error_code": error_code, "message": message})
    replaced.status_code = status
    return replaced
