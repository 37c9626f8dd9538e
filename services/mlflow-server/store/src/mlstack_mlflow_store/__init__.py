"""MLflow tracking-store plugin for the mlstack server: PostgreSQL fast paths, opt-in.

MLflow builds the store for a `postgresql://` backend URI through the `mlflow.tracking_store`
entry point named `postgresql`, which this package provides. The builder returns
`PostgresFastPathStore` only when the server runs with `MLSTACK_FAST_STORE=true`, on an MLflow
minor version the fast paths were verified against (SUPPORTED_MLFLOW: 3.16 and 3.17), with workspaces
on `WorkspaceFastPathStore` (workspaces.py); otherwise it returns exactly the store MLflow itself
would have built.
"""

from __future__ import annotations

import logging
import os

from packaging.version import Version

#: The MLflow minor versions whose schema and store semantics the fast paths are verified against:
#: CI runs the equivalence tests (tests/integration/test_fast_store.py, test_fast_search.py) under
#: each (`python -m tests.mlflow_versions`). Supporting a new minor is one entry here, proven by them.
#: 3.17 is the pinned one; 3.16 is the previous minor, whose differences (internals it lacks and what
#: it does instead) compat.VARYING holds.
SUPPORTED_MLFLOW: tuple[tuple[int, int], ...] = ((3, 16), (3, 17))
ENABLE_VAR = "MLSTACK_FAST_STORE"

# A child of MLflow's logger, so the line lands in the server's log next to MLflow's own.
_logger = logging.getLogger(f"mlflow.{__name__}")


def fast_store_requested() -> bool:
    """Whether this process asked for the fast paths (`MLSTACK_FAST_STORE=true`)."""
    return os.environ.get(ENABLE_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def build_tracking_store(store_uri: str, artifact_uri: str | None = None):
    """MLflow's store builder for `postgresql*` URIs, with the fast paths when requested."""
    # MLflow imports stay in here: MLflow loads this module while it is itself being imported.
    from mlflow import version
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH

    from mlstack_mlflow_store import compat

    if not fast_store_requested():
        return compat.own_store(store_uri, artifact_uri)
    if Version(version.VERSION).release[:2] not in SUPPORTED_MLFLOW:
        _logger.warning(
            "%s is set but MLflow %s is not a supported version (%s); using MLflow's own store.",
            ENABLE_VAR,
            version.VERSION,
            ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED_MLFLOW),
        )
        return compat.own_store(store_uri, artifact_uri)
    if MLFLOW_ENABLE_WORKSPACES.get():  # the fast paths scoped to the request's workspace, as MLflow's are
        from mlstack_mlflow_store.workspaces import build

        return build(store_uri, artifact_uri)
    if not compat.usable():  # it says which internals are missing
        return compat.own_store(store_uri, artifact_uri)

    from mlstack_mlflow_store.store import PostgresFastPathStore

    if artifact_uri is None:  # the server's artifact root, as MLflow's own builder resolves it
        artifact_uri = os.environ.get(compat.artifact_root_variable, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    _logger.info("runs/get, log-metric, set-tag, log-batch and search-runs use mlstack's PostgreSQL fast paths")
    return PostgresFastPathStore(store_uri, artifact_uri)
