"""Keeping a stack's data: backup, restore, upgrade, gc."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mlstack.cli.common import RuntimeOption, app, console, project_settings, report_step
from mlstack.errors import MlstackError
from mlstack.settings import RuntimeName, StackName


def _stack_runtime(command: str, stack: StackName, runtime: RuntimeName | None):
    """The runtime of a running stack (backup, restore and upgrade talk to its services)."""
    from mlstack.bootstrap.preflight import require_mlflow_stack
    from mlstack.health import http_ok
    from mlstack.runtime import select_runtime

    settings = project_settings()
    if stack == "mlflow":
        require_mlflow_stack(settings, command=f"mlstack {command}", server=command != "upgrade")
    elif not http_ok(f"{settings.clearml_api_url}/debug.ping"):
        raise MlstackError(
            f"no ClearML apiserver answers at {settings.clearml_api_url}: start it with `make up STACK=clearml`"
        )
    return select_runtime(settings, console, runtime, stack)


def _maintained(stack: str) -> list[StackName]:
    """The stacks `--stack` names; with `all`, the ClearML stack only when its server answers."""
    from mlstack.health import http_ok

    if stack != "all":
        return [stack]
    settings = project_settings()
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
    from mlstack.maintenance.clearml import backup_clearml
    from mlstack.maintenance.mlflow import backup_mlflow, print_counts

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
    from mlstack.bootstrap import run_steps
    from mlstack.bootstrap.mlflow import CLIENT_STEPS
    from mlstack.maintenance.archive import archive_stack
    from mlstack.maintenance.clearml import restore_clearml
    from mlstack.maintenance.mlflow import print_counts, restore_mlflow

    stack = archive_stack(archive)
    chosen = _stack_runtime("restore", stack, runtime)
    if stack == "clearml":
        counts = restore_clearml(chosen, archive.resolve(), console, force=force)
    else:
        counts = restore_mlflow(chosen.settings, chosen, archive.resolve(), console, force=force)
        run_steps(CLIENT_STEPS, project_settings(), report_step)
    print_counts(console, f"restored from {archive.name}: every count matches the archive's", counts)


@app.command()
def upgrade(stack: MaintainedStack = "mlflow", runtime: RuntimeOption = None) -> None:
    """MLflow: stop the server, back up, run the schema migration, start it again; if the migration
    fails, restore the backup and say so. ClearML: refuse a version jump upstream forbids, back up,
    start the new version; if it does not come up healthy, restore the backup."""
    from mlstack.maintenance.clearml import backup_clearml, check_upgrade, restore_clearml
    from mlstack.maintenance.mlflow import upgrade_mlflow

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
    from mlstack.bootstrap.preflight import require_mlflow_stack
    from mlstack.maintenance.gc import collect_garbage, parse_duration

    settings = project_settings()
    require_mlflow_stack(settings, command="mlstack gc")
    report = collect_garbage(settings, parse_duration(older_than) if older_than else None, dry_run=dry_run)
    verb = "would free" if dry_run else "freed"
    console.print(f"gc: {verb} {len(report.runs)} deleted runs, {report.objects} objects, {report.bytes:,} bytes")
    for run_id, where in report.skipped.items():
        console.print(f"gc: left run {run_id} alone: its artifacts are at {where}, not in this stack's bucket")
