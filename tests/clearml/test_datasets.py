"""Dataset versions: the parent is the newest completed version of exactly that name in that project.

The real Dataset.list_datasets runs on a faked server side (Task._query_tasks for projects.get_all +
tasks.get_all, Task._get_project_names) that answers as ClearML server v2.3.0 does: natural
(insertion) order, project and task names matched as regexes searched anywhere in the name, a
`created` ISO timestamp parsed by the SDK. Dataset.create is faked.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from clearml import Dataset, Task
from clearml.backend_api.services.v2_23 import tasks as tasks_api
from clearml_helpers import make_settings

from mlstack.tracking.clearml import datasets

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class FakeDatasetServer:
    """Datasets as hidden tasks in projects `<project>/.datasets/<name>`, stored in insertion order."""

    def __init__(self):
        self.projects: dict[str, str] = {}
        self.tasks: list[dict] = []
        self.parents_given: list[list[str] | None] = []

    def add(self, name: str, project: str, minutes: int, status: str = "completed") -> str:
        project_id = self.projects.setdefault(f"{project}/.datasets/{name}", f"p{len(self.projects) + 1}")
        task_id = f"ds{len(self.tasks) + 1}"
        created = START + timedelta(minutes=minutes)
        self.tasks.append(
            {"id": task_id, "name": name, "project": project_id, "created": created.isoformat(), "status": status}
        )
        return task_id

    def query_tasks(self, project_name=None, task_name=None, status=None, **_):
        """tasks.get_all after projects.get_all: every filter a regex search, insertion order."""
        project_ids = {
            pid for name, pid in self.projects.items() for pattern in project_name if re.search(pattern, name)
        }
        return [
            tasks_api.Task(runtime={"version": "1.0.0"}, tags=[], **task)
            for task in self.tasks
            if task["project"] in project_ids
            and (not task_name or re.search(task_name, task["name"]))
            and (not status or task["status"] in status)
        ]

    def project_names(self, project_ids):
        return {pid: name for name, pid in self.projects.items() if pid in project_ids}

    def create(self, dataset_name, dataset_project, dataset_version=None, parent_datasets=None, **_):
        self.parents_given.append(parent_datasets)
        server = self

        class CreatedDataset:
            id = None

            def add_files(self, path):
                pass

            def set_metadata(self, metadata, metadata_name):
                pass

            def upload(self):
                pass

            def finalize(self):
                self.id = server.add(dataset_name, dataset_project, minutes=len(server.tasks) + 100)

        return CreatedDataset()


@pytest.fixture
def server(monkeypatch):
    fake = FakeDatasetServer()
    monkeypatch.setattr(Task, "_query_tasks", fake.query_tasks)
    monkeypatch.setattr(Task, "_get_project_names", fake.project_names)
    monkeypatch.setattr(Dataset, "create", fake.create)
    monkeypatch.setattr(datasets, "require_server", lambda settings: None)
    return fake


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "housing.csv"
    path.write_text("rm,medv\n6.5,24.0\n")
    return path


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "checkout")


def test_three_versions_in_a_row_chain_each_to_the_one_before(server, data_file, settings):
    ids = [datasets.create_dataset_version("housing", "shop", [data_file], settings=settings) for _ in range(3)]

    assert server.parents_given == [None, [ids[0]], [ids[1]]]


def test_parent_is_the_newest_completed_version_by_creation_time_not_listing_order(server, data_file, settings):
    server.add("housing", "shop", minutes=30)
    newest = server.add("housing", "shop", minutes=50)
    server.add("housing", "shop", minutes=10)
    server.add("housing", "shop", minutes=60, status="in_progress")

    datasets.create_dataset_version("housing", "shop", [data_file], settings=settings)

    assert server.parents_given == [[newest]]


def test_a_name_with_regex_characters_finds_its_own_versions(server, data_file, settings):
    name = "sales (v2)+eu.*"
    own = server.add(name, "shop", minutes=10)

    datasets.create_dataset_version(name, "shop", [data_file], settings=settings)

    assert server.parents_given == [[own]]


def test_similar_names_and_same_names_in_subprojects_are_never_parents(server, data_file, settings):
    server.add("sales", "shop/eu", minutes=40)
    server.add("sales-eu", "shop", minutes=20)
    server.add("wholesales", "shop", minutes=30)
    own = server.add("sales", "shop", minutes=10)

    datasets.create_dataset_version("sales", "shop", [data_file], settings=settings)

    assert server.parents_given == [[own]]


@pytest.mark.parametrize("name", ["housing", "sales (v2)+eu.*"])
def test_list_dataset_versions_is_newest_first_by_creation_time(server, settings, name):
    middle = server.add(name, "shop", minutes=20)
    oldest = server.add(name, "shop", minutes=10)
    newest = server.add(name, "shop", minutes=30)
    server.add(f"{name}-eu", "shop", minutes=40)
    server.add(name, "shop/eu", minutes=50)

    versions = datasets.list_dataset_versions("shop", name, settings=settings)

    assert list(versions["id"]) == [newest, middle, oldest]
    assert versions["created"].is_monotonic_decreasing


def test_list_dataset_versions_of_the_whole_project_is_newest_first(server, settings):
    first = server.add("housing", "shop", minutes=10)
    last = server.add("sales", "shop", minutes=30)
    middle = server.add("housing", "shop", minutes=20)
    server.add("housing", "shop/eu", minutes=40)

    versions = datasets.list_dataset_versions("shop", settings=settings)

    assert list(versions["id"]) == [last, middle, first]
