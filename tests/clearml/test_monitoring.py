"""Pipeline monitor: status changes to the log file, the final event to a webhook that fails once."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlstack.tracking.clearml.monitoring import PipelineStatus, WebhookNotifier, monitor_pipeline


@pytest.fixture()
def flaky_webhook():
    """A webhook on 127.0.0.1 that answers 503 to the first POST and 200 afterwards."""
    received, attempts = [], []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            attempts.append(body)
            status = 503 if len(attempts) == 1 else 200
            if status == 200:
                received.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received, attempts
    server.shutdown()
    server.server_close()


def scripted(statuses):
    remaining = list(statuses)
    return lambda pipeline_id: remaining.pop(0) if len(remaining) > 1 else remaining[0]


def test_status_changes_are_logged_and_the_end_is_posted_after_a_retry(tmp_path, flaky_webhook):
    url, received, attempts = flaky_webhook
    statuses = [
        PipelineStatus("p1", "in_progress", {"prepare": "in_progress"}),
        PipelineStatus("p1", "in_progress", {"prepare": "in_progress"}),
        PipelineStatus("p1", "in_progress", {"prepare": "completed", "train_ridge": "in_progress"}),
        PipelineStatus("p1", "completed", {"prepare": "completed", "train_ridge": "completed"}),
    ]
    log_file = tmp_path / "monitor" / "pipeline_events.jsonl"
    webhook = WebhookNotifier(url, timeout=5, max_wait=0.1)
    final = monitor_pipeline("p1", log_file, webhook, poll_seconds=0, read_status=scripted(statuses))
    assert final.status == "completed"
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [(e["event"], e["steps"].get("train_ridge")) for e in events] == [
        ("status", None),
        ("status", "in_progress"),
        ("status", "completed"),
        ("finished", "completed"),
    ]
    assert len(attempts) == 2
    assert received == [events[-1]]


def test_failed_pipeline_is_reported_as_failed(tmp_path, flaky_webhook):
    url, received, _ = flaky_webhook
    failed = PipelineStatus("p2", "failed", {"train_linear": "failed"})
    monitor_pipeline(
        "p2",
        tmp_path / "events.jsonl",
        WebhookNotifier(url, max_wait=0.1),
        poll_seconds=0,
        read_status=lambda _: failed,
    )
    assert received[0]["event"] == "failed"
    assert received[0]["steps"] == {"train_linear": "failed"}


def test_webhook_that_stays_down_does_not_hide_the_result(tmp_path):
    from clearml_helpers import free_port

    notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/hook", timeout=1, attempts=2, max_wait=0.05)
    final = monitor_pipeline(
        "p3",
        tmp_path / "events.jsonl",
        notifier,
        poll_seconds=0,
        read_status=lambda _: PipelineStatus("p3", "completed"),
    )
    assert final.finished


def test_timeout_names_the_pipeline_and_last_status(tmp_path):
    with pytest.raises(TimeoutError, match=r"pipeline p4 did not finish .*\(last status queued"):
        monitor_pipeline(
            "p4",
            tmp_path / "events.jsonl",
            poll_seconds=0.01,
            timeout_seconds=0.05,
            read_status=lambda _: PipelineStatus("p4", "queued"),
        )
