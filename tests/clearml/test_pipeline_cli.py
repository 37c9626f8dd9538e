"""`mlstack clearml pipeline run|monitor|schedule`, as docs/clearml.md and its cron line use them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from clearml_helpers import make_settings
from typer.testing import CliRunner

from mlstack import cli
from mlstack.tracking.clearml import monitoring, pipeline
from mlstack.tracking.clearml.monitoring import PipelineStatus

DOCS = Path(__file__).resolve().parents[2] / "docs" / "clearml.md"


@pytest.fixture
def project(tmp_path, monkeypatch):
    settings = make_settings(tmp_path / "checkout")
    (settings.project_dir / ".env").write_text("CLEARML_API_PORT=1\n")  # nothing answers there
    monkeypatch.setenv("MLSTACK_PROJECT_DIR", str(settings.project_dir))
    return settings


#: Each pipeline command as a user types it, past its own arguments to where it needs the server.
PIPELINE_COMMANDS = {
    "run": ["run"],
    "monitor": ["monitor", "pipe-1"],
    "schedule": ["schedule", "--cron", "0 6 * * *", "--task-id", "pipe-1"],
}


@pytest.mark.parametrize("command", PIPELINE_COMMANDS.values(), ids=PIPELINE_COMMANDS.keys())
def test_each_command_runs_and_without_a_server_says_so_in_one_clear_line(project, command):
    """The command exists and runs (a missing one, or one refusing its arguments, exits 2 with usage)
    up to the server it needs, and says in one line that there is none and what to do."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLEARML_")}
    result = subprocess.run(
        [sys.executable, "-m", "mlstack.cli", "clearml", "pipeline", *command],
        env={**env, "MLSTACK_PROJECT_DIR": str(project.project_dir), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("error: This needs a ClearML server") and "make up" in output


def test_crontab_line_runs_a_command_that_exists(project, monkeypatch):
    runner = CliRunner()
    printed = runner.invoke(cli.app, ["clearml", "pipeline", "schedule", "--cron", "0 6 * * *", "--crontab"])
    assert printed.exit_code == 0, printed.output
    line = printed.output.strip()
    assert line.startswith("0 6 * * * cd ")
    command = shlex.split(line.split(" && ", 1)[1].split(" >> ", 1)[0])
    assert command[:3] == [sys.executable, "-m", "mlstack.cli"]

    calls = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda settings, **kwargs: calls.append(kwargs) or "pipe-1")
    ran = runner.invoke(cli.app, command[3:])
    assert ran.exit_code == 0, ran.output
    assert calls == [{"project": "mlstack", "where": "local", "queue": None}]


def test_docs_cron_line_uses_the_real_command():
    text = DOCS.read_text(encoding="utf-8")
    assert "mlstack clearml pipeline schedule --cron" in text
    assert "mlstack clearml pipeline >>" not in text


def test_schedule_on_the_server_needs_the_pipeline_to_repeat(project):
    result = CliRunner().invoke(cli.app, ["clearml", "pipeline", "schedule", "--cron", "0 6 * * *"])
    assert result.exit_code != 0
    assert "--task-id" in str(result.exception)


def test_monitor_follows_the_pipeline_into_the_log_and_webhook(project, monkeypatch, tmp_path):
    monkeypatch.setattr("mlstack.tracking.clearml.connection.require_server", lambda settings: None)
    received = {}

    def fake_monitor(pipeline_id, log_file, webhook, poll_seconds, timeout_seconds):
        received.update(pipeline_id=pipeline_id, log_file=log_file, url=webhook.url, poll=poll_seconds)
        return PipelineStatus(pipeline_id, "failed", {"prepare": "failed"})

    monkeypatch.setattr(monitoring, "monitor_pipeline", fake_monitor)
    log_file = tmp_path / "events.jsonl"
    result = CliRunner().invoke(
        cli.app,
        ["clearml", "pipeline", "monitor", "pipe-1", "--log-file", str(log_file), "--webhook", "http://hook"],
    )
    assert result.exit_code == 1  # the pipeline failed
    assert received == {"pipeline_id": "pipe-1", "log_file": log_file, "url": "http://hook", "poll": 10.0}
