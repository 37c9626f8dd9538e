"""MLflow servers a benchmark starts beside the stack's own, on the stack's backend and artifact stores.

Each is the MLflow server the stack ships (or a variant), on a free port, stopped by the caller;
`wait_until_quiet` holds measurements until the process group has finished starting (MLflow starts a
job runner and huey consumers that import for seconds after /health answers).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlstack_mlflow_store.launch import auth_config

from mlstack.health import http_ok
from mlstack.runtime.native.process import ManagedProcess, group_members
from mlstack.runtime.native.server import gunicorn_options, mlflow_server_env
from mlstack.settings import Settings


@dataclass(frozen=True)
class Candidate:
    name: str
    server_args: tuple[str, ...] = ()
    #: nginx in front of this candidate's server; upstream keep-alive on or off.
    proxy_keepalive: bool | None = None
    #: "default": MLflow's basic-auth app as upstream configures it (no login cache); "shipped": with the
    #: stack's auth configuration; "mlflow-login-cache": the stack's, but MLflow's own login check (a
    #: per-worker cache, before mlstack's); "off": no authentication. Only with MLFLOW_AUTH on in .env.
    auth: str = "default"
    #: The store plugin (the shipped server's) instead of MLflow's own store.
    fast_store: bool = False
    #: MLflow 3's FastAPI-only routes next to the Flask app (the shipped server's; off: before them).
    fastapi_routes: bool = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_cpu_seconds(pgid: int) -> float:
    ticks = 0
    for pid in group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(pgid: int, timeout: float = 240.0) -> None:
    """Until the process group uses under 5% of a core over two seconds."""
    deadline = time.monotonic() + timeout
    before = group_cpu_seconds(pgid)
    while time.monotonic() < deadline:
        time.sleep(2)
        now = group_cpu_seconds(pgid)
        if now - before < 0.1:
            return
        before = now


def start_process(command: list[str], env: dict[str, str], workdir: Path, health: str) -> ManagedProcess:
    process = ManagedProcess(f"bench-{uuid.uuid4().hex[:8]}", workdir, workdir)
    process.start(command, env=env)
    deadline = time.monotonic() + 180
    while not http_ok(health):
        if time.monotonic() > deadline or not process.is_running():
            raise RuntimeError(f"{command[:4]} did not start:\n{process.tail()}")
        time.sleep(0.5)
    return process


def start_mlflow(
    settings: Settings, candidate: Candidate, workdir: Path, env_overrides: Mapping[str, str] | None = None
) -> tuple[ManagedProcess, str]:
    """`candidate` on a free port; `env_overrides` replace entries of the server's environment (another
    artifact store: MLFLOW_S3_ENDPOINT_URL and the AWS keys)."""
    port = free_port()
    auth = settings.mlflow_auth and candidate.auth != "off"
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--artifacts-destination", f"s3://{settings.mlflow_artifact_bucket}", *candidate.server_args),
        *(("--app-name", "basic-auth") if auth else ()),
    ]
    url = f"http://127.0.0.1:{port}"
    env = {
        **mlflow_server_env(settings),
        # no metrics port: with monitoring on it would be the stack's own server's (server_latency --metrics sets one)
        "MLSTACK_METRICS_ADDRESS": "",
        "MLSTACK_FAST_STORE": str(candidate.fast_store).lower(),
        "MLSTACK_FASTAPI_ROUTES": str(candidate.fastapi_routes).lower(),
    }
    if auth and candidate.auth in ("default", "mlflow-login-cache"):
        # upstream's login check on the same user database: without a cache (its default) or with the stack's
        config = workdir / f"basic_auth-{port}.ini"
        database_uri = settings.backend_store_uri(with_password=False, database=settings.mlflow_auth_db)
        cache = settings.mlflow_auth_cache_seconds if candidate.auth == "mlflow-login-cache" else 0
        check = "mlflow.server.auth:authenticate_request_basic_auth"
        config.write_text(auth_config(database_uri, settings.mlflow_auth_default_permission, cache, check))
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
    env.update(env_overrides or {})
    return start_process(command, env, workdir, f"{url}/health"), url


def shipped_server_args(settings: Settings) -> tuple[str, ...]:
    """The shipped deployment's worker options (gunicorn gthread), as `mlflow server` arguments."""
    return ("--workers", str(settings.mlflow_workers), "--gunicorn-opts", gunicorn_options(settings))


def before_fastapi_routes(settings: Settings) -> Candidate:
    """The shipped server (its deployment, auth and store) as it was before it served MLflow 3's
    FastAPI-only routes (OTLP, jobs, gateway, ...): the "before" of issue 23's before/after."""
    return Candidate(
        "shipped server without MLflow 3's FastAPI-only routes (before)",
        shipped_server_args(settings),
        auth="shipped",
        fast_store=settings.mlstack_fast_store,
        fastapi_routes=False,
    )


def start_quiet(settings: Settings, candidate: Candidate, workdir: Path) -> tuple[ManagedProcess, str]:
    """`candidate` started, once its whole process group has gone quiet."""
    process, url = start_mlflow(settings, candidate, workdir)
    wait_until_quiet(process.pid())
    return process, url


@contextmanager
def stack_and_baseline(
    settings: Settings, baseline: bool = True, before_routes: bool = False
) -> Iterator[list[tuple[str, str]]]:
    """(name, URL) of the stack's own server and, with `baseline`, of the same deployment on MLflow's
    own store (the server without mlstack's store plugin), with `before_routes` of the shipped server
    before MLflow 3's FastAPI-only routes; those started here and stopped on leaving."""
    store = "mlstack's store plugin" if settings.mlstack_fast_store else "MLflow's own store"
    servers = [(f"stack ({store})", settings.mlflow_tracking_uri or settings.mlflow_url)]
    candidates = []
    if baseline:
        own_store = Candidate("same deployment, MLflow's own store", shipped_server_args(settings), auth="shipped")
        candidates.append(own_store)
    if before_routes:
        candidates.append(before_fastapi_routes(settings))
    with tempfile.TemporaryDirectory() as workdir:
        started = []
        try:
            for candidate in candidates:
                process, url = start_quiet(settings, candidate, Path(workdir))
                started.append(process)
                servers.append((candidate.name, url))
            yield servers
        finally:
            for process in started:
                process.stop()
