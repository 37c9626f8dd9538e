"""What the MLflow server and its TLS front are started with, on the native runtime: their commands
and environments, from the settings (infra/mlflow/compose.yaml passes the same; compose tests keep
the two equal)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from mlstack.errors import ConfigError
from mlstack.runtime.native.process import base_env
from mlstack.settings import Settings
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


def mlflow_server_command(settings: Settings) -> list[str]:
    """The tracking server under gunicorn with threaded workers, started by the image's launcher
    (mlstack_mlflow_store.launch: the allowed hosts, and MLflow's basic-auth app unless MLFLOW_AUTH=false;
    services/mlflow-server/README.md says why, and about the Host-header check)."""
    return [
        settings.server_python,
        "-m",
        "mlstack_mlflow_store.launch",
        "mlflow",
        "server",
        "--host",
        settings.bind_address,
        "--port",
        str(settings.mlflow_port),
        "--artifacts-destination",
        f"s3://{settings.mlflow_artifact_bucket}",
        "--workers",
        str(settings.mlflow_workers),
        "--gunicorn-opts",
        gunicorn_options(settings),
    ]


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


def mlflow_server_env(settings: Settings) -> dict[str, str]:
    """The server's environment: its own database role and S3 identity, never the superuser's or the
    store's admin; with auth on, where the auth app's configuration is and its two secrets."""
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
