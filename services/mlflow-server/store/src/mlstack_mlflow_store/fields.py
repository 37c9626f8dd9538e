"""The guard's checks of what a request carries: its JSON body (parsed once, depth-limited, finite
numbers), every experiment id in the one form the store uses, filters, page sizes and tokens,
int64s, metric values, artifact paths and GraphQL documents. Each raises `Refused` naming the value
and the limit."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterator
from typing import Any

from flask import request

from mlstack_mlflow_store.limits import INT64_MAX, INT64_MIN, MAX_JSON_DEPTH, Refused, limit

_EXPERIMENT_ID_KEYS = frozenset({"experiment_id", "experiment_ids", "experimentId", "experimentIds"})
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]*")
_INT64_KEYS = frozenset({"timestamp", "step", "start_time", "end_time", "startTime", "endTime"})
_FILTER_KEYS = frozenset({"filter", "filter_string", "filterString", "order_by", "orderBy"})
_SPECIAL_VALUES = frozenset({"NaN", "Infinity", "-Infinity"})
_METRIC_ROUTES = ("/mlflow/runs/log-batch", "/mlflow/runs/log-metric")


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


def parse_json() -> Any:
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


def check_body(body: dict, path: str) -> None:
    """Ids at any depth (v3 requests nest them); sizes, tokens and int64s among the top-level fields
    and a metric's points (deeper down, a dataset's records are the user's own data)."""
    for key, value in _items(body):
        if key in _EXPERIMENT_ID_KEYS:
            check_field(key, value, path)
    for key, value in body.items():
        if key not in _EXPERIMENT_ID_KEYS:
            check_field(key, value, path)
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


def check_field(key: str, value: Any, path: str) -> None:
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


def check_artifact_path(path: str | None) -> None:
    if not path:
        raise Refused(
            403, "the artifact store's root lists every experiment: list one experiment's artifacts (path=<id>/...)"
        )
    check_relative_path(path)
    _check_experiment_id(path.split("/", 1)[0], "the artifact path's experiment id")


def check_relative_path(path: str) -> None:
    if "\\" in path:
        raise Refused(400, f"artifact path {path[:80]!r} contains a backslash: separate folders with '/'")
    if any(segment in (".", "..") for segment in path.split("/")) or path.startswith("/"):
        raise Refused(400, f"artifact path {path[:80]!r} must be relative, without '.' or '..' segments")


# --- GraphQL ------------------------------------------------------------------------------------


def check_graphql(body: dict) -> None:
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
        check_field(key, value, "/graphql")
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
            check_field(key, value, "/graphql")
