"""What the monitoring profile's processes are started with, on the native runtime (MLSTACK_MONITORING=true):
PostgreSQL's exporter, mlstack's exporter, Alertmanager and Prometheus, in that order, each answering on
127.0.0.1 (or MLSTACK_MONITORING_BIND_ADDRESS for the two UIs) and working in its folder of the state
folder. infra/mlflow/compose.yaml runs the same images with the same flags."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from mlstack.health import http_ok
from mlstack.monitoring.prometheus import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, RETENTION
from mlstack.runtime.native.process import base_env
from mlstack.runtime.native.tools import NativeTools
from mlstack.settings import Settings


@dataclass(frozen=True)
class Monitor:
    """One monitoring process: its service name, and the path that answers on its port once it is ready."""

    name: str
    port: int
    ready: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        return http_ok(self.url + self.ready)


def monitors(settings: Settings) -> tuple[Monitor, ...]:
    s = settings
    return (
        Monitor("postgres-exporter", s.postgres_exporter_port, "/metrics"),
        Monitor("mlstack-exporter", s.mlstack_exporter_port, "/metrics"),
        Monitor("alertmanager", s.alertmanager_port, "/-/ready"),
        Monitor("prometheus", s.prometheus_port, "/-/ready"),
    )


def monitor_command(
    monitor: Monitor, settings: Settings, tools: NativeTools, config: Path, data: Path
) -> tuple[list[str], dict[str, str]]:
    """`monitor`'s command and environment; `config` holds the configurations monitoring-config wrote,
    `data` is the process's own folder."""
    s, listen = settings, f"{settings.monitoring_bind_address}:{monitor.port}"
    if monitor.name == "postgres-exporter":
        # as the monitoring role (pg_monitor), through POSTGRES_PORT (on ha: HAProxy, so the leader)
        dsn = (
            f"postgresql://{quote(s.postgres_monitor_user, safe='')}:"
            f"{quote(s.postgres_monitor_password.get_secret_value(), safe='')}"
            f"@127.0.0.1:{s.postgres_port}/postgres?sslmode=disable"
        )
        command = [str(tools.postgres_exporter), f"--web.listen-address=127.0.0.1:{monitor.port}"]
        return command, {**base_env(), "DATA_SOURCE_NAME": dsn}
    if monitor.name == "mlstack-exporter":
        # `mlstack monitoring exporter` for this project (its settings from the project's .env)
        command = [sys.executable, "-m", "mlstack.cli", "monitoring", "exporter"]
        command += ["--listen", f"127.0.0.1:{monitor.port}"]
        return command, {**base_env(), "MLSTACK_PROJECT_DIR": str(s.project_dir)}
    if monitor.name == "alertmanager":
        # alone: its cluster listener off, no port beyond the one above
        command = [
            str(tools.alertmanager),
            f"--config.file={config / ALERTMANAGER_CONFIG}",
            f"--storage.path={data}",
            f"--web.listen-address={listen}",
            "--cluster.listen-address=",
        ]
        return command, base_env()
    command = [
        str(tools.prometheus),
        f"--config.file={config / PROMETHEUS_CONFIG}",
        f"--storage.tsdb.path={data}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={listen}",
    ]
    return command, base_env()
