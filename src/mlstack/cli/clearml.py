"""ClearML client commands: clearml sync, clearml pipeline run|monitor|schedule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from mlstack.cli.common import app, console, load_settings
from mlstack.errors import MlstackError

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
