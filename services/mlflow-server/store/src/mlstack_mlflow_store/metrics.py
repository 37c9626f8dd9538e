"""The server's own request metrics, MLflow's exporter way: prometheus_flask_exporter in gunicorn's
multiprocess mode, served by the gunicorn master on a port of its own, never on the public app.

On only when MLSTACK_METRICS_ADDRESS (HOST:PORT) is set; unset or empty, nothing is loaded and no
request pays anything. The gunicorn hooks (gunicorn_hooks) call, in the master: `prepare_folder`
(a fresh private PROMETHEUS_MULTIPROC_DIR for this server start, before any worker exists; those
of killed masters removed), `serve`
(the master's HTTP server: one scrape sums every worker's files), `forget_worker` (a dead worker's
gauges go; its counts stay in the totals), `remove_folder` at exit; in each worker `RequestMetrics`.

Metrics (prefix `mlflow`, as `mlflow server --expose-prometheus`):
`mlflow_http_request_duration_seconds{method,status,route}` (histogram),
`mlflow_http_request_total{method,status}` and `mlflow_http_request_exceptions_total{method,status}`.
`route` is the route family: the Flask URL rule with `/ajax-api/` folded onto `/api/`, `other` for a
path no rule matches; requests MLflow's FastAPI app answers (native_routes) are counted the same way,
their family the FastAPI-only path prefix they fall under. /health and /version are not counted (as
MLflow's exporter: the health checks would drown the rest).

Imports nothing but the standard library at module level: prometheus_client chooses its multiprocess
mode when it is first imported, so the master must not import it before `prepare_folder`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from timeit import default_timer

ADDRESS_VAR = "MLSTACK_METRICS_ADDRESS"
FOLDER_VAR = "PROMETHEUS_MULTIPROC_DIR"
#: The start of each master's folder's name, in the temporary folder: then its pid.
FOLDER_PREFIX = "mlstack-mlflow-metrics-"
PREFIX = "mlflow"
#: Not counted, as in MLflow's own exporter (mlflow.server.prometheus_exporter).
EXCLUDED_PATHS = ["/health", "/version"]
#: The route family of a request no route matches.
OTHER = "other"


def address(environ: Mapping[str, str] = os.environ) -> tuple[str, int] | None:
    """Where the metrics are served (MLSTACK_METRICS_ADDRESS, HOST:PORT; [::1]:PORT for IPv6), or None:
    no metrics. A value that is not HOST:PORT raises ValueError naming it."""
    value = environ.get(ADDRESS_VAR, "").strip()
    if not value:
        return None
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{ADDRESS_VAR}={value!r} is not HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:9189)")
    return host, int(port)


def enabled() -> bool:
    return address() is not None


def route(request) -> str:
    """The route family of a Flask request (the label `route`, named after this function): its URL
    rule, `/ajax-api/` folded onto `/api/`; `other` when no rule matched (404, 405)."""
    rule = request.url_rule
    return family(rule.rule) if rule is not None else OTHER


def family(path: str) -> str:
    """`path` (a URL rule or a route prefix) with the UI's `/ajax-api/` folded onto `/api/`."""
    return path.replace("/ajax-api/", "/api/", 1)


# --- the gunicorn master --------------------------------------------------------------------------


def prepare_folder() -> None:
    """A fresh private folder for the workers' metric files, in PROMETHEUS_MULTIPROC_DIR, which the
    workers inherit: nothing of an earlier server start is summed in. The folders of masters that
    died without removing theirs (a stop that ended in SIGKILL) go first."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{FOLDER_PREFIX}*-*"):
        pid = folder.name.removeprefix(FOLDER_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    os.environ[FOLDER_VAR] = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-", dir=root)


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process other than this one (a folder named after this process's pid is
    an earlier start's: pids repeat, in a container above all)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


def serve() -> None:
    """Serve every worker's metrics, summed, from this process (the master) on MLSTACK_METRICS_ADDRESS;
    exits naming the address when it cannot listen there."""
    from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

    host, port = address()
    try:
        GunicornPrometheusMetrics.start_http_server_when_ready(port, host)
    except OSError as error:
        raise SystemExit(f"mlflow-server: cannot serve metrics at {ADDRESS_VAR}={host}:{port}: {error}") from None


def forget_worker(pid: int) -> None:
    """A worker exited: drop its live gauges (prometheus_client's `mark_process_dead`) and its
    per-process ones (the exporter's info gauge), so restarted workers do not add up; its counters
    and histograms stay in the totals."""
    from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

    GunicornPrometheusMetrics.mark_process_dead_on_child_exit(pid)
    Path(os.environ[FOLDER_VAR], f"gauge_all_{pid}.db").unlink(missing_ok=True)


def remove_folder() -> None:
    shutil.rmtree(os.environ[FOLDER_VAR], ignore_errors=True)


# --- a worker -------------------------------------------------------------------------------------


class RequestMetrics:
    """The request metrics of one worker: prometheus_flask_exporter's on the Flask `app`, and `count`
    for the requests another WSGI app answers."""

    def __init__(self, app) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

        class Registry(CollectorRegistry):
            """Keeps each metric it registers by name: `count` records into the exporter's own."""

            def __init__(self) -> None:
                super().__init__()
                self.metrics: dict[str, object] = {}

            def register(self, collector) -> None:
                super().register(collector)
                describe = getattr(collector, "describe", list)  # the multiprocess collector has none
                self.metrics.update({family.name: collector for family in describe()})

        registry = Registry()
        GunicornPrometheusMetrics(
            app, defaults_prefix=PREFIX, group_by=route, excluded_paths=EXCLUDED_PATHS, registry=registry
        )
        # The exporter appends its hooks. Its timer goes first, so the request guard's, the host check's
        # and the auth app's refusals are timed too; its recorder last (after-request functions run in
        # reverse order), so it records the status that is sent.
        for hooks in (app.before_request_funcs[None], app.after_request_funcs[None]):
            hooks.insert(0, hooks.pop())
        self.duration = registry.metrics[f"{PREFIX}_http_request_duration_seconds"]
        self.total = registry.metrics[f"{PREFIX}_http_request"]
        self.exceptions = registry.metrics[f"{PREFIX}_http_request_exceptions"]

    def count(self, answer: Callable, environ: dict, start_response: Callable, route_family: str) -> Iterable[bytes]:
        """`answer`'s answer (a WSGI app the Flask app does not see), counted as the exporter counts
        Flask's requests, timed until its body has been sent (an ASGI app runs while it is read)."""
        method, status, started = environ["REQUEST_METHOD"], ["500"], default_timer()  # 500 until it answers

        def seen(line: str, headers: list, exc_info=None):
            status[0] = line.split(" ", 1)[0]
            return start_response(line, headers, exc_info)

        try:
            yield from answer(environ, seen)
        except Exception:
            status[0] = "500"
            self.exceptions.labels(method=method, status="500").inc()
            raise
        finally:
            elapsed = default_timer() - started
            self.duration.labels(method=method, status=status[0], route=family(route_family)).observe(elapsed)
            self.total.labels(method=method, status=status[0]).inc()
