"""Run a pipeline on a schedule: ClearML's TaskScheduler (cron-like), or a plain crontab line.

TaskScheduler has no cron syntax; `cron_to_timespec` maps the common cron forms onto its
timespec arguments and refuses the rest with the forms it accepts.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from mlstack.client_settings import ClientSettings
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.errors import ClearMLConfigError

WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
SUPPORTED_FORMS = (
    "'*/N * * * *' (every N minutes), 'M * * * *' or 'M */N * * *' (hourly / every N hours at minute M), "
    "'M H * * *' (daily), 'M H * * D[,D...]' (on weekdays 0-6, 0 = Sunday), 'M H DOM * *' (monthly)"
)


def _number(field: str, value: str, low: int, high: int, cron: str) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise ClearMLConfigError(f"cron {cron!r}: {field} {value!r} must be a number {low}-{high}")
    return int(value)


def cron_to_timespec(cron: str) -> dict:
    """TaskScheduler.add_task timespec arguments for a 5-field cron expression."""
    fields = cron.split()
    if len(fields) != 5:
        raise ClearMLConfigError(
            f"cron {cron!r} must have 5 fields (minute hour day month weekday): use {SUPPORTED_FORMS}"
        )
    minute, hour, day, month, weekday = fields
    if month != "*":
        raise ClearMLConfigError(f"cron {cron!r}: a month field is not supported: use {SUPPORTED_FORMS}")
    if minute.startswith("*/") and (hour, day, weekday) == ("*", "*", "*"):
        return {"minute": _number("minute step", minute[2:], 1, 59, cron)}
    at_minute = _number("minute", minute, 0, 59, cron)
    if (day, weekday) == ("*", "*"):
        if hour == "*":
            return {"hour": 1, "minute": at_minute}
        if hour.startswith("*/"):
            return {"hour": _number("hour step", hour[2:], 1, 23, cron), "minute": at_minute}
        return {"day": 1, "hour": _number("hour", hour, 0, 23, cron), "minute": at_minute}
    at_hour = _number("hour", hour, 0, 23, cron)
    if day == "*":
        days = [WEEKDAYS[_number("weekday", value, 0, 6, cron)] for value in weekday.split(",")]
        return {"day": 0, "weekdays": days, "hour": at_hour, "minute": at_minute}
    if weekday == "*":
        return {"month": 1, "day": _number("day of month", day, 1, 28, cron), "hour": at_hour, "minute": at_minute}
    raise ClearMLConfigError(f"cron {cron!r} combines day of month and weekday: use {SUPPORTED_FORMS}")


def schedule_task(
    settings: ClientSettings,
    task_id: str,
    cron: str,
    queue: str | None = None,
    name: str = "mlstack pipeline",
    scheduler_queue: str | None = None,
) -> None:
    """Clone and enqueue `task_id` (e.g. a pipeline controller) on `cron`.

    With `scheduler_queue` the scheduler itself runs on an agent serving that queue; otherwise it
    runs here, in the foreground, until interrupted.
    """
    from clearml.automation import TaskScheduler

    timespec = cron_to_timespec(cron)
    require_server(settings)
    scheduler = TaskScheduler(force_create_task_name=f"{name} scheduler", force_create_task_project="mlstack")
    scheduler.add_task(
        schedule_task_id=task_id,
        queue=queue or settings.clearml_default_queue,
        name=name,
        single_instance=True,
        **timespec,
    )
    if scheduler_queue:
        scheduler.start_remotely(queue=scheduler_queue)
    else:
        scheduler.start()


def crontab_line(cron: str, command: list[str], project_dir: Path, log_file: Path) -> str:
    """The documented alternative: a crontab entry running `command` in the checkout, logging to a file."""
    cron_to_timespec(cron)
    quoted = " ".join(shlex.quote(part) for part in command)
    return f"{cron} cd {shlex.quote(str(project_dir))} && {quoted} >> {shlex.quote(str(log_file))} 2>&1"
