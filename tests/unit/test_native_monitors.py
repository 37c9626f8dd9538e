"""The monitoring processes of the native runtime (mlstack.runtime.native.monitors): where each listens,
and the flags it shares with its compose service."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import SecretStr

from mlstack.runtime.native.monitors import monitor_command, monitors
from mlstack.runtime.native.tools import NativeTools
from tests.conftest import REPO

TOOLS = NativeTools(
    postgres_bin=Path("/usr/lib/postgresql/15/bin"),
    weed=Path("/tools/weed"),
    prometheus=Path("/usr/bin/prometheus"),
    alertmanager=Path("/usr/bin/prometheus-alertmanager"),
    postgres_exporter=Path("/usr/bin/prometheus-postgres-exporter"),
)


def flags(command: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def commands(settings, tmp_path: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    return {
        monitor.name: monitor_command(monitor, settings, TOOLS, tmp_path / "config", tmp_path / monitor.name)
        for monitor in monitors(settings)
    }


def test_the_exporters_stay_on_loopback_where_the_uis_follow_the_monitoring_bind_address(project, tmp_path):
    settings = project.model_copy(update={"monitoring_bind_address": "0.0.0.0"})
    started = {name: command for name, (command, _) in commands(settings, tmp_path).items()}
    exporter = started.pop("mlstack-exporter")
    assert exporter[exporter.index("--listen") + 1] == f"127.0.0.1:{settings.mlstack_exporter_port}"
    assert {name: flags(command)["web.listen-address"] for name, command in started.items()} == {
        "postgres-exporter": f"127.0.0.1:{settings.postgres_exporter_port}",
        "alertmanager": f"0.0.0.0:{settings.alertmanager_port}",
        "prometheus": f"0.0.0.0:{settings.prometheus_port}",
    }


def test_postgres_exporter_signs_in_as_the_monitoring_role_whatever_its_password_holds(project, tmp_path):
    password = "p@ss/wo:rd?#%"
    settings = project.model_copy(update={"postgres_monitor_password": SecretStr(password)})
    _, env = commands(settings, tmp_path)["postgres-exporter"]
    dsn = urlsplit(env["DATA_SOURCE_NAME"])
    assert (unquote(dsn.username), unquote(dsn.password)) == (settings.postgres_monitor_user, password)
    assert (dsn.hostname, dsn.port) == ("127.0.0.1", settings.postgres_port)


def test_prometheus_and_alertmanager_take_the_flags_of_their_compose_services(project, tmp_path):
    """Paths differ (state folder vs volumes); every other flag compose gives, the native process gets alike."""
    compose = yaml.safe_load((REPO / "infra" / "mlflow" / "compose.yaml").read_text(encoding="utf-8"))["services"]
    native = commands(project, tmp_path)
    for name in ("alertmanager", "prometheus"):
        composed, started = flags(compose[name]["command"]), flags(native[name][0])
        assert composed.keys() <= started.keys(), name
        same = {flag for flag, value in composed.items() if not value.startswith("/")}
        assert {flag: started[flag] for flag in same} == {flag: composed[flag] for flag in same}, name
