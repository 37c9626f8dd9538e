"""The local spool: what the server could not take, kept on disk for `mlstack sync`.

A metrics file starts with a header line {"tracking_uri": ...}; every other line is one point
{"run_id", "key", "value", "timestamp", "step"}. Replaying is idempotent: the server ignores a
point whose run, key, value, timestamp and step it already has. A run-end file holds the end
(status, end time) of one run that finished while its server was unreachable; sync sends it
after the points.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from itertools import groupby, islice
from pathlib import Path

from mlstack.settings import Settings

SPOOL_FOLDER = "spool"
Point = tuple[str, str, float, int, int]  # run_id, key, value, timestamp (ms), step


def spool_folder(settings: Settings) -> Path:
    return settings.state_path / SPOOL_FOLDER


class MetricSpool:
    """Append-only spool file, created on first write; safe to share between flusher threads."""

    def __init__(self, folder: Path, tracking_uri: str):
        self.path = folder / f"metrics-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl"
        self._tracking_uri = tracking_uri
        self._lock = threading.Lock()
        self.points = 0

    def append(self, points: Iterable[Point]) -> int:
        """Write `points` durably (flushed and fsynced); returns how many were written."""
        lines = [
            json.dumps({"run_id": run_id, "key": key, "value": value, "timestamp": timestamp, "step": step})
            for run_id, key, value, timestamp, step in points
        ]
        if not lines:
            return 0
        with self._lock:
            new_file = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                if new_file:
                    handle.write(json.dumps({"tracking_uri": self._tracking_uri}) + "\n")
                handle.write("\n".join(lines) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self.points += len(lines)
        return len(lines)


def read_spool(path: Path) -> tuple[str, Iterator[Point]]:
    """The tracking URI a spool file was meant for, and its points in logged order."""
    handle = path.open(encoding="utf-8")
    tracking_uri = json.loads(handle.readline())["tracking_uri"]

    def points() -> Iterator[Point]:
        with handle:
            for line in handle:
                if line.strip():
                    item = json.loads(line)
                    yield item["run_id"], item["key"], item["value"], item["timestamp"], item["step"]

    return tracking_uri, points()


_RUN_END_PREFIX = "run-end-"


def _is_run_end(path: Path) -> bool:
    return path.name.startswith(_RUN_END_PREFIX)


def _spool_files(settings_or_path: Settings | Path | str, pattern: str) -> list[Path]:
    """The files matching `pattern` in the spool folder (Settings) or a given folder; a given file as is."""
    if isinstance(settings_or_path, Settings):
        target = spool_folder(settings_or_path)
        if not target.exists():
            return []
    else:
        target = Path(settings_or_path)
        if not target.exists():
            raise FileNotFoundError(f"no spool file or folder at {target}: pass the path `mlstack sync` reported")
    return sorted(target.glob(pattern)) if target.is_dir() else [target]


def replay_spool(settings_or_path: Settings | Path | str, tracking_uri: str | None = None) -> int:
    """Send spooled points to the server and delete each file once all its points are accepted.

    `settings_or_path`: a Settings (every file in `<state>/spool/`), a spool folder, or one file.
    `tracking_uri` overrides the URI recorded in each file. Returns how many points were sent.
    """
    from mlstack.tracking.mlflow.transport import sender_for

    files = [path for path in _spool_files(settings_or_path, "metrics-*.jsonl") if not _is_run_end(path)]
    sent = 0
    for path in files:
        recorded_uri, points = read_spool(path)
        sender = sender_for(tracking_uri or recorded_uri)
        while chunk := list(islice(points, sender.max_points)):
            for run_id, run_points in groupby(chunk, key=lambda point: point[0]):
                sender.send(run_id, list(run_points))
            sent += len(chunk)
        path.unlink()
    return sent


def spool_run_end(folder: Path, tracking_uri: str, run_id: str, status: str, end_time: int) -> Path:
    """Keep the end of run `run_id` (durably: written, fsynced, renamed into place); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_RUN_END_PREFIX}{run_id}.json"
    partial = path.with_suffix(".partial")
    record = {"tracking_uri": tracking_uri, "run_id": run_id, "status": status, "end_time": end_time}
    with partial.open("w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
    return path


def replay_run_ends(settings_or_path: Settings | Path | str, tracking_uri: str | None = None) -> int:
    """End the spooled runs on the server (status and end time as recorded); returns how many.

    Takes what replay_spool takes; run it after replay_spool so every point is in before the end.
    """
    from mlflow import MlflowClient

    files = [path for path in _spool_files(settings_or_path, f"{_RUN_END_PREFIX}*.json") if _is_run_end(path)]
    for path in files:
        record = json.loads(path.read_text(encoding="utf-8"))
        client = MlflowClient(tracking_uri or record["tracking_uri"])
        client.set_terminated(record["run_id"], record["status"], end_time=record["end_time"])
        path.unlink()
    return len(files)
