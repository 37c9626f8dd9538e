"""Backup, restore and upgrade guard of the ClearML stack (docker runtime: its stores run nowhere else).

What a backup holds, each taken inside its own container (`compose exec`), no engine port published:
- MongoDB (`mongodump --archive --gzip`): every task, project, model, queue, user and credential;
- Elasticsearch (a snapshot of ClearML's own indices into the `path.repo` folder, then that folder):
  the scalars, plots, debug-image and log events, queue metrics and worker statistics. Hidden
  indices and data streams (Elasticsearch 8's deprecation logs) are not ClearML's and stay out;
  the snapshot repository is registered afresh for each backup and restore and removed after it,
  since Elasticsearch keeps a repository whose folder is gone and fails its next snapshot;
- the fileserver's folder: artifacts, models and debug images.
Redis is left out on purpose: it holds what the apiserver and agents rebuild within seconds (worker
registrations and statistics, queue metrics, session caches); tasks and queues live in MongoDB.
The counts recorded are MongoDB's (tasks, projects, models) and Elasticsearch's (events) taken just
before the dumps: back up a quiet server (no task running) for an exact check after restore.

Upgrades: the apiserver migrates MongoDB on start, but from 1.x it must pass 1.17 before 2.x
(upstream's upgrade/1_17_to_2_0); a jump past that loses data, so `upgrade_path_problem` refuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from packaging.version import Version
from rich.console import Console

from mlstack.errors import BackupError
from mlstack.maintenance.archive import Manifest
from mlstack.maintenance.template import Backup, StackData
from mlstack.runtime.docker import DockerRuntime

SNAPSHOTS = "/tmp/mlstack-snapshots"  # path.repo in infra/clearml/compose.yaml
FILESERVER = "/mnt/fileserver"
#: MongoDB counts recorded in the manifest and verified after a restore.
COUNT_SCRIPT = (
    'const b = db.getSiblingDB("backend");'
    "print(JSON.stringify({tasks: b.task.countDocuments(), projects: b.project.countDocuments(),"
    " models: b.model.countDocuments()}))"
)
ES = "http://localhost:9200"
#: ClearML's indices (apiserver: events-<type>-<company>, queue_metrics_<company>_<month>,
#: worker_stats_<company>_<month>); a wildcard matches no hidden index or data stream.
CLEARML_INDICES = "events-*,queue_metrics_*,worker_stats_*"
REPOSITORY = "mlstack"
#: What Elasticsearch refuses in a snapshot name besides upper case (SnapshotsService.validate).
_SNAPSHOT_NAME_FORBIDDEN = set('\\/*?"<>|,# ')


def snapshot_name(moment: datetime) -> str:
    """The backup's name, valid as an Elasticsearch snapshot name (lowercase, none of its forbidden
    characters, not starting with '_'), so the archive and its snapshot share it."""
    return f"mlstack-clearml-{moment.strftime('%Y%m%dt%H%M%S%fz')}"


def snapshot_name_problem(name: str) -> str | None:
    """Why Elasticsearch would refuse `name` as a snapshot name, or None."""
    if not name:
        return "cannot be empty"
    if name != name.lower():
        return "must be lowercase"
    if name.startswith("_"):
        return "must not start with '_'"
    if forbidden := sorted(_SNAPSHOT_NAME_FORBIDDEN.intersection(name) | {c for c in name if c.isspace()}):
        return f"must not contain {forbidden}"
    return None


def upgrade_path_problem(data_version: str, target_version: str) -> str | None:
    """Why the data of server `data_version` cannot go straight to `target_version`, or None."""
    data, target = Version(data_version), Version(target_version)
    if target < data:
        return f"the data is from ClearML server {data}, newer than {target}: a downgrade is not possible"
    if data < Version("1.17") and target >= Version("2.0"):
        return (
            f"the data is from ClearML server {data}: upstream allows 2.x only from 1.17. Run clearml/server "
            "1.17.1 on it first (upstream's upgrade/1_17_to_2_0), then this version"
        )
    return None


def _es(runtime: DockerRuntime, method: str, path: str, body: dict | None = None) -> dict:
    command = ["curl", "-fsS", "-X", method, f"{ES}{path}", "-H", "Content-Type: application/json"]
    return json.loads(runtime.exec("elasticsearch", [*command, *(["-d", json.dumps(body)] if body else [])]) or "{}")


#: A snapshot (and restore) of ClearML's indices alone: no cluster state, no feature states.
SNAPSHOT_BODY = {
    "indices": CLEARML_INDICES,
    "expand_wildcards": "open,closed",
    "include_global_state": False,
    "feature_states": ["none"],
}


def _fresh_repository(runtime: DockerRuntime) -> None:
    """Register the snapshot repository anew over SNAPSHOTS (removing any registration left behind)."""
    _drop_repository(runtime)
    _es(runtime, "PUT", f"/_snapshot/{REPOSITORY}", {"type": "fs", "settings": {"location": SNAPSHOTS}})


def _drop_repository(runtime: DockerRuntime) -> None:
    """Unregister the repository (its files stay for the caller to remove); nothing when none is registered."""
    if REPOSITORY in _es(runtime, "GET", "/_snapshot"):
        _es(runtime, "DELETE", f"/_snapshot/{REPOSITORY}")


def _set_destructive_requires_name(runtime: DockerRuntime, value: bool | None) -> None:
    _es(runtime, "PUT", "/_cluster/settings", {"persistent": {"action.destructive_requires_name": value}})


def data_version(runtime: DockerRuntime) -> str:
    """The newest ClearML server version that ran on this MongoDB (the apiserver records it)."""
    script = 'print(db.getSiblingDB("backend").versions.find().toArray().map(v => v.num).join(","))'
    versions = [v for v in runtime.exec("mongo", ["mongosh", "--quiet", "--eval", script]).split(",") if v.strip()]
    return str(max(Version(v.strip()) for v in versions)) if versions else "0.0.0"


def server_version(runtime: DockerRuntime) -> str:
    """The ClearML server version the compose file runs (its apiserver image's tag)."""
    return runtime.rendered_config()["services"]["apiserver"]["image"].rpartition(":")[2]


def _versions(runtime: DockerRuntime) -> dict[str, str]:
    return {
        "clearml_server": server_version(runtime),
        "clearml_data": data_version(runtime),
        "mongo": runtime.exec("mongo", ["mongosh", "--quiet", "--eval", "print(db.version())"]).strip(),
        "elasticsearch": _es(runtime, "GET", "/")["version"]["number"],
    }


@dataclass
class MongoData:
    """Every task, project, model, queue, user and credential (`mongodump --archive --gzip`)."""

    runtime: DockerRuntime
    name: str = "mongo"

    def dump(self, folder: Path, console: Console) -> dict[str, int]:
        counts = self.counts()
        with console.status("dumping MongoDB"), (folder / "mongo.archive.gz").open("wb") as dump:
            self.runtime.exec("mongo", ["mongodump", "--archive", "--gzip", "--quiet"], stdout=dump)
        return counts

    def restore(self, folder: Path, manifest: Manifest, console: Console) -> None:
        with (folder / "mongo.archive.gz").open("rb") as dump:
            self.runtime.exec("mongo", ["mongorestore", "--archive", "--gzip", "--drop", "--quiet"], stdin=dump)

    def counts(self) -> dict[str, int]:
        return json.loads(
            self.runtime.exec("mongo", ["mongosh", "--quiet", "--eval", COUNT_SCRIPT]).strip().splitlines()[-1]
        )


@dataclass
class ElasticsearchEvents:
    """ClearML's indices, as a snapshot named after the backup (see the module docstring)."""

    runtime: DockerRuntime
    snapshot: str = ""
    name: str = "elasticsearch"

    def dump(self, folder: Path, console: Console) -> dict[str, int]:
        counts, runtime = self.counts(), self.runtime
        with console.status("snapshotting Elasticsearch"):
            runtime.exec("elasticsearch", ["rm", "-rf", SNAPSHOTS])
            _fresh_repository(runtime)
            try:
                _es(runtime, "PUT", f"/_snapshot/{REPOSITORY}/{self.snapshot}?wait_for_completion=true", SNAPSHOT_BODY)
                with (folder / "elasticsearch.tar").open("wb") as snapshot:
                    runtime.exec("elasticsearch", ["tar", "-C", SNAPSHOTS, "-cf", "-", "."], stdout=snapshot)
            finally:
                _drop_repository(runtime)
                runtime.exec("elasticsearch", ["rm", "-rf", SNAPSHOTS])
        return counts

    def restore(self, folder: Path, manifest: Manifest, console: Console) -> None:
        _restore_snapshot(self.runtime, folder / "elasticsearch.tar", manifest.versions["snapshot"])

    def counts(self) -> dict[str, int]:
        return {"events": int(_es(self.runtime, "GET", "/events-*/_count?allow_no_indices=true")["count"])}


@dataclass
class FileserverFiles:
    """The fileserver's folder: artifacts, models and debug images."""

    runtime: DockerRuntime
    name: str = "fileserver"

    def dump(self, folder: Path, console: Console) -> dict[str, int]:
        with console.status("copying the fileserver's files"), (folder / "fileserver.tar").open("wb") as files:
            self.runtime.exec("fileserver", ["tar", "-C", FILESERVER, "-cf", "-", "."], stdout=files)
        return {}

    def restore(self, folder: Path, manifest: Manifest, console: Console) -> None:
        # the fileserver alone: `start` would bring the apiserver up before the files are back
        self.runtime.compose("up", "--detach", "--no-deps", "fileserver")
        self.runtime.exec("fileserver", ["sh", "-c", f"rm -rf {FILESERVER}/* {FILESERVER}/.[!.]*"])
        with (folder / "fileserver.tar").open("rb") as files:
            self.runtime.exec("fileserver", ["tar", "-C", FILESERVER, "-xf", "-"], stdin=files)

    def counts(self) -> dict[str, int]:
        return {}


#: What writes to the stores: stopped for a restore, started again after it.
SERVERS = ("agent-services", "async_delete", "webserver", "apiserver", "fileserver")


def clearml_data(runtime: DockerRuntime, snapshot: str = "") -> StackData:
    def refusal(manifest: Manifest) -> str | None:
        current = server_version(runtime)
        problem = upgrade_path_problem(manifest.versions["clearml_data"], current)
        return f"onto ClearML server {current}, {problem}" if problem else None

    def holding(counts: dict[str, int]) -> str | None:
        return f"{counts['tasks']} tasks, {counts['models']} models" if counts["tasks"] or counts["models"] else None

    return StackData(
        "clearml",
        [MongoData(runtime), ElasticsearchEvents(runtime, snapshot), FileserverFiles(runtime)],
        stop_servers=lambda: runtime.compose("--profile", "*", "stop", *SERVERS),
        start_servers=runtime.up,
        refusal=refusal,
        holding=holding,
    )


def clearml_counts(runtime: DockerRuntime) -> dict[str, int]:
    return clearml_data(runtime).counts()


def backup_clearml(runtime: DockerRuntime, output: Path, console: Console) -> Backup:
    """One archive of the running ClearML stack in `output` (see the module docstring)."""
    name = snapshot_name(datetime.now(UTC))
    versions = _versions(runtime) | {"snapshot": name}
    return clearml_data(runtime, snapshot=name).backup(output, name, versions, console)


def restore_clearml(runtime: DockerRuntime, archive: Path, console: Console, force: bool = False) -> dict[str, int]:
    """Restore `archive` onto the running ClearML stack: checked whole first, onto an empty stack unless
    `force`, the counts verified afterwards."""
    return clearml_data(runtime).restore(archive, runtime.settings.state_path, console, force)


def _restore_snapshot(runtime: DockerRuntime, snapshot: Path, name: str) -> None:
    """ClearML's indices replaced by the archive's snapshot `name`; other indices are left alone."""
    runtime.exec("elasticsearch", ["sh", "-c", f"rm -rf {SNAPSHOTS} && mkdir -p {SNAPSHOTS}"])
    with snapshot.open("rb") as archive:
        runtime.exec("elasticsearch", ["tar", "-C", SNAPSHOTS, "-xf", "-"], stdin=archive)
    _fresh_repository(runtime)
    try:
        # Elasticsearch deletes by wildcard only when told to (persistent: a restart in between keeps it)
        _set_destructive_requires_name(runtime, False)
        try:
            _es(runtime, "DELETE", f"/{CLEARML_INDICES}?expand_wildcards=open,closed&allow_no_indices=true")
        finally:
            _set_destructive_requires_name(runtime, None)
        body = {key: value for key, value in SNAPSHOT_BODY.items() if key != "expand_wildcards"}
        _es(runtime, "POST", f"/_snapshot/{REPOSITORY}/{name}/_restore?wait_for_completion=true", body)
    finally:
        _drop_repository(runtime)
        runtime.exec("elasticsearch", ["rm", "-rf", SNAPSHOTS])


def check_upgrade(runtime: DockerRuntime) -> str:
    """Refuse a version jump upstream forbids (BackupError naming the path); returns the target version."""
    target = server_version(runtime)
    if problem := upgrade_path_problem(data_version(runtime), target):
        raise BackupError(f"not upgrading: {problem}; nothing was changed")
    return target
