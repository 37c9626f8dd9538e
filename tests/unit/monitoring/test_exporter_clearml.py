"""The exporter's ClearML source against the tests' stand-in apiserver, taught the calls it makes
(answers as clearml-server 2.3.0 gives them: apiserver/services/queues.py, workers.py, organization.py)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlstack.monitoring.exporter import CLEARML_TASK_STATUSES, MlstackCollector, SpoolSource, project_sources
from mlstack.settings import Settings
from tests.clearml.fake_apiserver import ApiError, FakeApiServer
from tests.unit.monitoring.exporter_process import labelled, parse, value

KEY, SECRET = "EXPORTERKEY000000000", "exporter-secret-never-shown-0123456789"


class QueuesApiServer(FakeApiServer):
    """The stand-in with queue entries, workers, and task counts."""

    def __init__(self):
        super().__init__("mlstack", "fixed-user-password")
        self.credentials[KEY] = SECRET
        self.entries: dict[str, list[str]] = {}
        self.workers: list[dict] = []

    def _queues_get_num_entries(self, payload: dict) -> dict:
        if payload["queue"] not in self.queues.values():
            raise ApiError(400, f"Invalid queue id: queue_id={payload['queue']}")
        return {"num": len(self.entries.get(payload["queue"], []))}

    def _workers_get_all(self, payload: dict) -> dict:
        return {"workers": self.workers}

    def _organization_get_entities_count(self, payload: dict) -> dict:
        return {"tasks": sum(1 for task in self.tasks.values() if self._selected(task, payload["tasks"]))}

    def worker(self, name: str, *queues: str) -> None:
        entries = [{"id": self.queues[queue], "name": queue, "num_tasks": 0} for queue in queues]
        self.workers.append({"id": name, "ip": "10.0.0.1", "queues": entries})

    def task(self, status: str, queue: str | None = None) -> None:
        task_id = self._tasks_create({"name": f"task {len(self.tasks)}", "type": "training"})["id"]
        self.tasks[task_id]["status"] = status
        if queue:
            self.entries.setdefault(self.queues[queue], []).append(task_id)


@pytest.fixture
def apiserver():
    server = QueuesApiServer()
    yield server
    server.close()


def clearml_settings(tmp_path, url: str, secret: str = SECRET) -> Settings:
    return Settings(
        MLSTACK_PROJECT_DIR=tmp_path,
        CLEARML_API_HOST=url,
        CLEARML_API_ACCESS_KEY=KEY,
        CLEARML_API_SECRET_KEY=secret,
        _env_file=None,
    )


def clearml_source(settings: Settings):
    return next(source for source in project_sources(settings) if source.name == "clearml")


def collect(*sources) -> dict:
    registry = CollectorRegistry()
    registry.register(MlstackCollector(sources, []))
    return parse(generate_latest(registry).decode())


def test_queues_workers_and_tasks_as_the_server_counts_them(apiserver, tmp_path):
    for queue in ("default", "gpu", "services"):
        apiserver._queues_create({"name": queue})
    apiserver.worker("agent-1", "default", "gpu")
    apiserver.worker("agent-2", "default")
    for status, queue in [("queued", "default"), ("queued", "default"), ("queued", "gpu")]:
        apiserver.task(status, queue)
    for status in ("in_progress", "completed", "completed", "failed"):
        apiserver.task(status)

    samples = collect(clearml_source(clearml_settings(tmp_path, apiserver.url)))

    assert value(samples, "mlstack_source_up", source="clearml") == 1
    assert labelled(samples, "mlstack_clearml_queue_tasks", "queue") == {"default": 2, "gpu": 1, "services": 0}
    assert labelled(samples, "mlstack_clearml_queue_workers", "queue") == {"default": 2, "gpu": 1, "services": 0}
    assert value(samples, "mlstack_clearml_workers") == 2
    tasks = labelled(samples, "mlstack_clearml_tasks", "status")
    assert set(tasks) == set(CLEARML_TASK_STATUSES)
    assert {status: n for status, n in tasks.items() if n} == {
        "queued": 3,
        "in_progress": 1,
        "completed": 2,
        "failed": 1,
    }


def test_refused_credentials_put_the_source_down_and_never_show_the_secret(apiserver, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    wrong = "a-secret-the-server-does-not-know-0123456789"
    settings = clearml_settings(tmp_path, apiserver.url, secret=wrong)

    samples = collect(clearml_source(settings), SpoolSource(settings))

    assert labelled(samples, "mlstack_source_up", "source") == {"clearml": 0, "spool": 1}
    assert not any(name.startswith("mlstack_clearml_") for name, _ in samples)
    assert "source clearml failed: ClearMLAuthError: clearml: auth.login" in caplog.text
    assert wrong not in caplog.text


def test_a_call_the_server_fails_puts_the_source_down_naming_it(apiserver, tmp_path, caplog):
    apiserver._queues_create({"name": "default"})
    apiserver.fail_once["workers.get_all"] = "redis is down"

    samples = collect(clearml_source(clearml_settings(tmp_path, apiserver.url)))

    assert value(samples, "mlstack_source_up", source="clearml") == 0
    assert "clearml: workers.get_all at" in caplog.text
    assert "500 redis is down" in caplog.text


def test_without_clearml_credentials_there_is_no_clearml_source(tmp_path):
    settings = Settings(
        MLSTACK_PROJECT_DIR=tmp_path, CLEARML_API_ACCESS_KEY="KEY", CLEARML_API_SECRET_KEY="", _env_file=None
    )

    assert [source.name for source in project_sources(settings)] == ["postgres", "s3", "backups", "spool"]
