"""Local service processes: whole process groups stop, and a failed start shows the service's log."""

from __future__ import annotations

import os
import signal

import pytest
from rich.console import Console

from mlstack.errors import ServiceStartError
from mlstack.health import wait_until
from mlstack.runtime.native.process import ManagedProcess, _group_alive


@pytest.fixture
def process(tmp_path) -> ManagedProcess:
    return ManagedProcess("svc", tmp_path / "run", tmp_path / "logs")


def test_stop_ends_every_process_of_the_group(process):
    pid = process.start(["sh", "-c", "sleep 300 & sleep 300 & wait"], env=dict(os.environ))
    assert process.is_running()

    assert process.stop(timeout=5) is True

    assert not _group_alive(pid)
    assert not process.pid_file.exists()
    assert process.stop() is False


def test_stop_escalates_to_sigkill_when_the_group_ignores_the_signal(tmp_path):
    stubborn = ManagedProcess("stubborn", tmp_path, tmp_path, stop_signal=signal.SIGTERM)
    pid = stubborn.start(["sh", "-c", "trap '' TERM; sleep 300 & wait"], env=dict(os.environ))

    stubborn.stop(timeout=0.5)

    assert not _group_alive(pid)


def test_a_service_that_exits_early_fails_with_its_last_log_lines(process):
    process.start(["sh", "-c", "echo 'FATAL: port 5432 already in use'; exit 1"], env=dict(os.environ))

    with pytest.raises(ServiceStartError) as error:
        wait_until("svc", lambda: False, 10, Console(quiet=True), process.is_running, process.tail)

    assert "svc exited before becoming healthy" in str(error.value)
    assert "FATAL: port 5432 already in use" in str(error.value)


def test_a_service_that_never_gets_healthy_times_out_naming_it(process):
    process.start(["sleep", "300"], env=dict(os.environ))
    try:
        with pytest.raises(ServiceStartError, match="svc was not healthy after 1s"):
            wait_until("svc", lambda: False, 1, Console(quiet=True), process.is_running, process.tail)
    finally:
        process.stop()
