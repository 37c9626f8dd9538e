"""The exporter's collector (every source at once, one failing source never failing the others) and
its command: --listen checked, the project's exporter served on a scratch project with no stack."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from mlstack.cli.monitoring import listen_address
from mlstack.errors import MlstackError
from mlstack.monitoring.exporter import MlstackCollector
from tests.conftest import free_port, user_environment
from tests.unit.monitoring.exporter_process import labelled, parse, running_exporter, scrape, value


class Answering:
    def __init__(self, name: str, metric: str):
        self.name, self.metric = name, metric

    def read(self):
        return [GaugeMetricFamily(self.metric, "a reading", value=1)]


class Failing:
    """Fails while `reason` is set."""

    def __init__(self, name: str, reason: str | None):
        self.name, self.reason = name, reason

    def read(self):
        if self.reason:
            raise RuntimeError(self.reason)
        return [GaugeMetricFamily("recovered", "a reading", value=1)]


class Meeting:
    """Answers only once every other source sharing `barrier` is being read too."""

    def __init__(self, name: str, barrier: threading.Barrier):
        self.name, self.barrier = name, barrier

    def read(self):
        self.barrier.wait()
        return []


def collect(collector: MlstackCollector) -> dict:
    registry = CollectorRegistry()
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def test_a_failing_source_reports_down_and_the_others_still_report(caplog):
    collector = MlstackCollector([Answering("postgres", "runs"), Failing("s3", "bucket gone")], [])

    samples = collect(collector)

    assert value(samples, "runs") == 1
    assert labelled(samples, "mlstack_source_up", "source") == {"postgres": 1, "s3": 0}
    assert set(labelled(samples, "mlstack_source_scrape_seconds", "source")) == {"postgres", "s3"}
    assert "source s3 failed: RuntimeError: bucket gone" in caplog.text


def test_a_failure_is_logged_once_until_its_reason_changes_and_the_recovery_too(caplog):
    failing = Failing("clearml", "no answer")
    collector = MlstackCollector([failing], [])
    caplog.set_level(logging.INFO)

    for reason in ("no answer", "no answer", "refused", None, None):
        failing.reason = reason
        samples = collect(collector)
        assert value(samples, "mlstack_source_up", source="clearml") == (0 if reason else 1)

    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "source clearml failed: RuntimeError: no answer",
        "source clearml failed: RuntimeError: refused",
        "source clearml answers again",
    ]


def test_every_source_is_read_at_once():
    barrier = threading.Barrier(3, timeout=10)  # broken (so a source fails) unless all three meet
    collector = MlstackCollector([Meeting(name, barrier) for name in ("postgres", "s3", "clearml")], [])

    samples = collect(collector)

    assert labelled(samples, "mlstack_source_up", "source") == {"postgres": 1, "s3": 1, "clearml": 1}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:9188", ("127.0.0.1", 9188)),
        ("0.0.0.0:9188", ("0.0.0.0", 9188)),
        ("[::1]:9188", ("::1", 9188)),
        ("exporter.internal:80", ("exporter.internal", 80)),
    ],
)
def test_listen_takes_host_and_port(given, expected):
    assert listen_address(given) == expected


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("9188", "it is not HOST:PORT"),
        (":9188", "it is not HOST:PORT"),
        ("127.0.0.1:", "the port '' is not a number from 1 to 65535"),
        ("127.0.0.1:0", "the port '0' is not a number from 1 to 65535"),
        ("127.0.0.1:65536", "the port '65536' is not a number from 1 to 65535"),
        ("127.0.0.1:http", "the port 'http' is not a number from 1 to 65535"),
        ("::1:9188", "an IPv6 address goes in brackets: [::1]:9188"),
        ("[nonsense]:9188", "'nonsense' in brackets is not an IPv6 address"),
        ("[127.0.0.1]:9188", "'127.0.0.1' in brackets is not an IPv6 address"),
        ("bad host;rm:9188", "'bad host;rm' is neither an IP address nor a host name"),
    ],
)
def test_listen_refuses_what_is_not_host_and_port_naming_it(given, problem):
    with pytest.raises(MlstackError) as refused:
        listen_address(given)
    assert str(refused.value).startswith(f"--listen {given!r}: {problem} (")


def exporter_command(project_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlstack.cli", "monitoring", "exporter", *args],
        cwd=project_dir,
        env=user_environment(project_dir / ".home"),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_refuses_a_bad_listen_value_in_one_line(project):
    result = exporter_command(project.project_dir, "--listen", "localhost:99999")

    assert result.returncode == 1
    output = result.stdout.strip()
    assert output.startswith("error: --listen 'localhost:99999': the port '99999' is not a number")
    assert len(output.splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_the_command_names_an_address_it_cannot_listen_on(project):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = exporter_command(project.project_dir, "--listen", f"127.0.0.1:{port}")

    assert result.returncode == 1
    assert f"the exporter cannot listen on 127.0.0.1:{port}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_with_no_stack_running_the_exporter_serves_every_source_down_but_the_local_ones(project, tmp_path):
    with running_exporter(project.project_dir, free_port(), tmp_path / "exporter.log") as (url, _):
        samples = scrape(url)

    assert labelled(samples, "mlstack_source_up", "source") == {"postgres": 0, "s3": 0, "backups": 1, "spool": 1}
    assert value(samples, "mlstack_spool_pending_files") == 0
    paths = set(labelled(samples, "mlstack_filesystem_avail_bytes", "path"))
    assert {str(project.state_path), str(project.backup_path)} <= paths
    assert not any(name.startswith("mlstack_mlflow_") for name, _ in samples)
    log = (tmp_path / "exporter.log").read_text()
    assert "source postgres failed" in log
    assert project.postgres_monitor_password.get_secret_value() not in log
    assert project.s3_admin_secret_key.get_secret_value() not in log
