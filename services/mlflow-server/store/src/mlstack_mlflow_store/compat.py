"""The one door to MLflow's private names: every internal the plugin relies on, under a name that
says the public behaviour it stands for, and a self-check of them all.

`compat.order_by_clauses` is MLflow's `_get_orderby_clauses`, looked up when first used. `missing()`
lists what an installed MLflow lacks; the store builder asks `usable()` once at start and, when
anything is missing, runs MLflow's own store and handlers, saying so in one log line, instead of
failing requests later.

The supported minors (SUPPORTED_MLFLOW) do not all have the same internals: `VARYING` holds those
some of them lack, each with what the plugin does where it is missing, which is what that MLflow
itself does there. This is the one place that knows how the supported minors differ; the rest of the
plugin asks for `compat.parse_experiment_ids` and gets the installed MLflow's behaviour.
"""

from __future__ import annotations

import importlib
import logging
from functools import cache
from typing import Any

_logger = logging.getLogger(f"mlflow.{__name__}")

#: our name -> (MLflow module, its private name, the public behaviour it stands for)
INTERNALS: dict[str, tuple[str, str, str]] = {
    "own_store": ("mlflow.tracking._tracking_service.utils", "_get_sqlalchemy_store", "the store MLflow builds"),
    "artifact_root_variable": (
        "mlflow.tracking._tracking_service.utils",
        "_SERVER_ARTIFACT_ROOT_ENV_VAR",
        "where `mlflow server` passes its artifact root",
    ),
    "server_tracking_store": ("mlflow.server.handlers", "_get_tracking_store", "the store the handlers use"),
    "request_message": ("mlflow.server.handlers", "_get_request_message", "a request body parsed and checked"),
    "assert_array": ("mlflow.server.handlers", "_assert_array", "search-runs' list checks"),
    "assert_string": ("mlflow.server.handlers", "_assert_string", "search-runs' filter check"),
    "assert_intlike": ("mlflow.server.handlers", "_assert_intlike", "search-runs' max_results check"),
    "assert_at_most": ("mlflow.server.handlers", "_assert_less_than_or_equal", "search-runs' page size limit"),
    "assert_strings": ("mlflow.server.handlers", "_assert_item_type_string", "search-runs' order_by items check"),
    "order_by_clauses": (
        "mlflow.store.tracking.sqlalchemy_store",
        "_get_orderby_clauses",
        "search-runs' ORDER BY as MLflow builds it",
    ),
    "filter_clauses": (
        "mlflow.store.tracking.sqlalchemy_store",
        "_get_sqlalchemy_filter_clauses",
        "search-runs' WHERE as MLflow builds it",
    ),
    "validate_metric_name": ("mlflow.utils.validation", "_validate_metric_name", "log-metric's key check"),
    "validate_run_id": ("mlflow.utils.validation", "_validate_run_id", "a run id's check"),
    "validate_metric": ("mlflow.utils.validation", "_validate_metric", "log-metric's point check"),
    "validate_batch_data": ("mlflow.utils.validation", "_validate_batch_log_data", "log-batch's points check"),
    "validate_batch_limits": ("mlflow.utils.validation", "_validate_batch_log_limits", "log-batch's size limits"),
    "validate_tag": ("mlflow.utils.validation", "_validate_tag", "set-tag's check (and truncation)"),
    "run_name_from_tags": ("mlflow.utils.mlflow_tags", "_get_run_name_from_tags", "a nameless run's name"),
    "legacy_admin_login": (
        "mlflow.server.auth",
        "_is_disabled_legacy_admin_login",
        "the auth app's refusal of the old default admin password",
    ),
}


def _int_experiment_ids(experiment_ids):
    """search-runs' experiment ids as MLflow 3.16's `_search_runs` reads them: `int()` of each (an id
    that is not a number raises ValueError, which MLflow's managed session turns into INTERNAL_ERROR)."""
    return [int(experiment_id) for experiment_id in experiment_ids]


def _can_update_experiment_as(username: str, experiment_id: str, created_type: str) -> bool:
    """Whether `username` may create a `created_type` in the experiment, as MLflow 3.16 decides any
    write there: its permission on the experiment (grant, role or default) allows updates."""
    from mlflow.server import auth

    return auth._get_experiment_permission(experiment_id, username).can_update


#: The internals only some supported minors have: our name -> (MLflow module, its private name, what
#: the plugin uses where the installed MLflow lacks it, what that MLflow does instead). A stand-in of
#: None: that MLflow has no such step, and the plugin adds none (its caller leaves the step out).
VARYING: dict[str, tuple[str, str, Any, str]] = {
    "parse_experiment_ids": (
        "mlflow.utils.validation",
        "_parse_experiment_ids",
        _int_experiment_ids,
        "3.16 reads search-runs' experiment ids with int() (a bad id: INTERNAL_ERROR, not INVALID_PARAMETER_VALUE)",
    ),
    "log_batch_check": (
        "mlflow.server.auth",
        "validate_can_log_batch",
        None,
        "3.16's auth app checks log-batch with validate_can_update_run: UPDATE on the run, from its id, "
        "without parsing the body (its points' logged models are not checked)",
    ),
    "can_update_run_and_models": (
        "mlflow.server.auth",
        "_validate_can_update_run_and_models",
        None,
        "log-batch's permission check on its run and models; 3.16 has none (see log_batch_check)",
    ),
    "create_in_experiment_as": (
        "mlflow.server.auth",
        "_authorize_create_in_experiment_as",
        _can_update_experiment_as,
        "3.16 has no per-type create check: a write in an experiment needs update on the experiment",
    ),
    "redact_run_model_links": (
        "mlflow.server.auth",
        "redact_get_run_model_links",
        None,
        "3.16's auth app sends runs/get answers as they are: no logged-model links withheld",
    ),
    "redact_search_model_links": (
        "mlflow.server.auth",
        "redact_search_runs_model_links",
        None,
        "3.16's auth app sends search-runs answers as they are: no logged-model links withheld",
    ),
    "redact_history_model_ids": (
        "mlflow.server.auth",
        "redact_metric_history_model_ids",
        None,
        "3.16's auth app sends metric-history answers as they are: no logged-model ids withheld",
    ),
}
#: SqlAlchemyStore methods the fast store calls or overrides, and what each does
STORE_METHODS: dict[str, str] = {
    "_search_runs": "search-runs, overridden by the fast store",
    "_run_with_deadlock_retry": "MLflow's retry of a write on a deadlock",
    "_check_run_is_active": "the refusal of writes to a deleted run",
    "_validate_max_results_param": "search-runs' page size check",
    "_get_dialect": "the database dialect for filter clauses",
    "_filter_experiment_ids": "search-runs' experiments that exist",
    "_get_run_inputs": "a page's dataset inputs in one query",
    "_get_model_outputs_bulk": "a page's model outputs in one query",
}
#: The auth app's internals are checked only where it runs (importing it sets it up).
_AUTH_MODULE = "mlflow.server.auth"


def __getattr__(name: str) -> Any:
    if name in VARYING:
        module, private, stand_in, _ = VARYING[name]
        return getattr(importlib.import_module(module), private, stand_in)
    if name not in INTERNALS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, private, _ = INTERNALS[name]
    return getattr(importlib.import_module(module), private)


def missing(with_auth: bool = False) -> list[str]:
    """The internals the installed MLflow lacks (the auth app's only `with_auth`); a `VARYING` one is
    never missing: where MLflow lacks it, its stand-in is that MLflow's own behaviour."""
    lacking = []
    for module_name, private, _ in INTERNALS.values():
        if module_name == _AUTH_MODULE and not with_auth:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            lacking.append(module_name)
            continue
        if not hasattr(module, private):
            lacking.append(f"{module_name}.{private}")
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    lacking += [f"SqlAlchemyStore.{name}" for name in STORE_METHODS if not hasattr(SqlAlchemyStore, name)]
    return sorted(set(lacking))


@cache
def usable() -> bool:
    """Whether every internal the fast store needs is there; if not, says once which are missing."""
    if lacking := missing():
        from mlflow import version

        _logger.warning(
            "MLflow %s lacks %s: mlstack's fast paths are off, MLflow's own store and handlers run.",
            version.VERSION,
            ", ".join(lacking),
        )
        return False
    return True
