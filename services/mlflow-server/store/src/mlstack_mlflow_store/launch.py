"""How the MLflow server starts, in the image (its ENTRYPOINT) and in the native runtime alike:
`python -m mlstack_mlflow_store.launch mlflow server ARGS...`.

Refuses a placeholder secret. For `mlflow server`: refuses a MLSTACK_METRICS_ADDRESS that is not
HOST:PORT, adds each of MLFLOW_PUBLIC_HOSTS (with any port) to MLFLOW_SERVER_ALLOWED_HOSTS and,
unless MLFLOW_AUTH=false, writes the basic-auth app's configuration (0600, at
MLFLOW_AUTH_CONFIG_PATH) and adds `--app-name basic-auth`. Then replaces
itself with the command (`mlflow` runs as this interpreter's `-m mlflow`). Imports nothing of
MLflow's: it runs before the server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mlstack_mlflow_store import metrics

#: The value `.env.example` carries where `mlstack init` generates a secret.
PLACEHOLDER = "__generate__"
#: What the server holds that must never be a placeholder.
SECRET_VARIABLES = (
    "MLFLOW_BACKEND_STORE_URI",
    "PGPASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)
#: The login check (mlstack_mlflow_store.auth: every worker sees a change at once).
AUTHORIZATION_FUNCTION = "mlstack_mlflow_store.auth:authenticate_request_basic_auth"
#: The exit status for a refused configuration (sysexits' EX_USAGE).
EX_USAGE = 64


class Refused(Exception):
    """The configuration cannot start the server; the message says which variable and why."""


def allowed_hosts(allowed: str, public: str) -> str:
    """`allowed` plus each comma-separated name of `public`, with any port."""
    names = [name.strip() for name in public.split(",") if name.strip()]
    return ",".join([part for part in (allowed,) if part] + [f"{name},{name}:*" for name in names])


def auth_config(
    database_uri: str, default_permission: str, cache_seconds: int, authorization_function: str = AUTHORIZATION_FUNCTION
) -> str:
    """MLflow's basic-auth configuration (an ini file without secrets: the admin's password comes from
    the environment, the database password from PGPASSWORD)."""
    return (
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database_uri}\n"
        f"authorization_function = {authorization_function}\n"
        f"auth_cache_ttl_seconds = {cache_seconds}\n"
    )


def prepare(argv: list[str], environ: Mapping[str, str]) -> tuple[list[str], dict[str, str], str | None]:
    """The command to run, its environment, and the auth configuration to write (None: none)."""
    for name in SECRET_VARIABLES:
        if PLACEHOLDER in environ.get(name, ""):
            raise Refused(f"{name} holds a placeholder secret: run `make up` (or `mlstack init`) to generate .env")
    if not argv:
        raise Refused("no command given: e.g. `python -m mlstack_mlflow_store.launch mlflow server`")
    env, config, serving = dict(environ), None, argv[:2] == ["mlflow", "server"]
    if argv[0] == "mlflow":
        argv = [sys.executable, "-m", "mlflow", *argv[1:]]
    if serving:
        try:
            metrics.address(env)
        except ValueError as error:
            raise Refused(str(error)) from None
        hosts = allowed_hosts(env.get("MLFLOW_SERVER_ALLOWED_HOSTS", ""), env.get("MLFLOW_PUBLIC_HOSTS", ""))
        if hosts:
            env["MLFLOW_SERVER_ALLOWED_HOSTS"] = hosts
        if env.get("MLFLOW_AUTH", "true").strip().lower() == "true":
            if not env.get("MLFLOW_AUTH_DATABASE_URI"):
                raise Refused("MLFLOW_AUTH_DATABASE_URI is not set: where the auth app keeps users")
            config = auth_config(
                env["MLFLOW_AUTH_DATABASE_URI"],
                env.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ"),
                int(env.get("MLFLOW_AUTH_CACHE_SECONDS", "30")),
            )
            env.setdefault("MLFLOW_AUTH_CONFIG_PATH", str(Path(env.get("HOME", "/tmp")) / "basic_auth.ini"))
            argv = [*argv, "--app-name", "basic-auth"]
    return argv, env, config


def write_private(path: Path, text: str) -> None:
    """`text` in `path`, readable by its owner only (0600 from its creation)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def main(argv: list[str] | None = None) -> None:
    try:
        command, env, config = prepare(list(sys.argv[1:] if argv is None else argv), os.environ)
    except Refused as refused:
        print(f"mlflow-server: {refused}", file=sys.stderr)
        raise SystemExit(EX_USAGE) from None
    if config is not None:
        write_private(Path(env["MLFLOW_AUTH_CONFIG_PATH"]), config)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
