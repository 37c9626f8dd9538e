"""The local spool: what the server could not take, kept on disk for `mlstack sync`.

A metrics file starts with a header line {"tracking_uri": ...}; every other line is one point
{"run_id", "key", "value", "timestamp", "step"}. Replaying is idempotent: the server ignores a
point whose run, key, value, timestamp and step it already has. A run-end file holds the end
(status, end time) of one run that finished while its server was unreachable; sync sends it
after the points. What the server refuses for good (e.g. points or the end of a deleted run) is set
aside in `rejected/` in the same format, with a "reason" field holding the server's answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby, islice
from pathlib import Path

from mlstack.client_settings import ClientSettings
from mlstack.tracking.errors import TrackingError
from mlstack.tracking.mlflow.transport import Point

SPOOL_FOLDER = "spool"
REJECTED_FOLDER = "rejected"


def spool_folder(settings: ClientSettings) -> Path:
    return settings.state_path / SPOOL_FOLDER


@dataclass(frozen=True)
class RejectedItem:
    """Points or a run end the server refused for good, set aside in `path` with its answer."""

    path: Path
    reason: str


@dataclass
class ReplayReport:
    """What a replay did: points accepted, runs ended, and what was set aside as refused."""

    sent_points: int = 0
    ended_runs: int = 0
    rejected: list[RejectedItem] = field(default_factory=list)


class ServerUnreachableError(TrackingError):
    """The server did not answer during a replay; the files not fully sent are kept."""

    def __init__(self, tracking_uri: str, folder: Path, detail: str):
        super().__init__(
            f"The MLflow server at {tracking_uri} does not answer ({detail}): sync stopped and nothing was lost, "
            f"the spool files are kept in {folder}. Start the server (`make up`) and run `mlstack sync` again."
        )


def _point_line(point: Point) -> str:
    run_id, key, value, timestamp, step = point
    return json.dumps({"run_id": run_id, "key": key, "value": value, "timestamp": timestamp, "step": step})


def _write_durably(path: Path, text: str) -> None:
    """Write `text` to `path` all or nothing: written, fsynced, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


class MetricSpool:
    """Append-only spool file, created on first write; safe to share between flusher threads."""

    def __init__(self, folder: Path, tracking_uri: str):
        self.path = folder / f"metrics-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl"
        self._tracking_uri = tracking_uri
        self._lock = threading.Lock()
        self.points = 0

    def append(self, points: Iterable[Point]) -> int:
        """Write `points` durably (flushed and fsynced); returns how many were written."""
        lines = [_point_line(point) for point in points]
        if not lines:
            return 0
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size = os.fstat(descriptor).st_size
                header = [json.dumps({"tracking_uri": self._tracking_uri})] if size == 0 else []
                _write_all(descriptor, ("\n".join([*header, *lines]) + "\n").encode(), size)
            finally:
                os.close(descriptor)
            self.points += len(lines)
        return len(lines)


def _write_all(descriptor: int, data: bytes, size: int) -> None:
    """Append `data` and fsync, all or nothing: on a failure (a full disk) the file is cut back to
    `size` bytes, so it never ends in a torn line, and the error is raised."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    except OSError:
        with contextlib.suppress(OSError):  # replay reads past a torn tail and sets it aside
            os.ftruncate(descriptor, size)
        raise


def read_spool(path: Path, unreadable: list[str] | None = None) -> tuple[str, Iterator[Point]]:
    """The tracking URI a spool file was meant for, and its points in logged order. A line that is
    not a whole point (a torn tail after a crash or a full disk) is skipped and added to `unreadable`."""
    handle = path.open(encoding="utf-8", errors="replace")
    tracking_uri = json.loads(handle.readline())["tracking_uri"]

    def points() -> Iterator[Point]:
        with handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    point = item["run_id"], item["key"], item["value"], item["timestamp"], item["step"]
                except (ValueError, KeyError, TypeError):
                    if unreadable is not None:
                        unreadable.append(line.rstrip("\n"))
                    continue
                yield point

    return tracking_uri, points()


_RUN_END_PREFIX = "run-end-"


def _is_run_end(path: Path) -> bool:
    return path.name.startswith(_RUN_END_PREFIX)


def _spool_files(settings_or_path: ClientSettings | Path | str, pattern: str) -> list[Path]:
    """The files matching `pattern` in the spool folder (settings) or a given folder; a given file as is."""
    if isinstance(settings_or_path, Path | str):
        target = Path(settings_or_path)
        if not target.exists():
            raise FileNotFoundError(f"no spool file or folder at {target}: pass the path `mlstack sync` reported")
    else:
        target = spool_folder(settings_or_path)
        if not target.exists():
            return []
    return sorted(target.glob(pattern)) if target.is_dir() else [target]


def replay_spool(settings_or_path: ClientSettings | Path | str, tracking_uri: str | None = None) -> ReplayReport:
    """Send spooled points; delete each file once every point was accepted or set aside.

    `settings_or_path`: the settings (every file in `<state>/spool/`), a spool folder, or one file.
    `tracking_uri` overrides the URI recorded in each file. The points of a run the server refuses
    for good go to `rejected/` beside the file, one file per run. Raises ServerUnreachableError,
    keeping the file, when the server does not answer.
    """
    from mlstack.tracking.mlflow.transport import RejectedBatchError, TransientSendError, sender_for

    report = ReplayReport()
    files = [path for path in _spool_files(settings_or_path, "metrics-*.jsonl") if not _is_run_end(path)]
    for path in files:
        unreadable: list[str] = []
        recorded_uri, points = read_spool(path, unreadable)
        target_uri = tracking_uri or recorded_uri
        sender = sender_for(target_uri)
        refused: dict[str, list[Point]] = {}
        reasons: dict[str, dict[str, None]] = {}  # run_id -> the server's distinct answers, in order
        while chunk := list(islice(points, sender.max_points)):
            for run_id, run_points in groupby(chunk, key=lambda point: point[0]):
                batch = list(run_points)
                try:
                    sender.send(run_id, batch)
                except TransientSendError as error:
                    raise ServerUnreachableError(target_uri, path.parent, str(error)) from error
                except RejectedBatchError as error:
                    refused.setdefault(run_id, []).extend(batch)
                    reasons.setdefault(run_id, {})[str(error)] = None
                else:
                    report.sent_points += len(batch)
        for run_id, run_points in refused.items():
            report.rejected.append(_set_aside_points(path, target_uri, run_id, run_points, "; ".join(reasons[run_id])))
        if unreadable:
            report.rejected.append(_set_aside_lines(path, unreadable))
        path.unlink()
    return report


def _set_aside_lines(source: Path, lines: list[str]) -> RejectedItem:
    """Keep the lines of `source` that are not whole points (a torn tail) in `rejected/`, as they were."""
    path = source.parent / REJECTED_FOLDER / f"{source.stem}-unreadable.txt"
    reason = f"{len(lines)} line(s) of {source.name} are not whole points (cut by a crash or a full disk)"
    _write_durably(path, "\n".join(lines) + "\n")
    return RejectedItem(path, reason)


def _set_aside_points(source: Path, tracking_uri: str, run_id: str, points: list[Point], reason: str) -> RejectedItem:
    """Keep the refused `points` of run `run_id` from spool file `source` in `rejected/`, with the reason."""
    path = source.parent / REJECTED_FOLDER / f"{source.stem}-{run_id}.jsonl"
    header = {"tracking_uri": tracking_uri, "spool_file": source.name, "run_id": run_id, "reason": reason}
    _write_durably(path, "\n".join([json.dumps(header), *map(_point_line, points)]) + "\n")
    return RejectedItem(path, reason)


def spool_run_end(folder: Path, tracking_uri: str, run_id: str, status: str, end_time: int) -> Path:
    """Keep the end of run `run_id` (durably: written, fsynced, renamed into place); returns the file."""
    path = folder / f"{_RUN_END_PREFIX}{run_id}.json"
    record = {"tracking_uri": tracking_uri, "run_id": run_id, "status": status, "end_time": end_time}
    _write_durably(path, json.dumps(record))
    return path


def replay_run_ends(settings_or_path: ClientSettings | Path | str, tracking_uri: str | None = None) -> ReplayReport:
    """End the spooled runs on the server (status and end time as recorded).

    Takes what replay_spool takes; run it after replay_spool so every point is in before the end.
    A run end the server refuses for good moves to `rejected/` with the reason; the others are
    still sent. Raises ServerUnreachableError, keeping the file, when the server does not answer.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlstack.tracking.mlflow.transport import TRANSIENT_HTTP_STATUS, server_answers

    report = ReplayReport()
    files = [path for path in _spool_files(settings_or_path, f"{_RUN_END_PREFIX}*.json") if _is_run_end(path)]
    for path in files:
        record = json.loads(path.read_text(encoding="utf-8"))
        target_uri = tracking_uri or record["tracking_uri"]
        if not server_answers(target_uri):  # checked first: the client would retry for minutes
            raise ServerUnreachableError(target_uri, path.parent, "no answer on /health for 10 s")
        try:
            MlflowClient(target_uri).set_terminated(record["run_id"], record["status"], end_time=record["end_time"])
        except MlflowException as error:
            # the client reports "no answer at all" (connection refused, timeout) as INTERNAL_ERROR: 500
            if error.get_http_status_code() in TRANSIENT_HTTP_STATUS:
                raise ServerUnreachableError(target_uri, path.parent, str(error)) from error
            set_aside = path.parent / REJECTED_FOLDER / path.name
            _write_durably(set_aside, json.dumps({**record, "tracking_uri": target_uri, "reason": str(error)}))
            report.rejected.append(RejectedItem(set_aside, str(error)))
        else:
            report.ended_runs += 1
        path.unlink()
    return report
