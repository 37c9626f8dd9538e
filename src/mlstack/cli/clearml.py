"""ClearML client commands: clearml sync, clearml download, clearml pipeline run|monitor|schedule."""

from __future__ import annotations

import logging
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import unquote, urlsplit

import typer

from mlstack.cli.common import app, console, load_settings
from mlstack.errors import MlstackError

if TYPE_CHECKING:
    from mlstack.settings import Settings

clearml_app = typer.Typer(help="ClearML client commands.", no_args_is_help=True)
app.add_typer(clearml_app, name="clearml")
pipeline_app = typer.Typer(
    help="The training pipeline (prepare -> train_* -> select_best -> evaluate) on the ClearML server.",
    no_args_is_help=True,
)
clearml_app.add_typer(pipeline_app, name="pipeline")
WhereOption = Annotated[
    Literal["local", "agent"], typer.Option(help="local: steps run here; agent: on the queue the agent serves.")
]
ProjectOption = Annotated[str | None, typer.Option(help="ClearML project (default: CLEARML_DEFAULT_PROJECT).")]


@clearml_app.command("sync")
def clearml_sync() -> None:
    """Upload tracker sessions stored offline to the ClearML server (each session once)."""
    from mlstack.tracking.clearml import sync_offline_sessions

    report = sync_offline_sessions(load_settings())
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


#: The URLs `clearml download` fetches with the ClearML SDK (the fileserver's among the http(s) ones).
DOWNLOADABLE_SCHEMES = ("http", "https", "s3")


@clearml_app.command("download")
def clearml_download(
    url: Annotated[str, typer.Argument(help="An artifact's or a model's URL, as the web UI or the SDK shows it.")],
    to: Annotated[
        Path | None, typer.Option(help="The file to write, or a folder for it (default: the URL's file name, here).")
    ] = None,
) -> None:
    """Download a file the ClearML server's tasks and models point at: from the fileserver with this
    project's login (a plain GET there answers 401), or from any http(s)/s3 URL as the SDK reaches it."""
    settings = load_settings()
    parts = urlsplit(url)
    if parts.scheme not in DOWNLOADABLE_SCHEMES or not parts.netloc:
        raise MlstackError(
            f"clearml download: {url!r} is not a URL it downloads: give an http(s) URL (such as the fileserver's, "
            f"{settings.clearml_files_url}/...) or an s3:// one"
        )
    destination = _download_destination(url, to)
    if parts.scheme != "s3":  # the SDK would retry a host that does not answer for half a minute
        _require_an_answer(f"{parts.scheme}://{parts.netloc}")

    from clearml import StorageManager

    from mlstack.tracking.clearml.connection import require_server

    require_server(settings)  # the SDK logs in for every http download, and sends the token to the fileserver
    with _storage_errors() as errors:
        local_copy = StorageManager.get_local_copy(url, extract_archive=False, force_download=True)
    if local_copy is None:
        raise MlstackError(_download_failure(url, errors, settings))
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(local_copy, destination)
    console.print(f"downloaded {url} to {destination} ({destination.stat().st_size:,} bytes)", markup=False)


def _require_an_answer(origin: str) -> None:
    import requests

    try:
        requests.head(origin, timeout=10)
    except requests.RequestException as error:
        raise MlstackError(
            f"clearml download: nothing answers at {origin} ({type(error).__name__}): is that server up "
            "(`mlstack status` for this project's fileserver)?"
        ) from None


def _download_destination(url: str, to: Path | None) -> Path:
    """Where `clearml download` writes: --to, or the URL's file name in --to (a folder) or here; never over a file."""
    if to is None or to.is_dir():
        name = PurePosixPath(unquote(urlsplit(url).path)).name
        if not name:
            raise MlstackError(f"clearml download: {url} names no file (its path ends with '/'): give a file's URL")
        to = (to or Path.cwd()) / name
    to = to.absolute()
    if to.exists():
        raise MlstackError(f"clearml download: {to} already exists: remove it, or give --to another path")
    return to


@contextmanager
def _storage_errors() -> Iterator[list[logging.LogRecord]]:
    """What the ClearML SDK's storage logs while a download runs (it logs a failure and returns None),
    kept from the console so the command's own line says it."""
    logger, records = logging.getLogger("clearml.storage"), []

    def keep(record: logging.LogRecord) -> bool:
        records.append(record)
        return False

    logger.addFilter(keep)
    try:
        yield records
    finally:
        logger.removeFilter(keep)


def _download_failure(url: str, records: list[logging.LogRecord], settings: Settings) -> str:
    """One line for a failed download: the URL, the HTTP status when there is one, and what to do."""
    from mlstack.secrets import mask

    errors = [record.getMessage() for record in records if record.levelno >= logging.ERROR]
    reason = errors[-1].partition(" err:")[2].strip() if errors else ""
    status = re.search(r"Failed getting object .* \((\d{3})\)", reason)
    on_fileserver = url.startswith(settings.clearml_files_url.rstrip("/") + "/")
    if reason.startswith("Failed getting token"):  # the SDK's login to the apiserver
        key = mask(settings.clearml_api_access_key or "")
        return (
            f"clearml download: {url}: the ClearML server at {settings.clearml_api_url} refused this project's "
            f"credentials (CLEARML_API_ACCESS_KEY {key}): run `mlstack bootstrap`, or set the ones made on that server"
        )
    if status and status[1] in ("401", "403"):
        why = (
            "it did not accept this project's login"
            if on_fileserver
            else f"it is not on this project's fileserver ({settings.clearml_files_url}), so the SDK sent no login"
        )
        return f"clearml download: {url} was refused ({status[1]}): {why}"
    if status and status[1] == "404":
        fix = "copy the URL again from the artifact's or model's page in the web UI"
        return f"clearml download: {url} is not on the server (404): {fix}"
    return f"clearml download: {url} failed: {reason.splitlines()[0] if reason else 'the ClearML SDK returned no file'}"


@pipeline_app.command("run")
def pipeline_run(
    where: WhereOption = "local",
    project: ProjectOption = None,
    queue: Annotated[str | None, typer.Option(help="Queue for --where agent (default: CLEARML_DEFAULT_QUEUE).")] = None,
) -> None:
    """Run the pipeline to completion; prints the controller's id (for `monitor` and `schedule`)."""
    from mlstack.tracking.clearml.pipeline import run_pipeline

    settings = load_settings()
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

    settings = load_settings()
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

    settings = load_settings()
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
