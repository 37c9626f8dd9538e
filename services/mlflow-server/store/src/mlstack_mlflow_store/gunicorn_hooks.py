"""gunicorn configuration module for the MLflow server: `--config python:mlstack_mlflow_store.gunicorn_hooks`.

Once a worker has loaded MLflow's Flask app, and before it takes a request, install the request-level
fast paths (`routes`) when the worker's tracking store is the fast store; with MLSTACK_FAST_STORE off,
on another MLflow version or another backend, the app is left exactly as MLflow built it.
"""

from __future__ import annotations


def post_worker_init(worker) -> None:
    from mlflow.server.handlers import _get_tracking_store

    from mlstack_mlflow_store import routes
    from mlstack_mlflow_store.store import PostgresFastPathStore

    store = _get_tracking_store()
    if isinstance(store, PostgresFastPathStore):
        routes.install(worker.wsgi, store)
