"""`mlstack monitoring exporter`: mlstack's own Prometheus exporter; `mlstack monitoring config`:
Prometheus' and Alertmanager's configurations from the stack's definition (docs/operations.md).

Both read the project's settings, or outside a project (the compose stack's containers) the
environment alone."""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from typing import Annotated, Literal

import typer

from mlstack.cli.common import app, console, load_settings
from mlstack.errors import MlstackError

monitoring_app = typer.Typer(
    help="Seeing the platform: mlstack's Prometheus exporter, Prometheus' configuration.", no_args_is_help=True
)
app.add_typer(monitoring_app, name="monitoring")

#: A host name as --listen takes it: letters, digits, dots and dashes (an IP address is checked as one).
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")


def listen_address(value: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 address in brackets: [::1]:9188) as host and port; MlstackError naming `value`."""
    host, separator, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    problem = None
    if not separator or not host:
        problem = "it is not HOST:PORT"
    elif bracketed and not isinstance(_ip(host), ipaddress.IPv6Address):
        problem = f"{host!r} in brackets is not an IPv6 address"
    elif ":" in host and not bracketed:
        problem = f"an IPv6 address goes in brackets: [{host}]:{port}"
    elif not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        problem = f"the port {port!r} is not a number from 1 to 65535"
    elif _ip(host) is None and not HOST_NAME.fullmatch(host):
        problem = f"{host!r} is neither an IP address nor a host name"
    if problem:
        raise MlstackError(
            f"--listen {value!r}: {problem} (e.g. 127.0.0.1:9188, 0.0.0.0:9188 in a container, [::1]:9188)"
        )
    return host, int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@monitoring_app.command("exporter")
def exporter(
    listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT to serve /metrics on. Default: 127.0.0.1 and MLSTACK_EXPORTER_PORT of .env."),
    ] = None,
) -> None:
    """Serve the stack's own metrics (runs, models, bucket, backups, spool, disks, ClearML queues) for
    Prometheus, each source read at every scrape; runs until stopped (Ctrl-C, SIGTERM)."""
    address = listen_address(listen) if listen is not None else None
    settings = load_settings()
    from mlstack.monitoring.exporter import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings, *(address or ("127.0.0.1", settings.mlstack_exporter_port)))


@monitoring_app.command("config")
def config(
    output: Annotated[Path, typer.Option(help="The folder to write prometheus.yml, alertmanager.yml, alerts.yml in.")],
    runtime: Annotated[
        Literal["native", "docker"], typer.Option(help="Whose addresses the scrape targets take.")
    ] = "native",
) -> None:
    """Write Prometheus' and Alertmanager's configurations and the alert rules for this stack's topology
    (the `monitoring-config` step of `up`), each 0600."""
    from mlstack.monitoring.prometheus import write_monitoring_config

    changed = write_monitoring_config(load_settings(), output, runtime)
    console.print(f"{output}: {'written' if changed else 'already current'}")
