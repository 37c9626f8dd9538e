"""Watch a pipeline run: poll its status and its steps', log every change, notify when it ends.

Events go as JSON lines to a log file and, when a webhook URL is given, as a JSON POST to it
(retried with backoff; a webhook that stays down is logged, it never hides the pipeline result).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
from tenacity import retry, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"completed", "failed", "stopped", "closed", "published"})


@dataclass(frozen=True)
class PipelineStatus:
    pipeline_id: str
    status: str
    steps: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


def read_pipeline_status(pipeline_id: str) -> PipelineStatus:
    """The controller task's status and each step's, from the server."""
    from clearml import Task

    controller = Task.get_task(task_id=pipeline_id)
    steps = {task.name: str(task.status) for task in Task.get_tasks(task_filter={"parent": pipeline_id})}
    return PipelineStatus(pipeline_id, str(controller.status), steps)


class WebhookNotifier:
    """POST events as JSON to `url`, retrying transient failures with backoff."""

    def __init__(self, url: str, timeout: float = 10.0, attempts: int = 4, max_wait: float = 8.0):
        self.url, self.timeout = url, timeout
        self._post = retry(
            stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5, max=max_wait), reraise=True
        )(self._post_once)

    def _post_once(self, event: dict) -> None:
        requests.post(self.url, json=event, timeout=self.timeout).raise_for_status()

    def send(self, event: dict) -> bool:
        """True when the webhook accepted the event; failures after all retries are logged."""
        try:
            self._post(event)
        except requests.RequestException as exc:
            log.error("webhook %s refused the pipeline event after retries: %s", self.url, exc)
            return False
        return True


def _event(kind: str, status: PipelineStatus) -> dict:
    return {"time": datetime.now(UTC).isoformat(), "event": kind, **asdict(status)}


def monitor_pipeline(
    pipeline_id: str,
    log_file: Path,
    webhook: WebhookNotifier | None = None,
    poll_seconds: float = 10.0,
    timeout_seconds: float | None = None,
    read_status: Callable[[str], PipelineStatus] = read_pipeline_status,
) -> PipelineStatus:
    """Poll until the pipeline finishes; write each status change to `log_file`, notify at the end.

    Raises TimeoutError naming the pipeline and its last status when `timeout_seconds` passes first.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    previous = None
    while True:
        status = read_status(pipeline_id)
        if status != previous:
            with log_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(_event("status", status)) + "\n")
            previous = status
        if status.finished:
            final = _event("failed" if status.status == "failed" else "finished", status)
            with log_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(final) + "\n")
            if webhook:
                webhook.send(final)
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"pipeline {pipeline_id} did not finish within {timeout_seconds} s (last status {status.status}, "
                f"steps {status.steps})"
            )
        time.sleep(poll_seconds)
