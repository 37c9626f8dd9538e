"""`WorkspaceFastPathStore`: the fast store with MLflow's workspaces (`MLFLOW_ENABLE_WORKSPACES=true`).

MLflow's `WorkspaceAwareSqlAlchemyStore` scopes every query to the request's workspace (the
`X-MLflow-Workspace` header, resolved by the server into `workspace_context`): its `_get_query`
joins a run to its experiment and keeps the experiment's workspace, its `_filter_experiment_ids`
keeps the experiments of the workspace. A run of another workspace is "not found", as one that
does not exist. This store is that class with the fast store's methods in front of it (the method
order puts `PostgresFastPathStore` first, MLflow's workspace store next), so every method the fast
store leaves alone, and every fallback of a fast path to MLflow's code (`super()`), is MLflow's
workspace-aware one. Per fast path:

- runs/get: the fast statement, read only when the run's experiment is in the workspace; else
  MLflow's "Run with id=... not found" (`_get_run` through the workspace `_get_query`).
- log-metric, set-tag, metrics-only log-batch (store methods and the request-level log-batch of
  routes.py, which all write through `_write_if_active`): just before the fast write, one short read
  looks the run up in the workspace; not there: MLflow's not-found error, nothing written. (A run
  never changes experiment, and an experiment changes workspace only when an admin deletes its
  workspace, so the read and the write agree.)
- search-runs (store and request-level): the page is chosen among the experiments MLflow's
  workspace `_filter_experiment_ids` keeps, as MLflow's `_search_runs` does; the run ids of the page
  are then all of the workspace.

`usable()` refuses (MLflow's own workspace store runs, saying why) when MLflow's workspace store
overrides a method the fast store replaces (a workspace rule the fast path would skip) or lacks one
the fast paths rely on.
"""

from __future__ import annotations

import logging
import os
from functools import cache

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.tracking.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore
from sqlalchemy import text

from mlstack_mlflow_store import compat
from mlstack_mlflow_store.store import _GET_RUN, PostgresFastPathStore, _run_from_row

_logger = logging.getLogger(f"mlflow.{__name__}")

#: The methods the fast store replaces: MLflow's workspace store must leave each to SqlAlchemyStore.
FAST_METHODS = ("get_run", "log_metric", "log_batch", "set_tag", "_search_runs")
#: What the fast paths take from MLflow's workspace store: its scoping of queries and experiment ids.
WORKSPACE_METHODS = ("_get_query", "_filter_experiment_ids", "_get_active_workspace")

# runs/get's statement, for a run of the workspace only (PostgreSQL folds the outer filter into it).
_GET_RUN_IN_WORKSPACE = text(f"""
SELECT run.* FROM ({_GET_RUN.text}) AS run
 WHERE run.experiment_id IN (SELECT experiment_id FROM experiments WHERE workspace = :workspace)
""")
_RUN_IN_WORKSPACE = text("""
SELECT 1 FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
 WHERE r.run_uuid = :run_id AND e.workspace = :workspace
""")


def missing() -> list[str]:
    """Why the fast paths cannot keep MLflow's workspace rules with the installed MLflow (empty: they can)."""
    layers = WorkspaceAwareSqlAlchemyStore.__mro__
    workspace_layers = layers[: layers.index(SqlAlchemyStore)]  # the classes it puts before SqlAlchemyStore
    reasons = [
        f"WorkspaceAwareSqlAlchemyStore.{name} overrides a fast path"
        for name in FAST_METHODS
        if any(name in vars(layer) for layer in workspace_layers)
    ]
    reasons += [
        f"WorkspaceAwareSqlAlchemyStore.{name} is missing"
        for name in WORKSPACE_METHODS
        if not any(name in vars(layer) for layer in workspace_layers)
    ]
    return reasons


@cache
def usable() -> bool:
    if reasons := missing():
        _logger.warning(
            "MLflow's workspace store changed (%s): mlstack's fast paths are off, MLflow's own store runs.",
            ", ".join(reasons),
        )
        return False
    return True


def build(store_uri: str, artifact_uri: str | None):
    """The store for `build_tracking_store` when workspaces are on: this one, or MLflow's own."""
    if not compat.usable() or not usable():
        return compat.own_store(store_uri, artifact_uri)
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH

    if artifact_uri is None:  # the server's artifact root, as MLflow's own builder resolves it
        artifact_uri = os.environ.get(compat.artifact_root_variable, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    _logger.info(
        "runs/get, log-metric, set-tag, log-batch and search-runs use mlstack's PostgreSQL fast paths, "
        "scoped to the request's workspace"
    )
    return WorkspaceFastPathStore(store_uri, artifact_uri)


class WorkspaceFastPathStore(PostgresFastPathStore, WorkspaceAwareSqlAlchemyStore):
    """MLflow's `WorkspaceAwareSqlAlchemyStore` with the fast store's runs/get, log-metric, set-tag,
    log-batch and search-runs, each scoped to the request's workspace as MLflow's are."""

    def get_run(self, run_id):
        params = {"run_id": run_id, "workspace": self._get_active_workspace()}
        with self.ManagedSessionMaker() as session:
            row = session.execute(_GET_RUN_IN_WORKSPACE, params).mappings().one_or_none()
        if row is None:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        return _run_from_row(row)

    def _write_if_active(self, statement, params):
        """The fast store's guarded write, for a run of the workspace only."""
        workspace = self._get_active_workspace()
        with self.ManagedSessionMaker(read_only=False) as session:
            found = session.execute(_RUN_IN_WORKSPACE, {"run_id": params["run_id"], "workspace": workspace})
            if found.scalar_one_or_none() is None:
                raise MlflowException(f"Run with id={params['run_id']} not found", RESOURCE_DOES_NOT_EXIST)
        super()._write_if_active(statement, params)
