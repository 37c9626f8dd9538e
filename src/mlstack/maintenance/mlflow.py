"""Backup, restore and upgrade of the MLflow stack.

Backup, while the stack runs: each MLflow database (the backend store, the auth app's users) is
dumped with pg_dump from a snapshot in which the rows are counted too, so the manifest's counts are
the dump's; then every object of the artifact bucket is copied, listed after the dumps, so every
artifact a dumped run refers to is there. Restore goes onto a started stack that holds nothing
(or, with `force`, replaces what it holds), after the archive checked whole; the counts are
verified afterwards. Upgrade stops the server, backs up, migrates, and on failure restores the
backup as it was, without migrating again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

import psycopg
from packaging.version import Version
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from mlstack.bootstrap import run_steps
from mlstack.bootstrap.database import DATABASE_STEPS
from mlstack.bootstrap.mlflow import reset_stack_logins
from mlstack.bootstrap.storage import admin_s3
from mlstack.errors import BackupError, ServiceStartError
from mlstack.maintenance.archive import Manifest
from mlstack.maintenance.bucket import bucket_objects, delete_objects
from mlstack.maintenance.template import Backup, StackData
from mlstack.runtime.base import MlflowStackRuntime
from mlstack.settings import Settings

#: Row counts the manifest records and restore verifies (tables of the backend store).
COUNTED_TABLES = (
    "experiments",
    "runs",
    "metrics",
    "latest_metrics",
    "params",
    "tags",
    "experiment_tags",
    "datasets",
    "inputs",
    "registered_models",
    "model_versions",
    "registered_model_aliases",
    "logged_models",
)
OBJECTS = "objects"
DUMPS = "postgres"


@contextlib.contextmanager
def _exported_snapshot(settings: Settings, database: str) -> Iterator[tuple[psycopg.Connection, str]]:
    """A repeatable-read transaction in `database` and its exported snapshot id (for pg_dump --snapshot)."""
    with psycopg.connect(settings.postgres_dsn(database)) as connection:
        connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        (snapshot,) = connection.execute("SELECT pg_export_snapshot()").fetchone()
        yield connection, snapshot
        connection.rollback()


def _row_counts(connection: psycopg.Connection, tables: tuple[str, ...]) -> dict[str, int]:
    counts = {}
    for table in tables:
        if _has_table(connection, table):
            query = sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))
            counts[table] = connection.execute(query).fetchone()[0]
    return counts


def _component_versions(settings: Settings) -> dict[str, str]:
    versions = {"mlflow": version("mlflow"), "mlstack": version("mlstack")}
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as connection:
        versions["postgres"] = connection.execute("SHOW server_version").fetchone()[0]
        versions["mlflow_schema"] = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    with psycopg.connect(settings.postgres_dsn(settings.mlflow_auth_db), autocommit=True) as connection:
        # the auth app keeps its schema version in a table of its own
        row = connection.execute(
            "SELECT version_num FROM alembic_version_auth"
            if _has_table(connection, "alembic_version_auth")
            else "SELECT ''"
        ).fetchone()
        versions["auth_schema"] = row[0] if row else ""
    with contextlib.suppress(Exception):  # informative: the store's Server header (SeaweedFS names its version)
        answer = admin_s3(settings).head_bucket(Bucket=settings.mlflow_artifact_bucket)
        versions["s3"] = answer["ResponseMetadata"]["HTTPHeaders"].get("server", "")
    return versions


def _has_table(connection: psycopg.Connection, table: str) -> bool:
    return connection.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()[0] is not None


def _safe_key(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts:
        raise BackupError(f"the bucket holds an object named {key!r}, which cannot be a file in an archive")
    return path


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
    )


def _counted(settings: Settings) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """Each database, the tables counted in it, and the prefix of their counts."""
    return (settings.postgres_db, COUNTED_TABLES, ""), (settings.mlflow_auth_db, ("users",), "auth_")


def database_counts(settings: Settings) -> dict[str, int]:
    counts = {}
    for database, tables, prefix in _counted(settings):
        with psycopg.connect(settings.postgres_dsn(database), autocommit=True) as connection:
            counts |= {f"{prefix}{table}": n for table, n in _row_counts(connection, tables).items()}
    return counts


@dataclass
class MlflowDatabases:
    """The backend store and the auth app's users: each dumped with pg_dump from an exported snapshot
    in which its rows are counted too, so the counts are the dump's."""

    settings: Settings
    runtime: MlflowStackRuntime
    name: str = "postgres"

    def dump(self, folder: Path, console: Console) -> dict[str, int]:
        (folder / DUMPS).mkdir()
        counts: dict[str, int] = {}
        for database, tables, prefix in _counted(self.settings):
            with console.status(f"dumping {database}"), _exported_snapshot(self.settings, database) as (rows, snap):
                counts |= {f"{prefix}{table}": n for table, n in _row_counts(rows, tables).items()}
                with (folder / DUMPS / f"{database}.dump").open("wb") as dump:
                    self.runtime.exec(
                        "postgres", ["pg_dump", "--format=custom", f"--snapshot={snap}", database], stdout=dump
                    )
        return counts

    def restore(self, folder: Path, manifest: Manifest, console: Console) -> None:
        s = self.settings
        for database, _, _ in _counted(self.settings):
            _recreate_database(s, database)
            with (folder / DUMPS / f"{database}.dump").open("rb") as dump:
                arguments = ["--no-owner", f"--role={s.mlflow_db_user}", "--exit-on-error", "--dbname", database]
                self.runtime.exec("postgres", ["pg_restore", *arguments], stdin=dump)
        run_steps(DATABASE_STEPS, s, lambda result: None)
        if s.mlflow_auth:
            reset_stack_logins(s)

    def counts(self) -> dict[str, int]:
        return database_counts(self.settings)


@dataclass
class ArtifactBucket:
    """Every object of the artifact bucket. Listed after the databases' dumps, so every artifact a
    dumped run refers to is in the archive."""

    settings: Settings
    name: str = "bucket"

    def dump(self, folder: Path, console: Console) -> dict[str, int]:
        objects, s3 = list(bucket_objects(self.settings)), admin_s3(self.settings)
        with _progress(console) as progress:
            task = progress.add_task(f"copying {len(objects)} objects", total=sum(size for _, size in objects))
            for key, size in objects:
                target = folder / OBJECTS / _safe_key(key)
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(self.settings.mlflow_artifact_bucket, key, str(target))
                progress.advance(task, size)
        return {"objects": len(objects), "object_bytes": sum(size for _, size in objects)}

    def restore(self, folder: Path, manifest: Manifest, console: Console) -> None:
        _replace_objects(self.settings, folder / OBJECTS, console)

    def counts(self) -> dict[str, int]:
        objects = list(bucket_objects(self.settings))
        return {"objects": len(objects), "object_bytes": sum(size for _, size in objects)}


@dataclass
class ProjectSecrets:
    """The project's .env, in backups asked to include it (`--include-secrets`); a restore keeps the
    stack's own .env (the archive's copy is for rebuilding a lost project by hand)."""

    settings: Settings
    name: str = "secrets"

    def dump(self, folder: Path, console: Console) -> dict[str, int]:
        (folder / "secrets").mkdir()
        (folder / "secrets" / ".env").write_bytes(self.settings.env_file.read_bytes())
        return {}

    def restore(self, folder: Path, manifest: Manifest, console: Console) -> None:
        pass

    def counts(self) -> dict[str, int]:
        return {}


def mlflow_data(
    settings: Settings, runtime: MlflowStackRuntime, migrate: bool = True, include_secrets: bool = False
) -> StackData:
    """The MLflow stack's data; a restore starts the server on a schema brought up to date unless
    `migrate` is false."""
    components = [MlflowDatabases(settings, runtime), ArtifactBucket(settings)]
    return StackData(
        "mlflow",
        [*components, *([ProjectSecrets(settings)] if include_secrets else [])],
        stop_servers=runtime.stop_server,
        start_servers=lambda: runtime.start_server(migrate=migrate),
        refusal=_newer_mlflow,
        holding=_holding,
    )


def _newer_mlflow(manifest: Manifest) -> str | None:
    archived, installed = manifest.versions.get("mlflow", "0"), version("mlflow")
    if Version(archived) > Version(installed):
        return (
            f"it was taken with MLflow {archived}, newer than this stack's {installed}: "
            "restore it with that mlstack version (or newer)"
        )
    return None


def _holding(counts: dict[str, int]) -> str | None:
    """What a started stack holds beyond a fresh one (the Default experiment), described; else None."""
    if is_empty(counts):
        return None
    return (
        f"{counts.get('runs', 0)} runs, {counts.get('experiments', 0)} experiments, "
        f"{counts.get('registered_models', 0)} registered models, {counts.get('objects', 0)} objects"
    )


def backup_mlflow(
    settings: Settings, runtime: MlflowStackRuntime, output: Path, console: Console, include_secrets: bool = False
) -> Backup:
    """One archive of the running MLflow stack in `output` (see the module docstring)."""
    name = f"mlstack-mlflow-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
    data = mlflow_data(settings, runtime, include_secrets=include_secrets)
    return data.backup(output, name, _component_versions(settings), console)


def is_empty(counts: dict[str, int]) -> bool:
    """A freshly started stack: no runs, no models, no experiment but Default, no objects."""
    return (
        counts.get("runs", 0) == 0
        and counts.get("registered_models", 0) == 0
        and counts.get("experiments", 0) <= 1
        and counts.get("objects", 0) == 0
    )


def restore_mlflow(
    settings: Settings,
    runtime: MlflowStackRuntime,
    archive: Path,
    console: Console,
    force: bool = False,
    migrate: bool = True,
) -> dict[str, int]:
    """Restore `archive` onto the running stack (see the module docstring); returns the counts verified.
    The server starts again in any case, on a schema brought up to date unless `migrate` is false."""
    return mlflow_data(settings, runtime, migrate=migrate).restore(archive, settings.state_path, console, force)


def _recreate_database(settings: Settings, database: str) -> None:
    with psycopg.connect(settings.postgres_dsn("postgres"), autocommit=True) as connection:
        name = sql.Identifier(database)
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, sql.Identifier(settings.mlflow_db_user)))


def _replace_objects(settings: Settings, folder: Path, console: Console) -> None:
    """Make the bucket hold exactly the archive's objects."""
    delete_objects(settings, [key for key, _ in bucket_objects(settings)])
    s3, bucket = admin_s3(settings), settings.mlflow_artifact_bucket
    files = [path for path in sorted(folder.rglob("*")) if path.is_file()] if folder.is_dir() else []
    with _progress(console) as progress:
        task = progress.add_task(f"restoring {len(files)} objects", total=sum(path.stat().st_size for path in files))
        for path in files:
            s3.upload_file(str(path), bucket, path.relative_to(folder).as_posix())
            progress.advance(task, path.stat().st_size)


def print_counts(console: Console, title: str, counts: dict[str, int]) -> None:
    table = Table("what", "count", title=title, title_justify="left")
    for key, value in counts.items():
        table.add_row(key, f"{value:,}")
    console.print(table)


@runtime_checkable
class ReplicatedServer(Protocol):
    """A runtime whose ha tracking servers restart one at a time behind HAProxy (the native runtime's)."""

    def serving(self) -> bool: ...

    def schema_current(self) -> bool: ...

    def restart_replicas(self) -> None: ...


def upgrade_mlflow(settings: Settings, runtime: MlflowStackRuntime, output: Path, console: Console) -> Path:
    """Stop the server, back up, run the schema migration, start the server again. When the migration
    fails, restore the backup as it was (no second migration) and raise saying where the stack stands.
    Returns the backup. With MLSTACK_TOPOLOGY=ha (the native runtime's replicas behind HAProxy), while
    they serve and no migration is due, the replicas serve through the backup, then restart one at a
    time: no request is refused. A migration due stops them first, as in single: no old server writes
    while the schema changes, and a failed migration's rollback loses no write made after the backup."""
    rolling = (
        settings.topology == "ha"
        and isinstance(runtime, ReplicatedServer)
        and runtime.serving()
        and runtime.schema_current()
    )
    if not rolling:
        runtime.stop_server()
    archive = backup_mlflow(settings, runtime, output, console).path
    console.print(f"backup before the upgrade: {archive}")
    try:
        runtime.migrate()
    except Exception as error:  # noqa: BLE001 - any failure of the migration rolls back
        console.print(f"[red]the schema migration failed:[/] {error}")
        console.print(f"restoring {archive}")
        failed = f"upgrade failed in the schema migration ({_cause(error)})"
        try:
            restore_mlflow(settings, runtime, archive, console, force=True, migrate=False)
        except ServiceStartError as refused:
            raise BackupError(
                f"{failed}; the data was restored from {archive} as it was before the upgrade, but MLflow "
                f"{version('mlflow')} does not start on that schema ({refused}). Fix the cause and run "
                "`mlstack upgrade` again, or go back to the mlstack release you upgraded from and run `mlstack up`"
            ) from None
        raise BackupError(f"{failed}; the stack was restored from {archive} and runs as before") from None
    if rolling:
        runtime.restart_replicas()
    else:
        runtime.start_server(migrate=False)
    return archive


def _cause(error: Exception) -> str:
    """The line of a (multi-line) failure that names the error, else its last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return next((line for line in reversed(lines) if "Error" in line), lines[-1])
