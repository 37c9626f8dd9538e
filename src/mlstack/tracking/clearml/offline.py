"""Upload offline ClearML sessions once a server answers, each exactly once.

A closed offline session is `<offline dir>/offline/<task id>.zip` (next to its folder). After a
successful import a marker `<task id>.synced.json` records the server's task id; sessions with a
marker are skipped, and nothing is ever deleted, so a failed run can simply be repeated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from clearml import Task

from mlstack.envfile import write_private
from mlstack.settings import Settings
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.clearml.tracker import FAILED_TAG

SYNCED_SUFFIX = ".synced.json"


@dataclass
class SyncReport:
    synced: dict[str, str] = field(default_factory=dict)  # offline session id -> server task id
    already_synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # offline session id -> error


def sessions_dir(settings: Settings) -> Path:
    return settings.clearml_offline_path / "offline"


def pending_sessions(settings: Settings) -> list[Path]:
    """Closed sessions (zips) without a sync marker, oldest first."""
    folder = sessions_dir(settings)
    zips = sorted(folder.glob("*.zip"), key=lambda path: path.stat().st_mtime) if folder.is_dir() else []
    return [zip_file for zip_file in zips if not marker_path(zip_file).exists()]


def marker_path(session_zip: Path) -> Path:
    return session_zip.with_name(session_zip.stem + SYNCED_SUFFIX)


def import_session(session_zip: Path) -> str:
    """Upload one session with the SDK; a session whose block failed is marked failed on the server."""
    task_id = Task.import_offline_session(str(session_zip))
    session_folder = session_zip.with_suffix("")
    task_json = session_folder / "task.json"
    if task_json.is_file() and FAILED_TAG in json.loads(task_json.read_text()).get("tags", []):
        Task.get_task(task_id=task_id).mark_failed(status_reason="failed while offline", force=True)
    return task_id


def sync_offline_sessions(settings: Settings, importer: Callable[[Path], str] | None = None) -> SyncReport:
    """Upload every pending offline session to the configured server.

    Raises ClearMLUnavailableError when no server is configured or answering. A session that fails
    to import is reported in `failed` and stays pending; the others are still uploaded.
    """
    if importer is None:
        require_server(settings)
        importer = import_session
    report = SyncReport()
    folder = sessions_dir(settings)
    if folder.is_dir():
        report.already_synced = sorted(path.name[: -len(SYNCED_SUFFIX)] for path in folder.glob("*" + SYNCED_SUFFIX))
    for session_zip in pending_sessions(settings):
        session_id = session_zip.stem
        try:
            task_id = importer(session_zip)
        except Exception as exc:  # one broken session must not block the rest
            report.failed[session_id] = f"{type(exc).__name__}: {exc}"
            continue
        marker = {"task_id": task_id, "synced_at": datetime.now(UTC).isoformat(), "server": settings.clearml_api_url}
        write_private(marker_path(session_zip), json.dumps(marker, indent=2) + "\n")
        report.synced[session_id] = task_id
    return report
