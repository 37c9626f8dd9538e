"""Request-level fast paths: metrics-only log-batch straight from the request JSON to one SQL statement,
search-runs answered with each run's JSON built from its row on the fast store (through `protojson`
instead of MLflow's `message_to_json` on any other).

MLflow's log-batch handler turns the JSON into a protobuf message field by field, the message into
1000 `Metric` entities, and validates each: ~45 ms of a 2-core VM's CPU per 1000 points before the
database sees any. Here the JSON Flask already parsed (the auth app reads it to check the run's
permission) becomes five columns in one pass, and the store writes them with one statement.

MLflow's auth app parses the same body into a protobuf message too, only to find the logged models
its points name (a point's `model_id`), and checks UPDATE on the run and on each model. A body this
path takes names none, so its check is the run's alone, made without the parse; any other body
keeps MLflow's whole check. Likewise, for a person who is not an admin, the auth app parses every
runs/get, search-runs and metric-history answer back into protobuf to withhold links to logged
models they are denied (1 s for 10,000 runs); an answer that names no logged model has none to
withhold, so it is sent as it is. (MLflow 3.16's auth app does neither: it checks the run alone and
withholds no links, and is left as it is.)

Only a request MLflow would accept exactly as it is takes this path: JSON content, only `run_id` and
`metrics` (empty `params`/`tags` allowed), 1 to 1000 points of `key`, `value`, `timestamp` and an
optional `step`, with integer timestamp and step in range, a number or "NaN"/"Infinity"/"-Infinity"
value, and run id and key names MLflow's own validators pass, on an active run. Anything else,
including every error, is answered by MLflow's handler, so responses stay MLflow's to the byte.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys

from flask import Flask, Response, g, request
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.service_pb2 import SearchRuns
from mlflow.server import handlers
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_METRICS_PER_BATCH

from mlstack_mlflow_store import compat, protojson
from mlstack_mlflow_store.store import PostgresFastPathStore

#: MLflow's endpoint names for runs/log-batch and runs/search (REST and ajax routes share each).
LOG_BATCH_ENDPOINT = "_log_batch"
SEARCH_RUNS_ENDPOINT = "_search_runs"
#: MLflow's `_search_runs` request checks (mlflow/server/handlers.py, the verified version).
SEARCH_RUNS_SCHEMA = {
    "experiment_ids": [compat.assert_array],
    "filter": [compat.assert_string],
    "max_results": [compat.assert_intlike, lambda x: compat.assert_at_most(int(x), 50000)],
    "order_by": [compat.assert_array, compat.assert_strings],
}
_BODY_FIELDS = frozenset({"run_id", "metrics", "params", "tags"})
_POINT_FIELDS = frozenset({"key", "value", "timestamp", "step"})
_SPECIAL_VALUES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}  # protobuf JSON spellings
_INT64 = 2**63
# A child of MLflow's logger, so the line lands in the server's log next to MLflow's own.
_logger = logging.getLogger(f"mlflow.{__name__}")
ENABLE_VAR = "MLSTACK_FAST_ROUTES"


def enabled() -> bool:
    """Whether the request-level paths may be installed (MLSTACK_FAST_ROUTES, on unless false)."""
    return os.environ.get(ENABLE_VAR, "true").strip().lower() not in {"0", "false", "no", "off"}


def metric_columns(payload) -> tuple[str, list[str], list[float], list[int], list[int]] | None:
    """Run id, keys, values, timestamps and steps of a log-batch body MLflow accepts as it is, else None."""
    if type(payload) is not dict or not payload.keys() <= _BODY_FIELDS or payload.get("params") or payload.get("tags"):
        return None
    run_id, points = payload.get("run_id"), payload.get("metrics")
    if type(run_id) is not str or type(points) is not list or not 0 < len(points) <= MAX_METRICS_PER_BATCH:
        return None
    keys, values, timestamps, steps = [], [], [], []
    for point in points:
        if type(point) is not dict or not point.keys() <= _POINT_FIELDS:
            return None
        key, value, timestamp, step = point.get("key"), point.get("value"), point.get("timestamp"), point.get("step", 0)
        if type(key) is not str or type(timestamp) is not int or type(step) is not int:
            return None
        if type(value) is not float:
            if type(value) is int and -_INT64 <= value < _INT64:
                value = float(value)
            elif type(value) is str and value in _SPECIAL_VALUES:
                value = _SPECIAL_VALUES[value]
            else:
                return None
        keys.append(key)
        values.append(value)
        timestamps.append(timestamp)
        steps.append(step)
    if min(timestamps) < 0 or max(timestamps) >= _INT64 or min(steps) < -_INT64 or max(steps) >= _INT64:
        return None
    try:
        compat.validate_run_id(run_id)
        for key in set(keys):
            if len(key) > MAX_ENTITY_KEY_LENGTH:
                return None
            compat.validate_metric_name(key)
    except MlflowException:
        return None
    return run_id, keys, values, timestamps, steps


def request_columns():
    """`metric_columns` of this request's body, worked out once per request."""
    if "mlstack_log_batch" not in g:
        payload = request.get_json(force=True, silent=True) if request.mimetype == "application/json" else None
        g.mlstack_log_batch = metric_columns(payload)
    return g.mlstack_log_batch


def install(app: Flask, store) -> None:
    """Answer log-batch requests in `app` through `store.log_metric_columns` when they qualify, and
    check their permission without the protobuf parse when MLflow's auth app is loaded."""
    mlflow_log_batch = app.view_functions[LOG_BATCH_ENDPOINT]

    def log_batch():
        columns = request_columns()
        if columns is None:
            return mlflow_log_batch()
        try:
            store.log_metric_columns(*columns)
        except MlflowException:  # a missing or inactive run: nothing was written; MLflow's handler says why
            return mlflow_log_batch()
        return Response("{}", mimetype="application/json")

    app.view_functions[LOG_BATCH_ENDPOINT] = log_batch
    app.view_functions[SEARCH_RUNS_ENDPOINT] = search_runs
    if auth := sys.modules.get("mlflow.server.auth"):
        _install_auth_check(auth)
    _logger.info("metrics-only log-batch requests take mlstack's request-level path; search-runs answers use protojson")


@handlers.catch_mlflow_exception
def search_runs():
    """MLflow's `_search_runs`: its request parsing and checks, then on the fast store the runs' JSON
    built from their rows (`search_run_answers`), on any other MLflow's `search_runs_impl` encoded by
    protojson. Either way the same JSON value as MLflow's answer, compact."""
    message = compat.request_message(SearchRuns(), schema=SEARCH_RUNS_SCHEMA)
    store = compat.server_tracking_store()
    if not isinstance(store, PostgresFastPathStore):
        return Response(protojson.message_to_json(handlers.search_runs_impl(message)), mimetype="application/json")
    # what search_runs_impl asks of the store, for the same request
    run_view_type = ViewType.ACTIVE_ONLY
    if message.HasField("run_view_type"):
        run_view_type = ViewType.from_proto(message.run_view_type)
    runs, next_page_token = store.search_run_answers(
        experiment_ids=_readable_experiment_ids(list(message.experiment_ids)),
        filter_string=message.filter,
        run_view_type=run_view_type,
        max_results=message.max_results,
        order_by=message.order_by,
        page_token=message.page_token or None,
    )
    answer = {"runs": runs} if runs else {}
    if next_page_token:
        answer["next_page_token"] = next_page_token
    return Response(json.dumps(answer, separators=(",", ":")), mimetype="application/json")


def _readable_experiment_ids(experiment_ids: list[str]) -> list[str]:
    """The experiments of a search the person may read, as `search_runs_impl` filters them."""
    try:
        from mlflow.server import auth

        if auth.auth_config:
            return auth.filter_experiment_ids(experiment_ids)
    except ImportError:  # no auth app installed (Flask-WTF missing), as MLflow skips it
        pass
    return experiment_ids


def _install_auth_check(auth) -> None:
    """Route the auth app's log-batch check through the run-only check for bodies this path takes, and
    its logged-model redactions past answers that name no logged model. An MLflow whose auth app has
    no such check or redaction (3.16: compat.VARYING) keeps its auth app as it is."""
    mlflow_check, run_check = compat.log_batch_check, compat.can_update_run_and_models
    if mlflow_check is not None and run_check is not None:

        def validate_can_log_batch() -> bool:
            if request_columns() is not None:  # no point names a logged model: MLflow's check is the run's
                return run_check(set())
            return mlflow_check()

        for route, check in list(auth.BEFORE_REQUEST_VALIDATORS.items()):
            if check is mlflow_check:
                auth.BEFORE_REQUEST_VALIDATORS[route] = validate_can_log_batch
    model_link_redactions = {
        compat.redact_run_model_links,
        compat.redact_search_model_links,
        compat.redact_history_model_ids,
    } - {None}
    for route, redact in list(auth.AFTER_REQUEST_HANDLERS.items()):
        if redact in model_link_redactions:
            auth.AFTER_REQUEST_HANDLERS[route] = only_with_model_links(redact)


#: The JSON keys a link to a logged model is answered under (MLflow's field names, plain ASCII).
MODEL_LINK_KEYS = (b'"model_inputs"', b'"model_outputs"', b'"model_id"')


def only_with_model_links(redact):
    """`redact` (one of the auth app's logged-model redactions), for answers that name a logged model."""

    def redact_model_links(response: Response) -> None:
        body = response.get_data()
        if any(key in body for key in MODEL_LINK_KEYS):
            redact(response)

    return redact_model_links
