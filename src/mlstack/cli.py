"""The `mlstack` command: set up, run and bootstrap the stacks."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from mlstack.bootstrap import MINIO_STEPS, MLFLOW_STACK_STEPS, Outcome, StepResult, run_steps
from mlstack.bootstrap.clearml import clearml_steps
from mlstack.bootstrap.database import DATABASE_STEPS
from mlstack.bootstrap.mlflow import CLIENT_STEPS, WRITER_PERMISSION, MlflowUsers
from mlstack.bootstrap.preflight import require_mlflow_stack
from mlstack.doctor import check_max_map_count
from mlstack.errors import MlstackError, ProjectNotFoundError, RuntimeUnavailableError
from mlstack.maintenance.archive import archive_stack
from mlstack.maintenance.clearml import backup_clearml, check_upgrade, restore_clearml
from mlstack.maintenance.gc import collect_garbage, parse_duration
from mlstack.maintenance.mlflow import backup_mlflow, print_counts, restore_mlflow, upgrade_mlflow
from mlstack.runtime import resolve_runtime_name, select_runtime, select_runtimes
from mlstack.runtime.health import http_ok
from mlstack.runtime.native.tools import find_compose, find_tools, install_tools
from mlstack.secrets import check_secrets, init_env, mask
from mlstack.settings import SECRET_FIELDS, RuntimeName, Settings, StackName, is_project_dir

app = typer.Typer(
    help="MLflow (and ClearML) stacks in a box.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
clearml_app = typer.Typer(help="ClearML client commands.", no_args_is_help=True)
app.add_typer(clearml_app, name="clearml")
pipeline_app = typer.Typer(
    help="The training pipeline (prepare -> train_* -> select_best -> evaluate) on the ClearML server.",
    no_args_is_help=True,
)
clearml_app.add_typer(pipeline_app, name="pipeline")
user_app = typer.Typer(
    help="People's MLflow accounts (basic-auth), managed as the admin of .env.", no_args_is_help=True
)
app.add_typer(user_app, name="user")
WhereOption = Annotated[
    Literal["local", "agent"], typer.Option(help="local: steps run here; agent: on the queue the agent serves.")
]
ProjectOption = Annotated[str | None, typer.Option(help="ClearML project (default: CLEARML_DEFAULT_PROJECT).")]
console = Console()
StackOption = Annotated[
    Literal["mlflow", "clearml", "all"], typer.Option("--stack", help="mlflow, clearml, or all (clearml needs docker).")
]
RuntimeOption = Annotated[
    RuntimeName | None, typer.Option("--runtime", help="docker, native, or auto (docker when an engine answers).")
]


def _settings() -> Settings:
    return Settings.load()


def _project_settings() -> Settings:
    """Settings of the project the command runs in; ProjectNotFoundError outside one."""
    settings = _settings()
    if not is_project_dir(settings.project_dir):
        raise ProjectNotFoundError(settings.project_dir)
    return settings


def _init(rotate: bool = False, settings: Settings | None = None) -> Settings:
    settings = settings or _settings()
    result = init_env(settings.env_file, settings.env_example, [n.upper() for n in SECRET_FIELDS], rotate=rotate)
    if result.created_file:
        console.print(f"wrote {settings.env_file} (mode 0600) from {settings.env_example}")
    settings = _settings()
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
    """Start the stacks and wait until every service is healthy; a no-op for a healthy stack."""
    settings = _init(settings=_project_settings())
    runtimes = select_runtimes(settings, console, runtime, stack)
    for chosen in runtimes:
        check_secrets(settings, chosen.stack)
    for chosen in runtimes:
        if chosen.name == "native":
            install_tools(settings, console)
        if chosen.stack == "clearml" and (problem := check_max_map_count()):
            console.print(f"[yellow]warning:[/] {problem}")
        if chosen.up():
            console.print(f"[bold green]{chosen.stack} stack is up ({chosen.name})[/]")
        if chosen.stack == "mlflow":
            run_steps(CLIENT_STEPS, settings, _report_step)
    console.print(f"MLflow tracking server: {settings.mlflow_url}")


@app.command()
def down(runtime: RuntimeOption = None, stack: StackOption = "all") -> None:
    """Stop the stacks; data stays."""
    for chosen in select_runtimes(_project_settings(), console, runtime, stack):
        chosen.down()


@app.command()
def status(runtime: RuntimeOption = None, stack: StackOption = "all") -> None:
    """Each service: running or not, health, URL, where its data lives. Exits 3 when any service is not
    running and healthy (a one-shot step counts once it completed)."""
    healthy = True
    for chosen in select_runtimes(_project_settings(), console, runtime, stack):
        table = Table("service", "running", "healthy", "url", "detail", title=f"{chosen.stack} stack ({chosen.name})")
        services = chosen.status()
        for service in services:
            table.add_row(service.name, _mark(service.running), _mark(service.healthy), service.url, service.detail)
        healthy &= bool(services) and all(service.healthy for service in services)
        console.print(table)
    if not healthy:
        raise typer.Exit(3)


@app.command()
def bootstrap(
    stack: StackOption = "all",
    storage_only: Annotated[
        bool, typer.Option(help="Only the MinIO steps (the compose stack's storage-bootstrap service).")
    ] = False,
    database_only: Annotated[
        bool, typer.Option(help="Only the PostgreSQL steps (the compose stack's database-bootstrap service).")
    ] = False,
    wait: Annotated[
        float,
        typer.Option(help="Seconds to keep trying a service that does not answer yet (the compose one-shots).", min=0),
    ] = 0.0,
) -> None:
    """Ordered, idempotent steps against the running stacks: MLflow's bucket, policy, server account,
    client settings and client account; ClearML's client credentials, clearml.conf and default queue."""
    run = partial(run_steps, report=_report_step, wait=wait, waiting=console.print)
    if database_only:
        run(DATABASE_STEPS, _settings())
        return
    settings = _settings() if storage_only else _project_settings()
    steps = []
    if stack != "clearml":
        require_mlflow_stack(settings, storage_only, wait=wait, waiting=console.print)
        steps = list(MINIO_STEPS if storage_only else MLFLOW_STACK_STEPS)
    if stack != "mlflow" and not storage_only:
        if http_ok(f"{settings.clearml_api_url}/debug.ping"):
            steps += clearml_steps()
        else:
            problem = f"no ClearML apiserver answers at {settings.clearml_api_url}"
            if stack == "clearml":
                raise MlstackError(f"{problem}: start it with `make up STACK=clearml` (docker runtime).")
            console.print(f"[yellow]skipping ClearML bootstrap:[/] {problem}")
    results = run(steps, settings)
    if all(r.outcome == Outcome.PRESENT for r in results):
        console.print("bootstrap: everything already present; nothing changed")


def _report_step(result: StepResult) -> None:
    console.print(f"{result.step}: [bold]{result.outcome}[/] {result.detail}")


@app.command()
def doctor(runtime: RuntimeOption = None, stack: StackOption = "all") -> None:
    """Check this host for what the selected stacks need on the runtime `up` would use; exits 1 naming
    each problem and its fix (vm.max_map_count, say, only where the ClearML stack is selected)."""
    settings = _project_settings()
    checks: dict[str, Callable[[], None]] = {}
    problems: dict[str, str] = {}
    for one in ("mlflow", "clearml") if stack == "all" else (stack,):
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
            checks["native tools"] = partial(find_tools, settings)
        elif chosen is not None and find_compose(settings) is None:
            problems["compose"] = "the docker runtime needs the compose plugin: `docker compose version` must work"
    for check, run in checks.items():
        try:
            run()
        except MlstackError as error:
            problems[check] = str(error)
    for check, problem in problems.items():
        console.print(f"[red]✗[/] {check}: {problem}")
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]✓[/] everything the selected stacks need is here ({', '.join(checks)})")


def _require_max_map_count() -> None:
    if (problem := check_max_map_count()) is not None:
        raise MlstackError(problem)


@app.command()
def sync(
    tracking_uri: Annotated[
        str | None, typer.Option(help="Send to this server instead of the one each spool file names.")
    ] = None,
) -> None:
    """Replay what the tracker spooled during a server outage (state folder's spool/): points, then run ends.

    What the server refuses for good is set aside in spool/rejected/ with its answer, and the exit code is 1."""
    from mlstack.tracking.mlflow.config import use_credentials
    from mlstack.tracking.mlflow.spool import replay_run_ends, replay_spool

    settings = _settings()
    use_credentials(settings)
    points = replay_spool(settings, tracking_uri=tracking_uri)
    ends = replay_run_ends(settings, tracking_uri=tracking_uri)
    rejected = points.rejected + ends.rejected
    if not (points.sent_points or ends.ended_runs or rejected):
        console.print("sync: nothing spooled")
        return
    ended = f", ended {ends.ended_runs} runs" if ends.ended_runs else ""
    console.print(f"sync: sent {points.sent_points} spooled points{ended}")
    for item in rejected:
        line = f"sync: refused by the server, set aside in {item.path}: {item.reason}"
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if rejected:
        raise typer.Exit(1)


@clearml_app.command("sync")
def clearml_sync() -> None:
    """Upload tracker sessions stored offline to the ClearML server (each session once)."""
    from mlstack.tracking.clearml import sync_offline_sessions

    report = sync_offline_sessions(_settings())
    for session_id, error in report.failed.items():
        line = f"clearml sync: session {session_id} failed, it stays pending: {error}"
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    still_open = f", {len(report.still_open)} still open (a running process writes them)" if report.still_open else ""
    console.print(
        f"clearml sync: {len(report.synced)} uploaded, {len(report.already_synced)} already synced, "
        f"{len(report.failed)} failed{still_open}"
    )
    if report.failed:
        raise typer.Exit(1)


@pipeline_app.command("run")
def pipeline_run(
    where: WhereOption = "local",
    project: ProjectOption = None,
    queue: Annotated[str | None, typer.Option(help="Queue for --where agent (default: CLEARML_DEFAULT_QUEUE).")] = None,
) -> None:
    """Run the pipeline to completion; prints the controller's id (for `monitor` and `schedule`)."""
    from mlstack.tracking.clearml.pipeline import run_pipeline

    settings = _settings()
    pipeline_id = run_pipeline(settings, project=project or settings.clearml_default_project, where=where, queue=queue)
    console.print(f"pipeline {pipeline_id} ran ({where}); see {settings.clearml_web_url}")


@pipeline_app.command("monitor")
def pipeline_monitor(
    pipeline_id: str,
    log_file: Annotated[Path | None, typer.Option(help="JSON lines of status changes (default: state folder).")] = None,
    webhook: Annotated[str | None, typer.Option(help="URL that receives the final event as JSON.")] = None,
    poll_seconds: Annotated[float, typer.Option(min=0.1)] = 10.0,
    timeout_seconds: Annotated[float | None, typer.Option(min=1)] = None,
) -> None:
    """Follow a pipeline until it finishes: each status change to the log file, the end to the webhook.
    Exits 1 when the pipeline failed."""
    from mlstack.tracking.clearml.connection import require_server
    from mlstack.tracking.clearml.monitoring import WebhookNotifier, monitor_pipeline

    settings = _settings()
    require_server(settings)
    log_file = log_file or settings.state_path / "pipeline_monitor.jsonl"
    status = monitor_pipeline(
        pipeline_id,
        log_file,
        WebhookNotifier(webhook) if webhook else None,
        poll_seconds=poll_seconds,
        timeout_seconds=timeout_seconds,
    )
    console.print(f"pipeline {pipeline_id}: {status.status} (events in {log_file})")
    if status.status == "failed":
        raise typer.Exit(1)


@pipeline_app.command("schedule")
def pipeline_schedule(
    cron: Annotated[str, typer.Option(help="5-field cron, e.g. '0 6 * * *' (daily at 06:00).")],
    crontab: Annotated[bool, typer.Option(help="Print a crontab line running `pipeline run` instead.")] = False,
    task_id: Annotated[
        str | None, typer.Option(help="The pipeline controller to repeat on the server (from `pipeline run`).")
    ] = None,
    where: WhereOption = "local",
    project: ProjectOption = None,
    scheduler_queue: Annotated[
        str | None, typer.Option(help="Run the scheduler on an agent serving this queue (default: here).")
    ] = None,
) -> None:
    """Repeat the pipeline on a cron schedule: ClearML's TaskScheduler clones --task-id on the server,
    or --crontab prints a line for the host's crontab."""
    from mlstack.tracking.clearml.scheduling import crontab_line, schedule_task

    settings = _settings()
    if crontab:
        command = [sys.executable, "-m", "mlstack.cli", "clearml", "pipeline", "run", "--where", where]
        command += ["--project", project or settings.clearml_default_project]
        print(crontab_line(cron, command, settings.project_dir, settings.state_path / "pipeline_cron.log"))
        return
    if task_id is None:
        raise MlstackError(
            "schedule needs the pipeline to repeat: --task-id <controller id> (`mlstack clearml pipeline run` "
            "prints it), or --crontab for a line that runs the pipeline from the host's crontab"
        )
    schedule_task(settings, task_id, cron, scheduler_queue=scheduler_queue)


#: Shortest password `mlstack user add` takes.
MIN_PASSWORD_LENGTH = 12
#: A person's login name: a letter or digit, then letters, digits and . _ @ - (64 at most); nothing a
#: URL, a path or a shell would read as something else.
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def _users() -> MlflowUsers:
    settings = _project_settings()
    if not settings.mlflow_auth:
        raise MlstackError("MLflow authentication is off (MLFLOW_AUTH=false in .env): there are no accounts to manage")
    require_mlflow_stack(settings)
    return MlflowUsers(settings)


@user_app.command("add")
def user_add(
    name: str,
    read_only: Annotated[bool, typer.Option(help="Read every experiment and model, change nothing.")] = False,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from standard input (default: asked for, twice).")
    ] = False,
) -> None:
    """Create an MLflow account: EDIT on every experiment and model (log, tag, register; not delete or
    share), or with --read-only what MLFLOW_AUTH_DEFAULT_PERMISSION gives."""
    if not USERNAME.fullmatch(name):
        raise MlstackError(
            f"{name!r} is not a user name mlstack takes: a letter or digit, then letters, digits and . _ @ - "
            "(64 characters at most)"
        )
    users = _users()
    if users.exists(name):
        raise MlstackError(f"user {name!r} exists already: `mlstack user remove {name}` first to recreate it")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise MlstackError(f"the password for {name!r} is too short: use {MIN_PASSWORD_LENGTH} characters or more")
    users.create(name, password)
    if not read_only:
        users.grant_writer(name)
    console.print(
        f"user {name}: created, {'read-only' if read_only else f'{WRITER_PERMISSION} on every experiment and model'}"
    )


@user_app.command("remove")
def user_remove(name: str) -> None:
    """Delete an MLflow account (its runs and models stay)."""
    users = _users()
    if name == users.settings.mlflow_auth_admin_username:
        raise MlstackError(f"{name!r} is the admin of .env (MLFLOW_AUTH_ADMIN_USERNAME): it cannot be removed")
    if not users.exists(name):
        raise MlstackError(f"there is no user {name!r} on {users.url}")
    users.delete(name)
    console.print(f"user {name}: removed")


def _stack_runtime(command: str, stack: StackName, runtime: RuntimeName | None):
    """The runtime of a running stack (backup, restore and upgrade talk to its services)."""
    settings = _project_settings()
    if stack == "mlflow":
        require_mlflow_stack(settings, command=f"mlstack {command}")
    elif not http_ok(f"{settings.clearml_api_url}/debug.ping"):
        raise MlstackError(
            f"no ClearML apiserver answers at {settings.clearml_api_url}: start it with `make up STACK=clearml`"
        )
    return select_runtime(settings, console, runtime, stack)


def _maintained(stack: str) -> list[StackName]:
    """The stacks `--stack` names; with `all`, the ClearML stack only when its server answers."""
    if stack != "all":
        return [stack]
    settings = _project_settings()
    if http_ok(f"{settings.clearml_api_url}/debug.ping"):
        return ["mlflow", "clearml"]
    console.print(f"[yellow]skipping the ClearML stack:[/] no apiserver answers at {settings.clearml_api_url}")
    return ["mlflow"]


MaintainedStack = Annotated[
    Literal["mlflow", "clearml", "all"], typer.Option("--stack", help="mlflow, clearml (docker runtime), or all.")
]


@app.command()
def backup(
    output: Annotated[
        Path | None, typer.Option(help="Folder of the archives (default: MLSTACK_BACKUP_DIR, .mlstack/backups).")
    ] = None,
    include_secrets: Annotated[
        bool, typer.Option(help="Put .env in the MLflow archive too (then keep the archive like .env).")
    ] = False,
    stack: MaintainedStack = "mlflow",
    runtime: RuntimeOption = None,
) -> None:
    """One archive per stack, taken while it runs, with a manifest of versions, counts and checksums
    (MLflow: both databases and every artifact; ClearML: MongoDB, Elasticsearch, fileserver). Mode 0600."""
    for one in _maintained(stack):
        chosen = _stack_runtime("backup", one, runtime)
        folder = output or chosen.settings.backup_path
        if one == "mlflow":
            made = backup_mlflow(chosen.settings, chosen, folder, console, include_secrets)
        else:
            made = backup_clearml(chosen, folder, console)
        console.print(f"backup: {made.path} ({made.path.stat().st_size:,} bytes)")
        print_counts(console, f"{one}: in the archive", made.manifest.counts)


@app.command()
def restore(
    archive: Path,
    force: Annotated[bool, typer.Option(help="Replace everything a stack that is not empty holds.")] = False,
    runtime: RuntimeOption = None,
) -> None:
    """Restore an archive of `mlstack backup` onto its stack, running and empty (a fresh `make up`) unless
    --force: the archive is checked whole first, the counts afterwards."""
    stack = archive_stack(archive)
    chosen = _stack_runtime("restore", stack, runtime)
    if stack == "clearml":
        counts = restore_clearml(chosen, archive.resolve(), console, force=force)
    else:
        counts = restore_mlflow(chosen.settings, chosen, archive.resolve(), console, force=force)
        run_steps(CLIENT_STEPS, _project_settings(), _report_step)
    print_counts(console, f"restored from {archive.name}: every count matches the archive's", counts)


@app.command()
def upgrade(stack: MaintainedStack = "mlflow", runtime: RuntimeOption = None) -> None:
    """MLflow: stop the server, back up, run the schema migration, start it again; if the migration
    fails, restore the backup and say so. ClearML: refuse a version jump upstream forbids, back up,
    start the new version; if it does not come up healthy, restore the backup."""
    for one in _maintained(stack):
        chosen = _stack_runtime("upgrade", one, runtime)
        if one == "mlflow":
            archive = upgrade_mlflow(chosen.settings, chosen, chosen.settings.backup_path, console)
            console.print(f"upgraded: the schema is current and the server is up (backup before: {archive})")
            continue
        target = check_upgrade(chosen)
        archive = backup_clearml(chosen, chosen.settings.backup_path, console).path
        try:
            chosen.up(refresh=True)
        except MlstackError as failure:
            restore_clearml(chosen, archive, console, force=True)
            raise MlstackError(f"ClearML server {target} did not come up ({failure}); restored {archive}") from None
        console.print(f"upgraded: ClearML server {target} is up (backup before: {archive})")


@app.command()
def gc(
    older_than: Annotated[
        str | None, typer.Option(help="Only runs deleted at least this long ago: 30d, 12h, 90m.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would be freed; delete nothing.")] = False,
) -> None:
    """Permanently delete runs already deleted, with their artifacts in the bucket (which `mlflow gc`
    cannot do for proxied artifacts); reports runs and bytes freed."""
    settings = _project_settings()
    require_mlflow_stack(settings, command="mlstack gc")
    report = collect_garbage(settings, parse_duration(older_than) if older_than else None, dry_run=dry_run)
    verb = "would free" if dry_run else "freed"
    console.print(f"gc: {verb} {len(report.runs)} deleted runs, {report.objects} objects, {report.bytes:,} bytes")
    for run_id, where in report.skipped.items():
        console.print(f"gc: left run {run_id} alone: its artifacts are at {where}, not in this stack's bucket")


@app.command()
def demo() -> None:
    """Train, compare and register models on scikit-learn's diabetes data, tracked to MLflow and ClearML
    (MLSTACK_TRACKERS); without a stack, to the local store and ClearML offline. Plots go to reports/demo/."""
    from mlstack.demo import run_demo

    run_demo(_settings(), console)


@app.command("check-secrets")
def check_secrets_command(
    stack: Annotated[StackName | None, typer.Option(help="Only this stack's secrets (default: all).")] = None,
) -> None:
    """Fail, naming each one, while a secret is a placeholder, a well-known default or too short.

    Reads the environment and .env if there is one (the compose stacks' preflight step has no .env)."""
    check_secrets(_settings(), stack)
    console.print("secrets: all set")


@app.command("install-tools")
def install_tools_command(
    compose: Annotated[bool, typer.Option(help="Also build the compose CLI (for compose validation).")] = False,
) -> None:
    """Install the native runtime's binaries where this user may (apt as root, go install).

    Where a Docker engine answers (and --runtime is not native) the native binaries are not needed."""
    settings = _settings()
    native = resolve_runtime_name(settings.runtime) == "native"
    install_tools(settings, console, native=native, compose=compose)
    console.print("tools present")


def _mark(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


def main() -> None:
    try:
        app()
    except MlstackError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
