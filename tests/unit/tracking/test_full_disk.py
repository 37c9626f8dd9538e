"""A full disk while the server is down: no point leaves memory before it is on the server or on
disk, the caller hears how many are held where, nothing waits forever, the spool has no torn line,
and replay reads past one left by a crash.

The disk is a real 256 KB tmpfs where this machine lets us mount one (root, as in CI); elsewhere a
spool whose writes raise ENOSPC stands in for it, and the test's id says which ran."""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
import threading
from pathlib import Path

import pytest

from mlstack.tracking.mlflow.buffer import MetricPipeline
from mlstack.tracking.mlflow.errors import SpoolWriteError
from mlstack.tracking.mlflow.spool import MetricSpool, read_spool, replay_spool
from mlstack.tracking.mlflow.transport import TransientSendError


class FullDiskSpool(MetricSpool):
    """Writes until `room` bytes are used, then fails as a full disk does (after a partial write)."""

    room = 256 * 1024

    def append(self, points):
        lines = list(points)
        used = self.path.stat().st_size if self.path.exists() else 0
        if used + 60 * len(lines) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().append(lines)


@pytest.fixture
def small_disk(tmp_path) -> tuple[Path, type[MetricSpool]]:
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        yield folder, FullDiskSpool  # no mount here: ENOSPC injected
        return
    try:
        yield folder, MetricSpool
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


class Server:
    """Down until `up` is set; then stores what it is sent."""

    max_points = 500

    def __init__(self):
        self.up = threading.Event()
        self.points: list[tuple] = []
        self._lock = threading.Lock()

    def send(self, run_id, points):
        if not self.up.is_set():
            raise TransientSendError("connection refused")
        with self._lock:
            self.points.extend(points)


def spooled_points(spool: MetricSpool) -> list[tuple]:
    if not spool.path.exists() or spool.path.stat().st_size == 0:
        return []
    for line in spool.path.read_text().splitlines():
        json.loads(line)  # no torn line: every line is whole JSON
    return list(read_spool(spool.path)[1])


def test_nothing_is_lost_when_the_spool_disk_fills_during_an_outage(small_disk):
    folder, spool_type = small_disk
    server = Server()
    spool = spool_type(folder, "http://example.invalid")
    pipeline = MetricPipeline(
        lambda: server, spool, flush_interval=0.01, flushers=2, outage_budget=0.05, max_backoff=0.05
    )
    logged, errors = [], []
    for index in range(20_000):
        point = ("run", "loss", float(index), 1_000 + index, index)
        try:
            pipeline.put(*point)
        except SpoolWriteError as error:
            errors.append(error)
        except Exception as error:  # the spool's own report while the disk still had room
            errors.append(error)
        logged.append(point)
    with pytest.raises(SpoolWriteError) as raised:
        pipeline.flush(timeout=60)
    held_errors = [error for error in [*errors, raised.value] if isinstance(error, SpoolWriteError)]
    assert held_errors, "a full disk is reported to the caller"
    message = str(held_errors[-1])
    assert "held in this process's memory" in message and str(spool.path) in message
    assert held_errors[-1].held > 0 and 0 < held_errors[-1].points < len(logged)

    server.up.set()  # the server is back: what memory held goes there
    pipeline.close()
    on_disk = spooled_points(spool)
    assert len(on_disk) == spool.points
    assert sorted(on_disk + server.points) == sorted(logged), "every point is on disk or on the server, once"


def test_close_does_not_wait_forever_for_a_batch_that_can_go_nowhere(small_disk):
    folder, spool_type = small_disk
    server = Server()
    spool = spool_type(folder, "http://example.invalid")
    pipeline = MetricPipeline(
        lambda: server, spool, flush_interval=0.01, flushers=1, outage_budget=0.05, max_backoff=0.05
    )
    filler = "x" * 200
    for index in range(5_000):
        with contextlib.suppress(SpoolWriteError):  # reported; the point is kept
            pipeline.put("run", f"loss-{filler}", float(index), index, index)
    closer = threading.Thread(target=lambda: pytest.raises(SpoolWriteError, pipeline.close))
    closer.start()
    closer.join(timeout=120)
    assert not closer.is_alive(), "close() hung"


def test_replay_reads_past_a_torn_tail_and_sets_it_aside(tmp_path, monkeypatch):
    spool_file = tmp_path / "metrics-20260101T000000-1.jsonl"
    whole = {"run_id": "r", "key": "loss", "value": 0.5, "timestamp": 1, "step": 0}
    spool_file.write_text(
        json.dumps({"tracking_uri": "http://example.invalid"}) + "\n" + json.dumps(whole) + '\n{"run_id": "r", "ke'
    )
    sent = []

    class Sender:
        max_points = 1000

        def send(self, run_id, points):
            sent.extend(points)

    monkeypatch.setattr("mlstack.tracking.mlflow.transport.sender_for", lambda uri: Sender())
    report = replay_spool(spool_file)
    assert report.sent_points == 1 and sent == [("r", "loss", 0.5, 1, 0)]
    (aside,) = report.rejected
    assert "not whole points" in aside.reason and aside.path.read_text() == '{"run_id": "r", "ke\n'
    assert not spool_file.exists()
