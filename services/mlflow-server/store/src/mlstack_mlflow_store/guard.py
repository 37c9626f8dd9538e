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
text goes to the server log).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

_logger = logging.getLogger(f"mlflow.{__name__}")

ENABLE_VAR = "MLSTACK_REQUEST_GUARD"
MiB = 1024 * 1024
#: name -> default; each read from the server's environment (.env in both runtimes)
LIMITS = {
    "MLSTACK_MAX_REQUEST_BYTES": 16 * MiB,
    "MLSTACK_MAX_GRAPHQL_BYTES": 1 * MiB,
    "MLSTACK_MAX_ARTIFACT_BYTES": 10 * 1024 * MiB,
    "MLSTACK_MAX_FILTER_LENGTH": 65536,
    "MLSTACK_MAX_PAGE_SIZE": 50000,
}
MAX_JSON_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_EXPERIMENT_ID_KEYS = frozenset({"experiment_id", "experiment_ids", "experimentId", "experimentIds"})
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]*")
_INT64_KEYS = frozenset({"timestamp", "step", "start_time", "end_time", "startTime", "endTime"})
_FILTER_KEYS = frozenset({"filter", "filter_string", "filterString", "order_by", "orderBy"})
_SPECIAL_VALUES = frozenset({"NaN", "Infinity", "-Infinity"})
_METRIC_ROUTES = ("/mlflow/runs/log-batch", "/mlflow/runs/log-metric")
_ARTIFACT_PATH = re.compile(r"/mlflow-artifacts/(?:artifacts|mpu/(?:create|complete|abort))(?:/(?P<path>.*))?$")


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def enabled() -> bool:
    return os.environ.get(ENABLE_VAR, "true").strip().lower() not in {"0", "false", "no", "off"}


def limit(name: str) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else LIMITS[name]


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
        _check_artifact_path(match["path"] if match["path"] is not None else request.args.get("path"))
    elif path.endswith("/get-artifact") or path.endswith("/get-artifact/"):
        _check_relative_path(request.args.get("path", ""))
    for key, value in request.args.items(multi=True):
        _check_field(key, value, path)
    if request.mimetype == "application/json" and (request.content_length or request.headers.get("Transfer-Encoding")):
        body = _parse_json()
        if path.endswith("/graphql"):
            _check_graphql(body)
        else:
            _check_body(body, path)
            if "/mlflow/" in path:  # protobuf's JSON reads a null field as unset; MLflow's checks iterate it
                for key in [key for key, value in body.items() if value is None]:
                    del body[key]
    elif path.endswith("/graphql") and request.method == "GET":
        _check_graphql({"query": request.args.get("query"), "variables": request.args.get("variables")})


def _require_login() -> None:
    from mlstack_mlflow_store.auth import auth_on, authenticate_request_basic_auth

    if auth_on() and isinstance(authenticate_request_basic_auth(), Response):
        raise Refused(401, "you are not authenticated: log in (basic auth) to read server-info")


# --- JSON ---------------------------------------------------------------------------------------


def _read_body() -> bytes:
    """The body, whole. A chunked one is read piece by piece so that one past the limit raises 413
    (werkzeug's read-all stops quietly at the limit); Flask's get_data() returns it afterwards."""
    if request.content_length is not None:
        return request.get_data(cache=True)
    pieces = []
    while piece := request.stream.read(65536):
        pieces.append(piece)
    request._cached_data = b"".join(pieces)  # werkzeug's cache of get_data()
    return request._cached_data


def _parse_json() -> Any:
    raw = _read_body()
    try:
        body = json.loads(raw, parse_float=_finite_float, parse_constant=_refuse_constant)
    except RecursionError:
        raise Refused(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except Refused:
        raise
    except ValueError as error:
        raise Refused(400, f"the body is not valid JSON: {error}") from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise Refused(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(body, str):  # older MLflow clients encode the JSON twice; MLflow decodes it again
        try:
            inner = json.loads(body, parse_float=_finite_float, parse_constant=_refuse_constant)
        except ValueError:
            inner = None
        if isinstance(inner, dict) and _depth(inner) <= MAX_JSON_DEPTH:
            return inner
    if not isinstance(body, dict):
        raise Refused(400, f"the body must be a JSON object, not {type(body).__name__} ({raw[:40]!r})")
    request._cached_json = (body, body)  # what Flask's get_json() returns, parsed once (werkzeug's cache)
    return body


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise Refused(400, f'the number {text[:40]} does not fit a double (write "Infinity" for infinity)')
    return value


def _refuse_constant(name: str) -> float:
    raise Refused(400, f'{name} is not JSON: write it as the string "{name}"')


def _depth(value: Any) -> int:
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _items(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a JSON document, at any depth."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                yield key, child
                pending.append(child)
        elif isinstance(item, list):
            pending.extend(item)


def _check_body(body: dict, path: str) -> None:
    """Ids at any depth (v3 requests nest them); sizes, tokens and int64s among the top-level fields
    and a metric's points (deeper down, a dataset's records are the user's own data)."""
    for key, value in _items(body):
        if key in _EXPERIMENT_ID_KEYS:
            _check_field(key, value, path)
    for key, value in body.items():
        if key not in _EXPERIMENT_ID_KEYS:
            _check_field(key, value, path)
    if path.endswith(_METRIC_ROUTES):
        batch = path.endswith("log-batch")
        points = body.get("metrics") if batch else [body]
        for index, point in enumerate(points if isinstance(points, list) else []):
            if not isinstance(point, dict):
                continue
            for key in ("timestamp", "step"):
                if point.get(key) is not None:
                    _check_int64(point[key], f"metrics[{index}].{key}" if batch else key)
            if "value" in point:
                _check_metric_value(point["value"], f"metrics[{index}].value" if batch else "value")


def _check_field(key: str, value: Any, path: str) -> None:
    if key in _EXPERIMENT_ID_KEYS:
        for one in value if isinstance(value, list) else [value]:
            _check_experiment_id(one, key)
    elif key in _FILTER_KEYS:
        _check_filter(value, key)
    elif key in ("max_results", "maxResults"):
        _check_page_size(value, key)
    elif key in ("page_token", "pageToken"):
        _check_page_token(value, key)
    elif key in _INT64_KEYS and "/mlflow/" in path and value is not None:
        _check_int64(value, key)  # a top-level int64 of a tracking request (runs/create's start_time, ...)


def _check_experiment_id(value: Any, key: str) -> None:
    if isinstance(value, str) and not (_CANONICAL_ID.fullmatch(value) and int(value) <= INT64_MAX):
        raise Refused(
            400,
            f"{key} {value[:40]!r} is not an experiment id as the store writes it: ASCII digits without sign, "
            "spaces or leading zeros",
        )


def _check_filter(value: Any, key: str) -> None:
    longest = limit("MLSTACK_MAX_FILTER_LENGTH")
    for text in value if isinstance(value, list) else [value]:
        if isinstance(text, str) and len(text) > longest:
            raise Refused(400, f"{key} is {len(text)} characters long; at most {longest} (MLSTACK_MAX_FILTER_LENGTH)")
        if isinstance(text, str) and "\x00" in text:
            raise Refused(400, f"{key} holds a NUL character")


def _check_page_size(value: Any, key: str) -> None:
    largest = limit("MLSTACK_MAX_PAGE_SIZE")
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(400, f"{key} {json.dumps(value)[:40]} is not an integer")
    size = value
    if size > largest:
        raise Refused(400, f"{key}={size} is larger than the page size limit {largest} (MLSTACK_MAX_PAGE_SIZE)")


def _check_page_token(value: Any, key: str) -> None:
    if not isinstance(value, str) or not value:
        return
    if not value.isascii():
        raise Refused(400, f"{key} {value[:60]!r} is not a page token this server issued (not base64)")
    try:
        decoded = json.loads(base64.b64decode(value, validate=False))
    except (binascii.Error, ValueError, RecursionError):
        return  # not an offset token: whoever issued it reads it (MLflow answers an unreadable one with 400)
    offset = decoded.get("offset", 0) if isinstance(decoded, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= INT64_MAX:
        raise Refused(400, f"{key} {value[:60]!r} is not a page token this server issued")


def _check_int64(value: Any, key: str) -> None:
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value):
        value = int(value)  # protobuf's JSON spelling of an int64
    if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
        raise Refused(400, f"{key} {str(value)[:40]} is not an integer within int64: nothing was written")


def _check_metric_value(value: Any, where: str) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            float(value)  # finite: the parser refused 1e400; an integer may still be too large
            return
        except OverflowError:
            pass
    elif isinstance(value, str):  # protobuf's JSON takes a double written as a string
        try:
            if value in _SPECIAL_VALUES or math.isfinite(float(value)):
                return
        except ValueError:
            pass
    raise Refused(400, f"{where} {json.dumps(value)[:40]} is not a number: nothing was written")


# --- artifacts ----------------------------------------------------------------------------------


def _check_artifact_path(path: str | None) -> None:
    if not path:
        raise Refused(
            403, "the artifact store's root lists every experiment: list one experiment's artifacts (path=<id>/...)"
        )
    _check_relative_path(path)
    _check_experiment_id(path.split("/", 1)[0], "the artifact path's experiment id")


def _check_relative_path(path: str) -> None:
    if "\\" in path:
        raise Refused(400, f"artifact path {path[:80]!r} contains a backslash: separate folders with '/'")
    if any(segment in (".", "..") for segment in path.split("/")) or path.startswith("/"):
        raise Refused(400, f"artifact path {path[:80]!r} must be relative, without '.' or '..' segments")


# --- GraphQL ------------------------------------------------------------------------------------


def _check_graphql(body: dict) -> None:
    """Every argument and input field of the query, with the variables it names filled in."""
    from graphql import GraphQLError, parse
    from graphql.language import ArgumentNode, ListValueNode, ObjectFieldNode, StringValueNode, VariableNode, visit
    from graphql.language.visitor import Visitor

    query, variables = body.get("query"), body.get("variables")
    if isinstance(variables, str) and variables:
        try:
            variables = json.loads(variables)
        except ValueError:
            raise Refused(400, "the GraphQL variables are not JSON") from None
    variables = variables if isinstance(variables, dict) else {}
    for key, value in _items(variables):
        _check_field(key, value, "/graphql")
    if not isinstance(query, str):
        return
    longest = limit("MLSTACK_MAX_FILTER_LENGTH")
    if len(query) > longest:
        message = f"the GraphQL query is {len(query)} characters; at most {longest} (MLSTACK_MAX_FILTER_LENGTH)"
        raise Refused(400, message)
    try:
        document = parse(query)
    except GraphQLError:
        return  # MLflow answers it
    found: list[tuple[str, Any]] = []

    def value_of(node):
        if isinstance(node, StringValueNode):
            return node.value
        if isinstance(node, VariableNode):
            return variables.get(node.name.value)
        if isinstance(node, ListValueNode):
            return [value_of(item) for item in node.values]
        return None

    class Fields(Visitor):
        def enter(self, node, *args):
            if isinstance(node, ArgumentNode | ObjectFieldNode):
                found.append((node.name.value, value_of(node.value)))

    visit(document, Fields())
    for key, value in found:
        if value is not None:
            _check_field(key, value, "/graphql")


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
