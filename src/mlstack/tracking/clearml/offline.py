"""Upload offline ClearML sessions once a server answers, each exactly once.

A session is the folder `<offline dir>/offline/<session id>/`; the SDK zips it next to the folder
when the task closes. A tracker holds `<session id>.lock` while its session is open: sync leaves
such sessions alone, and uploads a folder without a zip whose lock is free (its process was
killed) as a failed task.

Exactly once: each import is tagged on the server with the system tag `mlstack-offline-session:<id>`
(it arrives with the first edit after the SDK creates the task). Before importing, sync looks for
that tag: a finished import is only recorded, a partial one (a sync that died or failed midway) is
deleted and imported again. After a successful import a marker `<session id>.synced.json` records
the server's task id; sessions with a marker are skipped. Sync never changes or deletes a session:
it imports a repaired copy (see `_repair`).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from uuid import uuid4

from clearml import Task

from mlstack.client_settings import ClientSettings
from mlstack.envfile import write_private
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.clearml.registry import set_typed_metadata
from mlstack.tracking.errors import ClearMLConfigError, ClearMLSyncError

#: Tag carried by tasks whose block raised; offline sessions keep it so `sync` can mark them failed.
FAILED_TAG = "mlstack:failed"
SESSION_TAG_PREFIX = "mlstack-offline-session:"
SYNCED_SUFFIX = ".synced.json"
LOCK_SUFFIX = ".lock"
_OPENING_PREFIX = "opening-"
#: Statuses an import reaches only once it has finished (it ends with `completed`; sync may then fail it).
_IMPORTED_STATUSES = ("completed", "failed", "published", "publishing", "closed")
KILLED_REASON = "the process ended before closing its offline session (killed?)"


@dataclass
class SyncReport:
    synced: dict[str, str] = field(default_factory=dict)  # offline session id -> server task id
    already_synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # offline session id -> error
    still_open: list[str] = field(default_factory=list)  # sessions a running process is writing


@dataclass(frozen=True)
class OfflineSession:
    id: str
    source: Path  # the zip, or the folder of a session whose process never closed it
    closed: bool


class SessionLock:
    """Held by a tracker from before Task.init until its offline session is closed.

    The lock is an flock: the OS releases it once every process holding it is gone, the tracker's
    and the subprocesses the SDK forks (its reporting subprocess leaves up to 30 s after a killed
    parent), so a session is never read while something may still write it. It starts under a
    random name (Task.init chooses the session id) and is renamed, still held, once the id is known.
    """

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{_OPENING_PREFIX}{uuid4().hex}{LOCK_SUFFIX}"
        self._file = self.path.open("w")
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def name_session(self, session_id: str) -> None:
        target = self.path.with_name(session_id + LOCK_SUFFIX)
        self.path.rename(target)
        self.path = target

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        self._file.close()


def _is_held(lock_file: Path) -> bool:
    try:
        with lock_file.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False
    return False


def sessions_dir(settings: ClientSettings) -> Path:
    return settings.clearml_offline_path / "offline"


def marker_path(folder: Path, session_id: str) -> Path:
    return folder / (session_id + SYNCED_SUFFIX)


def scan_sessions(settings: ClientSettings) -> tuple[list[OfflineSession], list[str]]:
    """Sessions without a sync marker, oldest first, and the ids of those still being written.

    A session is closed when its zip exists; a folder without a zip is abandoned when no tracker
    holds its lock (or, without a lock file, while no tracker is starting)."""
    folder = sessions_dir(settings)
    if not folder.is_dir():
        return [], []
    starting = any(_is_held(lock) for lock in folder.glob(f"{_OPENING_PREFIX}*{LOCK_SUFFIX}"))
    sessions, still_open = [], []
    ids = {path.stem for path in folder.glob("*.zip")} | {
        path.name for path in folder.iterdir() if (path / "task.json").is_file()
    }
    for session_id in ids:
        zip_file, lock = folder / f"{session_id}.zip", folder / f"{session_id}{LOCK_SUFFIX}"
        if marker_path(folder, session_id).exists():
            continue
        if _is_held(lock) or (not zip_file.exists() and not lock.exists() and starting):
            still_open.append(session_id)
        elif zip_file.exists():
            sessions.append(OfflineSession(session_id, zip_file, closed=True))
        else:
            sessions.append(OfflineSession(session_id, folder / session_id, closed=False))
    sessions.sort(key=lambda session: session.source.stat().st_mtime)
    return sessions, sorted(still_open)


def pending_sessions(settings: ClientSettings) -> list[OfflineSession]:
    """Sessions to upload (closed or abandoned, without a sync marker), oldest first."""
    return scan_sessions(settings)[0]


def _repair(folder: Path, task_data: dict, settings: ClientSettings) -> None:
    """Make the copied session importable by the SDK 2.1.12, exactly once, with its weights uploaded.

    - Offline, the SDK records a model's configuration twice (`config_text` and `config_dict`);
      `import_offline_session` passes both to OutputModel, which refuses ("Only one of (config_text,
      config_dict) is allowed"): keep the dict, from which the SDK derives the same text.
    - The weights path is recorded inside the original folder: point it into this copy.
    - Sessions recorded without a destination would register the local (temporary) file: upload to
      the output destination; and upload synchronously, so a failed upload fails the import (and
      leave the temporary path out of the model's comment).
    - The system tag that finds this import on the server again.
    """
    for model in task_data.get("offline_output_models", []):
        init, weights = model["init"], model["weights"]
        if init.get("config_dict") and init.get("config_text"):
            init.pop("config_text")
        recorded = weights.get("weights_filename")
        if recorded and (folder / "models" / Path(recorded).name).is_file():
            weights["weights_filename"] = str(folder / "models" / Path(recorded).name)
        model["output_uri"] = model.get("output_uri") or settings.clearml_output_destination
        weights.update(async_enable=False, update_comment=False)
    task_data["system_tags"] = [*(task_data.get("system_tags") or []), SESSION_TAG_PREFIX + task_data["id"]]


@contextmanager
def _repaired_copy(session: OfflineSession, settings: ClientSettings) -> Iterator[tuple[Path, dict]]:
    """A temporary copy of the session, repaired; yields its folder and the original task.json."""
    with TemporaryDirectory(prefix="mlstack-clearml-sync-") as scratch:
        folder = Path(scratch) / session.id
        if session.closed:
            with zipfile.ZipFile(session.source) as archive:
                archive.extractall(folder)
        else:
            shutil.copytree(session.source, folder)
        task_json = folder / "task.json"
        if not task_json.is_file():
            raise ClearMLConfigError(f"{session.source} has no task.json: it is not a ClearML offline session")
        original = json.loads(task_json.read_text())
        repaired = json.loads(task_json.read_text())
        _repair(folder, repaired, settings)
        task_json.write_text(json.dumps(repaired))
        yield folder, original


def _imported_task(session_id: str) -> Task | None:
    """The server's task of an earlier import of this session, if any; a partial one is deleted."""
    found = Task.get_tasks(task_filter={"system_tags": [SESSION_TAG_PREFIX + session_id]})
    for task in found:
        if task.get_status() in _IMPORTED_STATUSES:
            return task
        task.delete(delete_artifacts_and_models=True, raise_on_error=True)
    return None


def _finish(task_id: str, original: dict, closed: bool) -> None:
    """What the SDK's import leaves out: typed model metadata and the failed status. Idempotent."""
    task = Task.get_task(task_id=task_id)
    status = task.get_status()
    if status not in _IMPORTED_STATUSES:  # the SDK ignores a refused `completed`
        raise ClearMLSyncError(
            f"the server left the imported task {task_id} {status!r}, not completed: the next sync imports it again"
        )
    imported = list(task.models["output"])
    for record in original.get("offline_output_models", []):
        metadata = record["init"].get("config_dict")
        same_name = [model for model in imported if model.name == record["init"].get("name")]
        if same_name:
            imported.remove(same_name[0])
            if metadata:
                set_typed_metadata(same_name[0], metadata)
    reason = "failed while offline" if FAILED_TAG in original.get("tags", []) else None
    reason = reason or (None if closed else KILLED_REASON)
    if reason and status != "failed":
        task.mark_failed(status_reason=reason, status_message=reason, force=True)


def import_session(session: OfflineSession, settings: ClientSettings) -> str:
    """Upload one session with the SDK (once per server); returns the server's task id."""
    with _repaired_copy(session, settings) as (folder, original):
        earlier = _imported_task(original["id"])
        task_id = earlier.id if earlier else Task.import_offline_session(str(folder))
        _finish(task_id, original, session.closed)
    return task_id


def sync_offline_sessions(
    settings: ClientSettings, importer: Callable[[OfflineSession, ClientSettings], str] | None = None
) -> SyncReport:
    """Upload every pending offline session to the configured server.

    Raises ClearMLUnavailableError when no server is configured or answering. A session that fails
    to import is reported in `failed` with its error and stays pending; the others are still uploaded.
    """
    if importer is None:
        require_server(settings)
        importer = import_session
    folder = sessions_dir(settings)
    report = SyncReport()
    if folder.is_dir():
        report.already_synced = sorted(path.name[: -len(SYNCED_SUFFIX)] for path in folder.glob("*" + SYNCED_SUFFIX))
    sessions, report.still_open = scan_sessions(settings)
    for session in sessions:
        try:
            task_id = importer(session, settings)
        except Exception as exc:  # one broken session must not block the rest
            report.failed[session.id] = f"{type(exc).__name__}: {exc}"
            continue
        marker = {"task_id": task_id, "synced_at": datetime.now(UTC).isoformat(), "server": settings.clearml_api_url}
        write_private(marker_path(folder, session.id), json.dumps(marker, indent=2) + "\n")
        report.synced[session.id] = task_id
    return report
