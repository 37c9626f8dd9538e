"""ClearML backup and restore against Elasticsearch's rules, without a server: a stand-in for the
containers (`compose exec`) keeps Elasticsearch's snapshot-name validation, its repository
bookkeeping (a registration outlives its folder; registering the same settings again is a no-op)
and its hidden indices, so the steps `backup_clearml` and `restore_clearml` take are checked
against what the real cluster would answer."""

from __future__ import annotations

import fnmatch
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from rich.console import Console

from mlstack.errors import BackupError, CommandError
from mlstack.maintenance import clearml
from mlstack.maintenance.clearml import SNAPSHOTS, snapshot_name, snapshot_name_problem


class ElasticsearchError(BackupError):
    pass


@dataclass
class FakeElasticsearch:
    """What the backup touches of Elasticsearch 8: indices (some hidden), `fs` repositories over a
    folder, snapshots, cluster settings."""

    indices: dict[str, int] = field(
        default_factory=lambda: {
            "events-training_stats_scalar-d1bd92a3b039400cbafc60a7a5b1e52b": 40,
            "events-log-d1bd92a3b039400cbafc60a7a5b1e52b": 7,
            "queue_metrics_d1bd92a3b039400cbafc60a7a5b1e52b_2026-12": 3,
            # Elasticsearch's own, hidden: a data stream's backing index
            ".ds-.logs-deprecation.elasticsearch-default-2026.12.04-000001": 12,
        }
    )
    #: the folder under path.repo: what a snapshot wrote, and the repository's generation file
    folder: dict[str, object] = field(default_factory=dict)
    #: name -> the generation Elasticsearch read when the repository was registered
    repositories: dict[str, int] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=lambda: {"persistent": {}, "transient": {}})

    def request(self, method: str, url: str, body: dict | None) -> dict:
        parts = urlsplit(url)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if method == "PUT" and path == "/_cluster/settings":
            for scope, values in body.items():
                for key, value in values.items():
                    if value is None:
                        self.settings[scope].pop(key, None)
                    else:
                        self.settings[scope][key] = value
            return {"acknowledged": True}
        if method == "GET" and path == "/_snapshot":
            return {name: {"type": "fs", "settings": {"location": SNAPSHOTS}} for name in self.repositories}
        if (match := re.fullmatch(r"/_snapshot/([^/]+)", path)) and method == "PUT":
            # the same settings again: nothing happens (the generation read at first registration stays)
            self.repositories.setdefault(match[1], self.folder.get("generation", 0))
            return {"acknowledged": True}
        if (match := re.fullmatch(r"/_snapshot/([^/]+)", path)) and method == "DELETE":
            if match[1] not in self.repositories:
                raise ElasticsearchError(f"repository_missing_exception [{match[1]}]")
            del self.repositories[match[1]]
            return {"acknowledged": True}
        if (match := re.fullmatch(r"/_snapshot/([^/]+)/([^/]+)", path)) and method == "PUT":
            return self._snapshot(match[1], match[2], body or {})
        if (match := re.fullmatch(r"/_snapshot/([^/]+)/([^/]+)/_restore", path)) and method == "POST":
            return self._restore(match[1], match[2], body or {})
        if (match := re.fullmatch(r"/([^_/][^/]*)/_count", path)) and method == "GET":
            return {"count": sum(self.indices[name] for name in self._matching(match[1], hidden=False))}
        if (match := re.fullmatch(r"/([^_/][^/]*)", path)) and method == "DELETE":
            if any("*" in part for part in match[1].split(",")) and self._destructive_requires_name():
                raise ElasticsearchError("Wildcard expressions or all indices are not allowed")
            hidden = "hidden" in query.get("expand_wildcards", "") or "all" in query.get("expand_wildcards", "")
            for name in self._matching(match[1], hidden):
                del self.indices[name]
            return {"acknowledged": True}
        if method == "GET" and path == "/":
            return {"version": {"number": "8.17.0"}}
        raise AssertionError(f"the fake does not know {method} {url}")

    def _destructive_requires_name(self) -> bool:
        for scope in ("transient", "persistent"):
            if "action.destructive_requires_name" in self.settings[scope]:
                return self.settings[scope]["action.destructive_requires_name"]
        return True  # Elasticsearch 8's default

    def _matching(self, patterns: str, hidden: bool) -> list[str]:
        names = [name for name in self.indices if hidden or not name.startswith(".")]
        return [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns.split(","))]

    def _repository(self, name: str) -> None:
        if name not in self.repositories:
            raise ElasticsearchError(f"repository_missing_exception [{name}]")
        if self.repositories[name] != self.folder.get("generation", 0):
            raise ElasticsearchError(
                f"concurrent modification of the index-N file, expected current generation "
                f"[{self.repositories[name]}], actual [{self.folder.get('generation', 0)}]"
            )

    def _snapshot(self, repository: str, name: str, body: dict) -> dict:
        if problem := elasticsearch_name_rule(name):
            raise ElasticsearchError(f"invalid_snapshot_name_exception: [{repository}:{name}] {problem}")
        self._repository(repository)
        # no `indices`: every index, hidden ones and data streams included (Elasticsearch's default `all`)
        hidden = "indices" not in body or "hidden" in body.get("expand_wildcards", "all")
        taken = {index: self.indices[index] for index in self._matching(body.get("indices", "*"), hidden)}
        snapshots = dict(self.folder.get("snapshots", {}))
        snapshots[name] = taken
        generation = self.folder.get("generation", 0) + 1
        self.folder = {"generation": generation, "snapshots": snapshots}
        self.repositories[repository] = generation
        return {"snapshot": {"state": "SUCCESS"}}

    def _restore(self, repository: str, name: str, body: dict) -> dict:
        self._repository(repository)
        snapshot = self.folder["snapshots"][name]
        wanted = [i for i in snapshot if any(fnmatch.fnmatchcase(i, p) for p in body.get("indices", "*").split(","))]
        if clash := [index for index in wanted if index in self.indices]:
            raise ElasticsearchError(f"snapshot_restore_exception: cannot restore index {clash} because it exists")
        self.indices.update({index: snapshot[index] for index in wanted})
        return {"snapshot": {"indices": wanted}}


def elasticsearch_name_rule(name: str) -> str | None:
    """Elasticsearch's snapshot-name validation (SnapshotsService), written out for the stand-in."""
    if not name:
        return "cannot be empty"
    if any(c.isspace() for c in name):
        return "must not contain whitespace"
    if "," in name or "#" in name:
        return "must not contain ',' or '#'"
    if name.startswith("_"):
        return "must not start with '_'"
    if name.lower() != name:
        return "must be lowercase"
    if any(c in name for c in '\\/*?"<>|'):
        return 'must not contain the following characters [\\, /, *, ?, ", <, >, |]'
    return None


@dataclass
class FakeStack:
    """The containers `compose exec` reaches, and what compose was asked to do."""

    elasticsearch: FakeElasticsearch = field(default_factory=FakeElasticsearch)
    fileserver: dict[str, bytes] = field(default_factory=lambda: {"model.pkl": b"weights"})
    mongo: dict[str, int] = field(default_factory=lambda: {"tasks": 3, "projects": 1, "models": 2})
    compose_calls: list[tuple[str, ...]] = field(default_factory=list)
    settings: object = None

    # --- DockerRuntime's surface -----------------------------------------------------------
    def compose(self, *args: str, **_) -> None:
        self.compose_calls.append(args)

    def up(self) -> bool:
        self.compose_calls.append(("up", "--wait"))
        return True

    def rendered_config(self) -> dict:
        return {"services": {"apiserver": {"image": "clearml/server:2.3.0"}}}

    # --- Runtime.exec (`compose exec`) -------------------------------------------------------
    def exec(self, service: str, command: list[str], stdin=None, stdout=None) -> str:
        if service == "elasticsearch" and command[0] == "curl":
            method, url = command[command.index("-X") + 1], command[command.index("-X") + 2]
            body = json.loads(command[command.index("-d") + 1]) if "-d" in command else None
            return json.dumps(self.elasticsearch.request(method, url.removeprefix(clearml.ES), body))
        if command[:2] in (["rm", "-rf"], ["sh", "-c"]):  # emptying the snapshot or the fileserver folder
            if service == "elasticsearch":
                self.elasticsearch.folder = {}
            else:
                self.fileserver = {}
            return ""
        if command[0] == "tar":
            return self._tar(service, command, stdin, stdout)
        if service == "mongo" and command[0] == "mongosh":
            script = command[-1]
            if "countDocuments" in script:
                return json.dumps(self.mongo)
            return "2.3.0" if "versions" in script else "7.0.22"
        if service == "mongo" and command[0] == "mongodump":
            stdout.write(json.dumps(self.mongo).encode())
            return ""
        if service == "mongo" and command[0] == "mongorestore":
            self.mongo = json.loads(stdin.read())
            return ""
        raise AssertionError(f"the stand-in does not know {service}: {command}")

    def _tar(self, service: str, command: list[str], stdin, stdout) -> str:
        if "-cf" in command:
            content = self.elasticsearch.folder if service == "elasticsearch" else self.fileserver
            payload = json.dumps(content, default=lambda b: b.decode()).encode()
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                info = tarfile.TarInfo("content.json")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            stdout.write(buffer.getvalue())
            return ""
        with tarfile.open(fileobj=io.BytesIO(stdin.read())) as tar:
            content = json.loads(tar.extractfile("content.json").read())
        if service == "elasticsearch":
            self.elasticsearch.folder = content
        else:
            self.fileserver = {name: value.encode() for name, value in content.items()}
        return ""


@pytest.fixture
def stack(tmp_path) -> FakeStack:
    fake = FakeStack(settings=type("S", (), {"state_path": tmp_path / "state"})())
    fake.settings.state_path.mkdir()
    return fake


CONSOLE = Console(file=io.StringIO())


def test_snapshot_names_are_valid_for_elasticsearch_at_any_moment():
    moments = [datetime(2026, 12, 4, 11, 45, 5, 144529, UTC), datetime(1999, 1, 1, tzinfo=UTC)]
    for moment in moments:
        name = snapshot_name(moment)
        assert elasticsearch_name_rule(name) is None, name
        assert snapshot_name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["mlstack-clearml-20261204T114505144529Z", "_x", "a b", "a,b", "a#b", "a/b", "a*b", "a?b", "", "A"]
)
def test_names_elasticsearch_refuses_are_refused_here_too(name):
    assert elasticsearch_name_rule(name) is not None
    assert snapshot_name_problem(name) is not None


def test_two_backups_in_a_row_both_succeed(stack, tmp_path):
    first = clearml.backup_clearml(stack, tmp_path / "a", CONSOLE)
    second = clearml.backup_clearml(stack, tmp_path / "b", CONSOLE)
    assert first.path.exists() and second.path.exists()
    assert stack.elasticsearch.repositories == {}, "the repository is unregistered after each backup"
    assert stack.elasticsearch.folder == {}, "the snapshot folder is removed after each backup"


def test_a_backup_takes_clearmls_indices_and_no_hidden_one(stack, tmp_path):
    backup = clearml.backup_clearml(stack, tmp_path, CONSOLE)
    assert backup.manifest.counts["events"] == 47
    assert backup.path.name == f"{backup.manifest.versions['snapshot']}.tar"
    with tarfile.open(backup.path) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    with tarfile.open(tmp_path / "unpacked" / "elasticsearch.tar") as snapshot:
        content = json.loads(snapshot.extractfile("content.json").read())
    (taken,) = content["snapshots"].values()
    assert not [index for index in taken if index.startswith(".")]
    assert len(taken) == 3


def test_a_registration_left_behind_by_an_older_mlstack_does_not_break_the_backup(stack, tmp_path):
    stack.elasticsearch.repositories["mlstack"] = 4  # registered, then its folder deleted
    assert clearml.backup_clearml(stack, tmp_path, CONSOLE).path.exists()


def test_restore_replaces_clearmls_indices_leaves_the_others_and_uses_persistent_settings(stack, tmp_path):
    backup = clearml.backup_clearml(stack, tmp_path, CONSOLE)
    before = dict(stack.elasticsearch.indices)
    stack.elasticsearch.indices["events-plot-d1bd92a3b039400cbafc60a7a5b1e52b"] = 5  # written after the backup
    stack.elasticsearch.repositories["mlstack"] = 9  # a stale registration on the target cluster
    stack.mongo["tasks"] = 4
    clearml.restore_clearml(stack, backup.path, CONSOLE, force=True)
    assert stack.elasticsearch.indices == before
    assert stack.elasticsearch.settings["transient"] == {}
    assert stack.elasticsearch.settings["persistent"] == {}, "the wildcard-delete permission is taken back"
    assert stack.elasticsearch.repositories == {}
    assert stack.mongo["tasks"] == 3


def test_restore_brings_the_fileserver_back_alone_before_the_servers(stack, tmp_path):
    backup = clearml.backup_clearml(stack, tmp_path, CONSOLE)
    stack.fileserver = {"other.bin": b"x"}
    clearml.restore_clearml(stack, backup.path, CONSOLE, force=True)
    assert stack.fileserver == {"model.pkl": b"weights"}
    starts = [call for call in stack.compose_calls if call[0] in ("start", "up")]
    assert starts[0] == ("up", "--detach", "--no-deps", "fileserver"), starts
    assert starts[-1] == ("up", "--wait"), "the whole stack comes back last"


def test_a_failed_snapshot_still_unregisters_the_repository(stack, tmp_path, monkeypatch):
    monkeypatch.setattr(clearml, "snapshot_name", lambda moment: "Not-Valid")
    with pytest.raises(ElasticsearchError, match="invalid_snapshot_name_exception"):
        clearml.backup_clearml(stack, tmp_path, CONSOLE)
    assert stack.elasticsearch.repositories == {} and stack.elasticsearch.folder == {}
    assert not list(Path(tmp_path).glob("*.tar"))


def test_a_restore_that_fails_midway_brings_the_servers_back_and_says_so(stack, tmp_path, monkeypatch):
    backup = clearml.backup_clearml(stack, tmp_path, CONSOLE)
    exec_in_container = stack.exec

    def failing_mongorestore(service, command, stdin=None, stdout=None):
        if command[0] == "mongorestore":
            raise CommandError("mongorestore: the disk is full")
        return exec_in_container(service, command, stdin, stdout)

    monkeypatch.setattr(stack, "exec", failing_mongorestore)
    with pytest.raises(BackupError, match="partly restored and running again"):
        clearml.restore_clearml(stack, backup.path, CONSOLE, force=True)
    assert stack.compose_calls[-1] == ("up", "--wait"), "the servers are started again"
