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
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from packaging.version import Version
from rich.console import Console

from mlstack.errors import BackupError
from mlstack.maintenance.archive import Manifest, read_archive, write_archive
from mlstack.maintenance.mlflow import Backup
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


def _exec(runtime: DockerRuntime, service: str, command: list[str], stdin=None, stdout=None) -> str:
    """Run `command` in `service`'s container; its standard output as text unless `stdout` takes it."""
    full = runtime.command("exec", "-T", service, *command)
    result = subprocess.run(full, stdin=stdin, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE)
    if result.returncode != 0:
        raise BackupError(
            f"`{' '.join(command[:3])}` in {service} failed: {result.stderr.decode(errors='replace')[-2000:]}"
        )
    return "" if stdout else result.stdout.decode()


def _es(runtime: DockerRuntime, method: str, path: str, body: dict | None = None) -> dict:
    command = ["curl", "-fsS", "-X", method, f"{ES}{path}", "-H", "Content-Type: application/json"]
    return json.loads(_exec(runtime, "elasticsearch", [*command, *(["-d", json.dumps(body)] if body else [])]) or "{}")


def clearml_counts(runtime: DockerRuntime) -> dict[str, int]:
    counts = json.loads(
        _exec(runtime, "mongo", ["mongosh", "--quiet", "--eval", COUNT_SCRIPT]).strip().splitlines()[-1]
    )
    counts["events"] = int(_es(runtime, "GET", "/events-*/_count?allow_no_indices=true")["count"])
    return counts


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
    versions = [v for v in _exec(runtime, "mongo", ["mongosh", "--quiet", "--eval", script]).split(",") if v.strip()]
    return str(max(Version(v.strip()) for v in versions)) if versions else "0.0.0"


def server_version(runtime: DockerRuntime) -> str:
    """The ClearML server version the compose file runs (its apiserver image's tag)."""
    return runtime.rendered_config()["services"]["apiserver"]["image"].rpartition(":")[2]


def _versions(runtime: DockerRuntime) -> dict[str, str]:
    return {
        "clearml_server": server_version(runtime),
        "clearml_data": data_version(runtime),
        "mongo": _exec(runtime, "mongo", ["mongosh", "--quiet", "--eval", "print(db.version())"]).strip(),
        "elasticsearch": _es(runtime, "GET", "/")["version"]["number"],
    }


def backup_clearml(runtime: DockerRuntime, output: Path, console: Console) -> Backup:
    """One archive of the running ClearML stack in `output` (see the module docstring)."""
    output.mkdir(parents=True, exist_ok=True, mode=0o700)  # when made here: private, like the archives
    name = snapshot_name(datetime.now(UTC))
    with TemporaryDirectory(dir=output, prefix=".mlstack-backup-") as temporary:
        folder = Path(temporary)
        versions, counts = _versions(runtime), clearml_counts(runtime)
        with console.status("dumping MongoDB"), (folder / "mongo.archive.gz").open("wb") as dump:
            _exec(runtime, "mongo", ["mongodump", "--archive", "--gzip", "--quiet"], stdout=dump)
        with console.status("snapshotting Elasticsearch"):
            _exec(runtime, "elasticsearch", ["rm", "-rf", SNAPSHOTS])
            _fresh_repository(runtime)
            try:
                _es(runtime, "PUT", f"/_snapshot/{REPOSITORY}/{name}?wait_for_completion=true", SNAPSHOT_BODY)
                with (folder / "elasticsearch.tar").open("wb") as snapshot:
                    _exec(runtime, "elasticsearch", ["tar", "-C", SNAPSHOTS, "-cf", "-", "."], stdout=snapshot)
            finally:
                _drop_repository(runtime)
                _exec(runtime, "elasticsearch", ["rm", "-rf", SNAPSHOTS])
        with console.status("copying the fileserver's files"), (folder / "fileserver.tar").open("wb") as files:
            _exec(runtime, "fileserver", ["tar", "-C", FILESERVER, "-cf", "-", "."], stdout=files)
        manifest = Manifest("clearml", datetime.now(UTC).isoformat(), versions | {"snapshot": name}, counts)
        return Backup(write_archive(folder, manifest, output / f"{name}.tar"), manifest)


def restore_clearml(runtime: DockerRuntime, archive: Path, console: Console, force: bool = False) -> dict[str, int]:
    """Restore `archive` onto the running ClearML stack: checked whole first, onto an empty stack unless
    `force`, the counts verified afterwards."""
    with TemporaryDirectory(dir=runtime.settings.state_path, prefix=".restore-") as temporary:
        folder = Path(temporary)
        manifest = read_archive(archive, folder)
        if manifest.stack != "clearml":
            raise BackupError(f"{archive} is a backup of the {manifest.stack} stack, not of the ClearML stack")
        current_server = server_version(runtime)
        if problem := upgrade_path_problem(manifest.versions["clearml_data"], current_server):
            raise BackupError(f"{archive} cannot be restored onto ClearML server {current_server}: {problem}")
        current = clearml_counts(runtime)
        if not force and (current["tasks"] or current["models"]):
            raise BackupError(
                f"the ClearML stack is not empty ({current['tasks']} tasks, {current['models']} models): restore "
                "onto a freshly started stack, or pass --force to replace everything in it; nothing was changed"
            )
        servers = ("agent-services", "async_delete", "webserver", "apiserver", "fileserver")
        runtime.compose("--profile", "*", "stop", *servers)
        try:
            with (folder / "mongo.archive.gz").open("rb") as dump:
                _exec(runtime, "mongo", ["mongorestore", "--archive", "--gzip", "--drop", "--quiet"], stdin=dump)
            _restore_snapshot(runtime, folder / "elasticsearch.tar", manifest.versions["snapshot"])
            # the fileserver alone: `start` would bring the apiserver up before the files are back
            runtime.compose("up", "--detach", "--no-deps", "fileserver")
            _exec(runtime, "fileserver", ["sh", "-c", f"rm -rf {FILESERVER}/* {FILESERVER}/.[!.]*"])
            with (folder / "fileserver.tar").open("rb") as files:
                _exec(runtime, "fileserver", ["tar", "-C", FILESERVER, "-xf", "-"], stdin=files)
        except Exception as error:
            raise BackupError(
                f"restore from {archive} failed midway ({error}); the stack is partly restored and running again: "
                f"run `mlstack restore {archive} --force` once the cause is fixed"
            ) from error
        finally:
            runtime.up()
    restored = clearml_counts(runtime)
    if differences := {
        key: (value, restored.get(key)) for key, value in manifest.counts.items() if restored.get(key) != value
    }:
        listed = ", ".join(f"{key}: {got} instead of {expected}" for key, (expected, got) in differences.items())
        raise BackupError(f"restored from {archive}, but the counts differ from the archive's: {listed}")
    return restored


def _restore_snapshot(runtime: DockerRuntime, snapshot: Path, name: str) -> None:
    """ClearML's indices replaced by the archive's snapshot `name`; other indices are left alone."""
    _exec(runtime, "elasticsearch", ["sh", "-c", f"rm -rf {SNAPSHOTS} && mkdir -p {SNAPSHOTS}"])
    with snapshot.open("rb") as archive:
        _exec(runtime, "elasticsearch", ["tar", "-C", SNAPSHOTS, "-xf", "-"], stdin=archive)
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
        _exec(runtime, "elasticsearch", ["rm", "-rf", SNAPSHOTS])


def check_upgrade(runtime: DockerRuntime) -> str:
    """Refuse a version jump upstream forbids (BackupError naming the path); returns the target version."""
    target = server_version(runtime)
    if problem := upgrade_path_problem(data_version(runtime), target):
        raise BackupError(f"not upgrading: {problem}; nothing was changed")
    return target
