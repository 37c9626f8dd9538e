"""What the MLflow server and its TLS front are started with, on the native runtime: their commands
and environments, from the settings (infra/mlflow/compose.yaml passes the same; compose tests keep
the two equal); with MLSTACK_TOPOLOGY=ha, where each replica listens and the HAProxy in front of them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlstack.errors import ConfigError
from mlstack.health import http_ok
from mlstack.runtime.native.ha_ports import MLFLOW_BLOCK
from mlstack.runtime.native.haproxy import Backend, haproxy_config
from mlstack.runtime.native.process import base_env
from mlstack.settings import Settings
from mlstack.stacks.mlflow import MLFLOW_HA_STACK
from mlstack.tls import TlsFiles


def tls_front_url(settings: Settings) -> str:
    """The front's URL under the first public name (else this host's loopback address)."""
    return f"https://{(settings.public_hosts or ['127.0.0.1'])[0]}:{settings.mlflow_tls_port}"


def tls_front_env(settings: Settings, files: TlsFiles) -> dict[str, str]:
    """What the Caddyfile reads: where to listen, the certificate and key, the server behind it."""
    return {
        **base_env(),
        "MLSTACK_TLS_PORT": str(settings.mlflow_tls_port),
        "MLSTACK_TLS_BIND": settings.mlflow_tls_bind_address,
        "MLSTACK_TLS_CERT": str(files.cert),
        "MLSTACK_TLS_KEY": str(files.key),
        "MLSTACK_TLS_UPSTREAM": f"127.0.0.1:{settings.mlflow_port}",
        "MLSTACK_MAX_ARTIFACT_BYTES": str(settings.mlstack_max_artifact_bytes),
    }


def mlflow_server_command(settings: Settings, host: str | None = None, port: int | None = None) -> list[str]:
    """The tracking server under gunicorn with threaded workers, started by the image's launcher
    (mlstack_mlflow_store.launch: the allowed hosts, and MLflow's basic-auth app unless MLFLOW_AUTH=false;
    services/mlflow-server/README.md says why, and about the Host-header check). It listens on `host`:`port`,
    by default MLSTACK_BIND_ADDRESS:MLFLOW_PORT (an ha replica: 127.0.0.1 and its own port)."""
    return [
        settings.server_python,
        "-m",
        "mlstack_mlflow_store.launch",
        "mlflow",
        "server",
        "--host",
        host or settings.bind_address,
        "--port",
        str(port or settings.mlflow_port),
        "--artifacts-destination",
        f"s3://{settings.mlflow_artifact_bucket}",
        "--workers",
        str(settings.mlflow_workers),
        "--gunicorn-opts",
        gunicorn_options(settings),
    ]


#: Where in the ha ports' MLflow block the replicas' metrics ports start: the replicas take the ports
#: below it, their metrics the same number from it.
REPLICA_METRICS_OFFSET = MLFLOW_BLOCK[1] // 2


@dataclass(frozen=True)
class Replica:
    """An ha tracking server (`mlflow-N`): the single server as it is, on 127.0.0.1:`port`, its metrics
    (with MLSTACK_MONITORING) on 127.0.0.1:`metrics_port`."""

    name: str
    port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        """It answers its own /health (past HAProxy)."""
        return http_ok(f"{self.url}/health")


def mlflow_replicas(settings: Settings) -> tuple[Replica, ...]:
    """The replicas HAProxy (`mlflow` in the ha stack) sends to, in the ha ports' MLflow block."""
    first = settings.ha_port_base + MLFLOW_BLOCK[0]
    names = MLFLOW_HA_STACK["mlflow"].waits_for
    return tuple(Replica(name, first + n, first + REPLICA_METRICS_OFFSET + n) for n, name in enumerate(names))


def mlflow_metrics_address(settings: Settings, replica: Replica | None = None) -> str:
    """Where a tracking server serves its own metrics (mlstack_mlflow_store.metrics): the single server
    on 127.0.0.1:MLFLOW_METRICS_PORT, an ha replica on its `metrics_port`."""
    return f"127.0.0.1:{replica.metrics_port if replica else settings.mlflow_metrics_port}"


def mlflow_metrics_targets(settings: Settings) -> list[str]:
    """Prometheus's `mlflow` targets ("127.0.0.1:PORT"): the single server's, or each ha replica's. The
    servers serve them with MLSTACK_MONITORING on."""
    if settings.topology == "ha":
        return [mlflow_metrics_address(settings, replica) for replica in mlflow_replicas(settings)]
    return [mlflow_metrics_address(settings)]


#: How HAProxy spreads requests over the replicas and replays the ones a replica lost. Each request to
#: the replica with the fewest at hand (long uploads weigh); a connection refused (a replica stopped or
#: killed, not yet marked down) is tried again on the other replica at once. A request a replica took
#: and died on before answering (`empty-response`) is sent again only when replaying it cannot double
#: anything: the idempotent methods, and the POSTs whose writes are upserts or insert-if-absent
#: (metric points keyed by their whole value, tags and run updates overwrite, searches read). A lost
#: create-run or create-experiment is not replayed: the client gets 502 and decides (MLflow's client
#: retries it, as it would a lost answer from a single server). Bodies over HAProxy's buffer (16 kB,
#: e.g. a big log-batch) are never replayed either; the tracker resends its batches itself.
MLFLOW_PROXY_RULES = """  balance leastconn
  option redispatch 1
  retries 3
  retry-on conn-failure empty-response
  acl replayable method GET HEAD PUT DELETE OPTIONS
  acl replayable path_end /runs/log-batch /runs/log-metric /runs/set-tag /runs/update /runs/search
  acl replayable path_end /experiments/search
  http-request disable-l7-retry unless replayable
"""


def mlflow_proxy_config(settings: Settings, admin_socket: Path) -> str:
    """HAProxy on MLSTACK_BIND_ADDRESS:MLFLOW_PORT over the replicas (each checked on /health), with its
    admin socket at `admin_socket` (status reads each replica's state; a rolling restart drains one)."""
    backends = tuple(Backend(r.name, r.port, r.port) for r in mlflow_replicas(settings))
    return haproxy_config(
        "mlflow",
        settings.bind_address,
        settings.mlflow_port,
        backends,
        "/health",
        tcp=False,
        extra=MLFLOW_PROXY_RULES,
        admin_socket=admin_socket,
    )


#: The store plugin's gunicorn configuration module (services/mlflow-server/store).
GUNICORN_HOOKS = "python:mlstack_mlflow_store.gunicorn_hooks"


def gunicorn_options(settings: Settings) -> str:
    """Threaded workers with HTTP keep-alive: a long upload holds one thread, never a whole worker.
    The store plugin's gunicorn hooks install its request guard in each worker, and its fast paths
    with MLSTACK_FAST_STORE on. No control socket: gunicorn's default is one path per user, which
    every stack on a machine would share.

    infra/mlflow/compose.yaml passes the same options (a compose test keeps the two equal).
    """
    return (
        f"--worker-class gthread --threads {settings.mlflow_threads} --keep-alive 5"
        f" --timeout {settings.mlflow_worker_timeout} --graceful-timeout 30 --no-control-socket"
        f" --config {GUNICORN_HOOKS}"
    )


def require_store_plugin(settings: Settings) -> None:
    """The server's Python must have the store plugin: its request guard and login check run in every
    server (its fast paths only with MLSTACK_FAST_STORE on)."""
    python = settings.server_python
    if python == sys.executable:
        installed = importlib.util.find_spec("mlstack_mlflow_store") is not None
    else:  # MLSTACK_MLFLOW_PYTHON: ask that interpreter
        code = "import importlib.util as u; raise SystemExit(u.find_spec('mlstack_mlflow_store') is None)"
        check = [python, "-c", code]
        try:
            installed = subprocess.run(check, capture_output=True, timeout=60).returncode == 0
        except OSError as error:
            raise ConfigError(f"MLSTACK_MLFLOW_PYTHON={python} does not run: {error}") from None
    if not installed:
        raise ConfigError(
            f"the mlstack-mlflow-store plugin is not installed for {python}: run `make venv` "
            "(it installs services/mlflow-server/store)"
        )


def mlflow_server_env(settings: Settings, replica: Replica | None = None) -> dict[str, str]:
    """The server's environment (the single server's, or ha `replica`'s): its own database role and S3
    identity, never the superuser's or the store's admin; with auth on, where the auth app's
    configuration is and its two secrets; with MLSTACK_MONITORING on, where it serves its metrics."""
    return {
        **base_env(),
        **settings.backend_store_env(),
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_url,
        "AWS_ACCESS_KEY_ID": settings.mlflow_s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.mlflow_s3_secret_key.get_secret_value(),
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_SERVER_ALLOWED_HOSTS": settings.mlflow_allowed_hosts,
        "MLFLOW_PUBLIC_HOSTS": settings.mlflow_public_hosts,
        "MLFLOW_MODEL_CATALOG_URI": settings.mlflow_model_catalog_uri,
        "MLFLOW_AUTH": str(settings.mlflow_auth).lower(),
        "MLSTACK_FAST_STORE": str(settings.mlstack_fast_store).lower(),
        "MLSTACK_FAST_ROUTES": str(settings.mlstack_fast_routes).lower(),
        "MLFLOW_ENABLE_WORKSPACES": str(settings.mlflow_enable_workspaces).lower(),
        "MLSTACK_FASTAPI_ROUTES": str(settings.mlstack_fastapi_routes).lower(),
        **guard_env(settings),
        **(auth_env(settings) if settings.mlflow_auth else {}),
        **(
            {"MLSTACK_METRICS_ADDRESS": mlflow_metrics_address(settings, replica)}
            if settings.mlstack_monitoring
            else {}
        ),
    }


#: The request guard's switch and limits, as the server reads them (mlstack_mlflow_store.guard).
GUARD_VARIABLES = (
    "MLSTACK_REQUEST_GUARD",
    "MLSTACK_MAX_REQUEST_BYTES",
    "MLSTACK_MAX_GRAPHQL_BYTES",
    "MLSTACK_MAX_ARTIFACT_BYTES",
    "MLSTACK_MAX_FILTER_LENGTH",
    "MLSTACK_MAX_PAGE_SIZE",
)


def guard_env(settings: Settings) -> dict[str, str]:
    values = {name: getattr(settings, name.lower()) for name in GUARD_VARIABLES}
    return {name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in values.items()}


def auth_env(settings: Settings) -> dict[str, str]:
    """The auth app's variables: where the launcher writes its configuration and what goes in it, the
    admin created on first start, the Flask key."""
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(settings.state_path / "mlflow" / "basic_auth.ini"),
        "MLFLOW_AUTH_DATABASE_URI": settings.backend_store_uri(with_password=False, database=settings.mlflow_auth_db),
        "MLFLOW_AUTH_DEFAULT_PERMISSION": settings.mlflow_auth_default_permission,
        "MLFLOW_AUTH_CACHE_SECONDS": str(settings.mlflow_auth_cache_seconds),
        "MLFLOW_AUTH_ADMIN_USERNAME": settings.mlflow_auth_admin_username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": settings.mlflow_auth_admin_password.get_secret_value(),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": settings.mlflow_flask_server_secret_key.get_secret_value(),
    }
