"""gunicorn configuration module for the MLflow server: `--config python:mlstack_mlflow_store.gunicorn_hooks`.

Once a worker has loaded MLflow's Flask app, and before it takes a request: install the request
guard (`guard`: sizes, ids and numbers; off with MLSTACK_REQUEST_GUARD=false), and the request-level
fast paths (`routes`, which replace MLflow's log-batch and search-runs views and patch the auth
app's tables; off on their own with MLSTACK_FAST_ROUTES=false) when the worker's tracking store is
the fast store; with MLSTACK_FAST_STORE off, on another MLflow version, with an MLflow internal
missing (`compat`) or another backend, MLflow's views are left as MLflow built them. Then the
request metrics (`metrics`, with MLSTACK_METRICS_ADDRESS only). Last, the worker serves MLflow 3's
FastAPI-only routes next to the Flask app (`native_routes`; off with MLSTACK_FASTAPI_ROUTES=false).

With MLSTACK_METRICS_ADDRESS set, the master keeps the workers' metric files in a fresh folder for
each start, serves them summed on that address once it is ready, forgets each worker that exits,
and removes the folder when it stops (`metrics`).
"""

from __future__ import annotations

from mlstack_mlflow_store import metrics


def on_starting(server) -> None:
    if metrics.enabled():
        metrics.prepare_folder()


def when_ready(server) -> None:
    if metrics.enabled():
        metrics.serve()


def child_exit(server, worker) -> None:
    if metrics.enabled():
        metrics.forget_worker(worker.pid)


def on_exit(server) -> None:
    if metrics.enabled():
        metrics.remove_folder()


def post_worker_init(worker) -> None:
    from mlstack_mlflow_store import compat, guard, native_routes, routes
    from mlstack_mlflow_store.store import PostgresFastPathStore

    if guard.enabled():
        guard.install(worker.wsgi)
    store = compat.server_tracking_store()
    if isinstance(store, PostgresFastPathStore) and routes.enabled():
        routes.install(worker.wsgi, store)
    request_metrics = metrics.RequestMetrics(worker.wsgi) if metrics.enabled() else None
    if native_routes.enabled():
        native_routes.install(worker, request_metrics)
