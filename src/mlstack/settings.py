"""The one source of truth for configuration: environment variables and the project's `.env`.

Every command and runtime receives a `Settings` object; nothing re-reads the environment ad hoc.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr

from mlstack.client_settings import ClientSettings

RuntimeName = Literal["auto", "docker", "native"]
#: single: one process a service; ha: PostgreSQL a Patroni cluster behind HAProxy (docs/scale-out.md).
Topology = Literal["single", "ha"]

#: ClearML server secrets; each replaces a value upstream ships publicly (see infra/clearml/compose.yaml).
CLEARML_SECRET_FIELDS = (
    "clearml_fixed_user_password",
    "clearml_token_secret",
    "clearml_session_secret",
    "clearml_apiserver_access_key",
    "clearml_apiserver_secret_key",
    "clearml_webserver_access_key",
    "clearml_webserver_secret_key",
    "clearml_fileserver_access_key",
    "clearml_fileserver_secret_key",
    "clearml_tests_access_key",
    "clearml_tests_secret_key",
    "clearml_agent_access_key",
    "clearml_agent_secret_key",
)

#: Names of every secret in `.env`; `mlstack init` generates them, `up` refuses placeholders.
MLFLOW_SECRET_FIELDS = (
    "postgres_password",
    "postgres_replication_password",
    "mlflow_db_password",
    "postgres_monitor_password",
    "s3_admin_secret_key",
    "mlflow_s3_secret_key",
    "mlflow_auth_admin_password",
    "mlflow_flask_server_secret_key",
    "grafana_admin_password",
)
STACK_SECRET_FIELDS = {"mlflow": MLFLOW_SECRET_FIELDS, "clearml": CLEARML_SECRET_FIELDS}
SECRET_FIELDS = MLFLOW_SECRET_FIELDS + CLEARML_SECRET_FIELDS
StackName = Literal["mlflow", "clearml"]


#: Configuration templates shipped inside the package (the checkout's conf/ and .env.example link here).
PACKAGED_CONF = files("mlstack") / "conf"


class Settings(ClientSettings):
    """The stack's settings besides the client's (ClientSettings, which `load` reads the same way).
    Field names are the `.env` variable names, case-insensitive."""

    tools_dir: Path | None = Field(default=None, alias="MLSTACK_TOOLS_DIR")
    #: The Python the native runtime runs the MLflow server and its schema migration with: a virtualenv
    #: with mlflow[auth], its drivers and the store plugin. Default: mlstack's own (the pinned MLflow).
    #: The version-upgrade test runs a stack made by an older MLflow with it.
    mlflow_python: Path | None = Field(default=None, alias="MLSTACK_MLFLOW_PYTHON")
    #: Where `mlstack backup` (and `upgrade`'s backup) writes archives. Default: <state dir>/backups.
    backup_dir: Path | None = Field(default=None, alias="MLSTACK_BACKUP_DIR")
    runtime: RuntimeName = Field(default="auto", alias="MLSTACK_RUNTIME")
    bind_address: str = Field(default="127.0.0.1", alias="MLSTACK_BIND_ADDRESS")
    topology: Topology = Field(default="single", alias="MLSTACK_TOPOLOGY")
    #: ha: the first of the cluster members' inner ports (bound to 127.0.0.1; mlstack.runtime.native.ha_ports);
    #: at most 55000: the SeaweedFS filers' gRPC ports sit 10,000 above their block.
    ha_port_base: int = Field(default=17000, ge=1024, le=55000, alias="MLSTACK_HA_PORT_BASE")

    #: The superuser (initdb, the database bootstrap step); never in the MLflow server's environment.
    postgres_user: str = "postgres"
    postgres_password: SecretStr = SecretStr("")
    postgres_db: str = "mlflow"
    postgres_port: int = 5432
    #: Where PostgreSQL answers (compose: the service name).
    postgres_host: str = Field(default="127.0.0.1", alias="MLSTACK_POSTGRES_HOST")
    #: ha: the account the PostgreSQL replicas stream the leader's WAL with.
    postgres_replication_password: SecretStr = SecretStr("")
    #: The MLflow server's role: owns the MLflow databases, nothing else (no superuser, no CREATEDB/ROLE).
    mlflow_db_user: str = "mlflow_server"
    mlflow_db_password: SecretStr = SecretStr("")
    #: The exporters' role (monitoring): PostgreSQL's pg_monitor, and reading the backend store's tables.
    postgres_monitor_user: str = "mlstack_monitor"
    postgres_monitor_password: SecretStr = SecretStr("")
    #: Users and permissions of MLflow's basic-auth app, in the same PostgreSQL.
    mlflow_auth_db: str = "mlflow_auth"

    #: The artifact store's S3 API: the stack's SeaweedFS, or your own S3 when MLSTACK_S3_ENDPOINT names it
    #: (then the native runtime starts no SeaweedFS; compose: the service's address inside the network).
    s3_port: int = 8333
    s3_endpoint: str | None = Field(default=None, alias="MLSTACK_S3_ENDPOINT")
    #: The store's admin: creates the bucket, backs up, restores, collects garbage; never the server's.
    s3_admin_access_key: str = Field(default="mlstack-admin", min_length=1)
    s3_admin_secret_key: SecretStr = SecretStr("")
    #: SeaweedFS's inner ports (native runtime, bound to 127.0.0.1; each gRPC port is this one + 10000).
    seaweedfs_master_port: int = 9333
    seaweedfs_volume_port: int = 9334
    seaweedfs_filer_port: int = 9335
    seaweedfs_metrics_port: int = 9336
    #: A stack made before SeaweedFS kept its artifacts in MinIO: its root account and ports, read only
    #: while `up` moves those artifacts (mlstack.maintenance.minio_move).
    minio_root_user: str = "mlstack-root"
    minio_root_password: SecretStr = SecretStr("")
    minio_api_port: int = 9000
    minio_console_port: int = 9001

    mlflow_artifact_bucket: str = "mlflow-artifacts"
    mlflow_s3_access_key: str = "mlflow-server"
    mlflow_s3_secret_key: SecretStr = SecretStr("")
    mlflow_port: int = 5000
    mlflow_workers: int = Field(default=2, ge=1)
    mlflow_threads: int = Field(default=8, ge=1)
    mlflow_worker_timeout: int = Field(default=900, ge=1)
    #: The server's PostgreSQL fast paths (services/mlflow-server/store); off: MLflow's own store and handlers.
    mlstack_fast_store: bool = True
    #: With the fast store: its request-level log-batch and search-runs paths and auth-table patches.
    mlstack_fast_routes: bool = True
    #: MLflow's workspaces (teams, each with its own experiments and grants); `mlstack workspace`.
    mlflow_enable_workspaces: bool = False
    mlstack_fastapi_routes: bool = True
    #: The server's request guard (services/mlflow-server/store: sizes, ids, numbers) and its limits.
    mlstack_request_guard: bool = True
    mlstack_max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    mlstack_max_graphql_bytes: int = Field(default=1024 * 1024, ge=1024)
    mlstack_max_artifact_bytes: int = Field(default=10 * 1024**3, ge=1024)
    mlstack_max_filter_length: int = Field(default=65536, ge=256)
    mlstack_max_page_size: int = Field(default=50000, ge=1)
    mlflow_allowed_hosts: str = "localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow,mlflow:*"
    #: Names (or IPs) other machines reach the server by, comma-separated; added to the allowed hosts.
    mlflow_public_hosts: str = ""
    #: where the server reads the AI gateway's model catalog; empty: the one bundled with MLflow
    mlflow_model_catalog_uri: str = ""
    #: The TLS front (Caddy): HTTPS on MLFLOW_TLS_PORT, bound to MLFLOW_TLS_BIND_ADDRESS, before the server.
    mlflow_tls: bool = False
    mlflow_tls_port: int = 5443
    mlflow_tls_bind_address: str = "127.0.0.1"
    #: Your own certificate and key (PEM); unset: mlstack generates both and a CA to trust (mlstack.tls).
    mlflow_tls_cert: Path | None = None
    mlflow_tls_key: Path | None = None
    #: MLflow's basic-auth app: every request but /health needs a login.
    mlflow_auth: bool = True
    mlflow_auth_admin_username: str = Field(default="mlstack-admin", min_length=1)
    mlflow_auth_admin_password: SecretStr = SecretStr("")
    mlflow_flask_server_secret_key: SecretStr = SecretStr("")
    #: Seconds the server spares the password hash's cost (~0.4 s of CPU) for a login it checked; every
    #: request still reads the person's row, so a change counts from the next request. 0: hash every time.
    mlflow_auth_cache_seconds: int = Field(default=30, ge=0)
    #: What a signed-in user may do with an experiment or model nobody granted them anything on.
    mlflow_auth_default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = "READ"
    #: The account `mlstack bootstrap` creates for the team's scripts (MLFLOW_TRACKING_USERNAME/PASSWORD).
    mlflow_client_username: str = Field(default="mlstack-client", min_length=1)

    # --- Monitoring (docs/operations.md): Prometheus, Alertmanager, the exporters; every metrics
    # endpoint and UI on 127.0.0.1 ---
    #: Runs the `monitoring` profile with the MLflow stack, and the server's own metrics.
    mlstack_monitoring: bool = False
    #: Where Prometheus', Alertmanager's and Grafana's UIs listen; the exporters and the server's metrics
    #: stay on 127.0.0.1 (compose: inside its network) whatever this says.
    monitoring_bind_address: str = Field(default="127.0.0.1", alias="MLSTACK_MONITORING_BIND_ADDRESS")
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    postgres_exporter_port: int = 9187
    mlstack_exporter_port: int = 9188
    #: The tracking server's own metrics (every gunicorn worker in one view); an ha replica serves its
    #: own in the ha ports' MLflow block.
    mlflow_metrics_port: int = 9189
    #: Grafana (compose only) with the provisioned dashboards.
    grafana_port: int = 3000
    grafana_admin_password: SecretStr = SecretStr("")
    #: How often Prometheus scrapes every target and evaluates the alert rules.
    mlstack_scrape_interval: str = Field(default="15s", pattern=r"^[1-9][0-9]*(ms|s|m)$")
    #: Where Alertmanager posts firing and resolved alerts (a webhook receiver); empty: none, the
    #: alerts show in Alertmanager's UI only.
    mlstack_alert_webhook_url: str = ""

    # --- ClearML server (infra/clearml) and its clients ---
    clearml_es_heap: str = "1g"
    clearml_fixed_user: str = "mlstack"
    clearml_fixed_user_password: SecretStr = SecretStr("")
    clearml_token_secret: SecretStr = SecretStr("")
    clearml_session_secret: SecretStr = SecretStr("")
    clearml_apiserver_access_key: SecretStr = SecretStr("")
    clearml_apiserver_secret_key: SecretStr = SecretStr("")
    clearml_webserver_access_key: SecretStr = SecretStr("")
    clearml_webserver_secret_key: SecretStr = SecretStr("")
    clearml_fileserver_access_key: SecretStr = SecretStr("")
    clearml_fileserver_secret_key: SecretStr = SecretStr("")
    clearml_tests_access_key: SecretStr = SecretStr("")
    clearml_tests_secret_key: SecretStr = SecretStr("")
    clearml_agent_access_key: SecretStr = SecretStr("")
    clearml_agent_secret_key: SecretStr = SecretStr("")

    @property
    def env_file(self) -> Path:
        return self.project_dir / ".env"

    @property
    def env_example(self) -> Path:
        """The project's .env.example, or the one shipped in the package when the project has none."""
        own = self.project_dir / ".env.example"
        return own if own.is_file() else Path(str(PACKAGED_CONF / "env.example"))

    @property
    def backup_path(self) -> Path:
        return (self.backup_dir or self.state_path / "backups").resolve()

    @property
    def tools_path(self) -> Path:
        return (self.tools_dir or self.state_path / "tools").resolve()

    @property
    def server_python(self) -> str:
        """The MLflow server's interpreter (MLSTACK_MLFLOW_PYTHON, else this one), as given: a
        virtualenv's python must not be resolved to the interpreter it links to."""
        return str(self.mlflow_python or sys.executable)

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint or f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def postgres_dsn(self, database: str | None = None, *, as_server: bool = False, as_monitor: bool = False) -> str:
        """libpq connection string for `database` (default: the backend store), as the superuser or, with
        `as_server`, as the MLflow server's role; with `as_monitor`, as the exporters' role."""
        user, password = (
            (self.mlflow_db_user, self.mlflow_db_password)
            if as_server
            else (self.postgres_monitor_user, self.postgres_monitor_password)
            if as_monitor
            else (self.postgres_user, self.postgres_password)
        )
        from psycopg.conninfo import make_conninfo  # here: `mlstack --help` needs no database driver

        return make_conninfo(
            host=self.postgres_host,
            port=self.postgres_port,
            dbname=database or self.postgres_db,
            user=user,
            password=password.get_secret_value(),
        )

    def backend_store_uri(
        self, host: str | None = None, port: int | None = None, with_password: bool = True, database: str | None = None
    ) -> str:
        """SQLAlchemy URI (psycopg 3 driver) of the backend store, or of `database`, as the server's role;
        without the password, libpq takes it from PGPASSWORD (backend_store_env)."""
        password = ":" + quote(self.mlflow_db_password.get_secret_value(), safe="") if with_password else ""
        return (
            f"postgresql+psycopg://{quote(self.mlflow_db_user, safe='')}{password}"
            f"@{host or self.postgres_host}:{port or self.postgres_port}/{database or self.postgres_db}"
        )

    def backend_store_env(self) -> dict[str, str]:
        """How the MLflow server and its migration find the backend store: the URI, and the role's password
        apart (the same two variables infra/mlflow/compose.yaml sets). The superuser's password is not here."""
        return {
            "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri(with_password=False),
            "PGPASSWORD": self.mlflow_db_password.get_secret_value(),
        }

    @property
    def public_hosts(self) -> list[str]:
        """MLFLOW_PUBLIC_HOSTS as a list."""
        return [host.strip() for host in self.mlflow_public_hosts.split(",") if host.strip()]

    def secrets(self, stack: StackName | None = None) -> dict[str, str]:
        """The secrets of `stack` (default: all) by their `.env` names, for validation; never print them."""
        fields = STACK_SECRET_FIELDS[stack] if stack else SECRET_FIELDS
        return {name.upper(): getattr(self, name).get_secret_value() for name in fields}
