"""Cron expressions map onto TaskScheduler timespecs; unsupported ones are refused with the forms."""

from pathlib import Path

import pytest

from mlstack.tracking.clearml.errors import ClearMLConfigError
from mlstack.tracking.clearml.scheduling import cron_to_timespec, crontab_line


@pytest.mark.parametrize(
    ("cron", "timespec"),
    [
        ("*/15 * * * *", {"minute": 15}),
        ("30 * * * *", {"hour": 1, "minute": 30}),
        ("0 */2 * * *", {"hour": 2, "minute": 0}),
        ("0 6 * * *", {"day": 1, "hour": 6, "minute": 0}),
        ("30 8 * * 6,0", {"day": 0, "weekdays": ["saturday", "sunday"], "hour": 8, "minute": 30}),
        ("0 3 5 * *", {"month": 1, "day": 5, "hour": 3, "minute": 0}),
    ],
)
def test_cron_maps_to_task_scheduler_timespec(cron, timespec):
    assert cron_to_timespec(cron) == timespec


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 6 * *", "must have 5 fields"),
        ("0 6 * 1 *", "a month field is not supported"),
        ("61 6 * * *", "minute '61' must be a number 0-59"),
        ("0 6 * * 7", "weekday '7' must be a number 0-6"),
        ("0 6 1 * 1", "combines day of month and weekday"),
    ],
)
def test_unsupported_cron_is_refused_with_the_supported_forms(cron, message):
    with pytest.raises(ClearMLConfigError, match=message):
        cron_to_timespec(cron)


def test_crontab_line_runs_in_the_checkout_and_logs():
    command = ["mlstack", "clearml", "pipeline"]
    line = crontab_line("0 6 * * *", command, Path("/srv/my project"), Path("/var/log/p.log"))
    assert line == "0 6 * * * cd '/srv/my project' && mlstack clearml pipeline >> /var/log/p.log 2>&1"
