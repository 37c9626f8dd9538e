"""gunicorn configuration module for the MLflow server: `--config python:mlstack_mlflow_store.gunicorn_hooks`.

Once a worker has loaded MLflow's Flask app, and before it takes a request: install the request
guard (`guard`: sizes, ids and numbers; off with MLSTACK_REQUEST_GUARD=false), and the request-level
fast paths (`routes`) when the worker's tracking store is the fast store; with MLSTACK_FAST_STORE
off, on another MLflow version or another backend, MLflow's views are left as MLflow built them.
"""

from __future__ import annotations


def post_worker_init(worker) -> None:
    from mlflow.server.handlers import _get_tracking_store

    from mlstack_mlflow_store import guard, routes
    from mlstack_mlflow_store.store import PostgresFastPathStore

    if guard.enabled():
        guard.install(worker.wsgi)
    store = _get_tracking_store()
    if isinstance(store, PostgresFastPathStore):
        routes.install(worker.wsgi, store)
