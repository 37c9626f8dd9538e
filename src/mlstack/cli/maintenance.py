"""Keeping a stack's data: backup, restore, upgrade, gc."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mlstack.cli.common import RuntimeOption, app, console, project_settings
from mlstack.errors import MlstackError
from mlstack.settings import RuntimeName, StackName


def _stack_service(command: str, stack: StackName, runtime: RuntimeName | None):
    """The service of a running stack (backup, restore and upgrade talk to its services)."""
    from mlstack.bootstrap.preflight import require_mlflow_stack
    from mlstack.health import clearml_answers
    from mlstack.runtime import select_runtime
    from mlstack.workflows import stack_service

    settings = project_settings()
    if stack == "mlflow":
        require_mlflow_stack(settings, command=f"mlstack {command}", server=command != "upgrade")
    elif not clearml_answers(settings.clearml_api_url):
        raise MlstackError(
            f"no ClearML apiserver answers at {settings.clearml_api_url}: start it with `make up STACK=clearml`"
        )
    return stack_service(settings, select_runtime(settings, console, runtime, stack), console)


def _maintained(stack: str) -> list[StackName]:
    """The stacks `--stack` names; with `all`, the ClearML stack only when its server answers."""
    from mlstack.health import clearml_answers

    if stack != "all":
        return [stack]
    settings = project_settings()
    if clearml_answers(settings.clearml_api_url):
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
    from mlstack.maintenance.mlflow import print_counts

    for one in _maintained(stack):
        service = _stack_service("backup", one, runtime)
        made = service.backup(output or service.settings.backup_path, include_secrets)
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
    from mlstack.maintenance.archive import archive_stack
    from mlstack.maintenance.mlflow import print_counts

    counts = _stack_service("restore", archive_stack(archive), runtime).restore(archive.resolve(), force)
    print_counts(console, f"restored from {archive.name}: every count matches the archive's", counts)


@app.command()
def upgrade(stack: MaintainedStack = "mlflow", runtime: RuntimeOption = None) -> None:
    """MLflow: stop the server, back up, run the schema migration, start it again; if the migration
    fails, restore the backup and say so. ClearML: refuse a version jump upstream forbids, back up,
    start the new version; if it does not come up healthy, restore the backup."""
    for one in _maintained(stack):
        archive = _stack_service("upgrade", one, runtime).upgrade()
        console.print(f"upgraded: the {one} stack is current and up (backup before: {archive})")


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


@app.command("move-from-minio")
def move_from_minio_command(
    source: Annotated[str, typer.Option(help="The MinIO holding the stack's artifacts from before SeaweedFS.")],
    wait: Annotated[float, typer.Option(help="Seconds to keep trying a store that does not answer yet.", min=0)] = 0.0,
) -> None:
    """Copy every bucket and object of a MinIO (its root account: MINIO_ROOT_USER/PASSWORD) into the
    artifact store, each verified by sha256; rerun after an interruption (what is there is kept).
    `mlstack up` runs it for a stack made before SeaweedFS (the compose stack's minio-move step)."""
    from mlstack.bootstrap.preflight import require_mlflow_stack
    from mlstack.cli.common import load_settings
    from mlstack.maintenance.minio_move import move_from_minio

    settings = load_settings()
    require_mlflow_stack(
        settings, storage_only=True, command="mlstack move-from-minio", wait=wait, waiting=console.print
    )
    report = move_from_minio(settings, source, console.print)
    console.print(
        f"moved {sum(report.buckets.values())} objects ({report.copied} copied, {report.already_there} already "
        f"there, {report.bytes:,} bytes) from {source} to {settings.s3_url}; MinIO's data is untouched"
    )
