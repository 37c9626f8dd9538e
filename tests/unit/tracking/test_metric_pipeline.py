"""The metric pipeline: batching, ordering, backpressure, retries and the spool (fake sender)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from mlstack.tracking.mlflow.buffer import MetricPipeline
from mlstack.tracking.mlflow.errors import MetricsSpooledError
from mlstack.tracking.mlflow.spool import MetricSpool, read_spool
from mlstack.tracking.mlflow.transport import RejectedBatchError, TransientSendError


class RecordingSender:
    """Stores what it receives; can fail the first calls, fail forever, or hold until released."""

    max_points = 7

    def __init__(
        self, transient_failures: int = 0, always: type[Exception] | None = None, gate: threading.Event | None = None
    ):
        self.batches: list[tuple[str, list]] = []
        self.calls = 0
        self._failures = transient_failures
        self._always = always
        self._gate = gate
        self._lock = threading.Lock()

    def send(self, run_id, points):
        if self._gate is not None:
            self._gate.wait()
        with self._lock:
            self.calls += 1
            if self._always is not None:
                raise self._always("server says no")
            if self._failures:
                self._failures -= 1
                raise TransientSendError("connection refused")
            self.batches.append((run_id, list(points)))

    @property
    def points(self):
        return [point for _, batch in self.batches for point in batch]


def make_pipeline(tmp_path: Path, sender: RecordingSender, **options) -> MetricPipeline:
    options = {"flush_interval": 0.01, "flushers": 1, "outage_budget": 30.0, "max_backoff": 0.01, **options}
    return MetricPipeline(lambda: sender, MetricSpool(tmp_path / "spool", "http://example.invalid"), **options)


def log_points(pipeline: MetricPipeline, count: int, run_id: str = "run", keys: int = 3) -> list[tuple]:
    points = [(run_id, f"k{index % keys}", float(index), 1_000 + index, index) for index in range(count)]
    for point in points:
        pipeline.put(*point)
    return points


def test_every_point_arrives_in_batches_within_the_request_limit_and_in_logged_order(tmp_path):
    sender = RecordingSender()
    pipeline = make_pipeline(tmp_path, sender)
    logged = log_points(pipeline, 100)
    pipeline.close()
    assert sender.points == logged
    assert all(0 < len(batch) <= RecordingSender.max_points for _, batch in sender.batches)


def test_parallel_flushers_deliver_each_point_once_and_keep_each_keys_order_within_a_flusher(tmp_path):
    sender = RecordingSender()
    pipeline = make_pipeline(tmp_path, sender, flushers=3)
    logged = log_points(pipeline, 500)
    pipeline.flush()
    assert sorted(sender.points) == sorted(logged)
    for _, batch in sender.batches:
        assert batch == sorted(batch, key=lambda point: point[4]), "a batch must keep logged order"
    pipeline.close()


def test_a_batch_never_mixes_runs_in_one_request(tmp_path):
    sender = RecordingSender()
    pipeline = make_pipeline(tmp_path, sender)
    for index in range(20):
        pipeline.put("run-a" if index % 2 else "run-b", "loss", float(index), index, index)
    pipeline.close()
    assert all({point[0] for point in batch} == {run_id} for run_id, batch in sender.batches)
    assert len(sender.points) == 20


def test_flush_waits_until_the_store_has_every_point_logged_before_it(tmp_path):
    sender = RecordingSender()
    pipeline = make_pipeline(tmp_path, sender, flushers=2)
    logged = log_points(pipeline, 60)
    pipeline.flush()
    assert sorted(sender.points) == sorted(logged)
    assert pipeline.pending == 0
    pipeline.close()


def test_a_full_buffer_blocks_the_caller_until_the_flusher_makes_room(tmp_path):
    gate = threading.Event()
    sender = RecordingSender(gate=gate)
    pipeline = make_pipeline(tmp_path, sender, capacity=10)
    producer = threading.Thread(target=log_points, args=(pipeline, 40))
    producer.start()
    producer.join(timeout=0.5)
    assert producer.is_alive(), "the caller must wait while the buffer is full"
    assert pipeline.pending <= 10 + RecordingSender.max_points
    gate.set()
    producer.join()
    pipeline.close()
    assert len(sender.points) == 40


def test_transient_failures_are_retried_until_every_point_is_stored(tmp_path):
    sender = RecordingSender(transient_failures=5)
    pipeline = make_pipeline(tmp_path, sender)
    logged = log_points(pipeline, 30)
    pipeline.close()
    assert sender.points == logged
    assert sender.calls > len(sender.batches)
    assert not (tmp_path / "spool").exists()


def test_an_outage_longer_than_the_budget_spools_every_point_and_fails_loudly(tmp_path):
    sender = RecordingSender(always=TransientSendError)
    pipeline = make_pipeline(tmp_path, sender, outage_budget=0.2)
    logged = log_points(pipeline, 25)
    with pytest.raises(MetricsSpooledError) as raised:
        pipeline.flush()
    assert raised.value.points == 25
    assert str(raised.value.spool_path) in str(raised.value)
    pipeline.put("run", "late", 1.0, 5, 0)
    with pytest.raises(MetricsSpooledError) as raised_again:
        pipeline.flush()
    assert raised_again.value.points == 26
    tracking_uri, points = read_spool(raised.value.spool_path)
    assert tracking_uri == "http://example.invalid"
    assert list(points) == [*logged, ("run", "late", 1.0, 5, 0)]


def test_after_a_reported_outage_points_go_to_the_server_again(tmp_path):
    sender = RecordingSender(always=TransientSendError)
    pipeline = make_pipeline(tmp_path, sender, outage_budget=0.1)
    log_points(pipeline, 3)
    with pytest.raises(MetricsSpooledError):
        pipeline.flush()
    sender._always = None
    pipeline.put("run", "after", 2.0, 9, 1)
    pipeline.close()
    assert sender.points == [("run", "after", 2.0, 9, 1)]


def test_a_batch_the_server_refuses_is_spooled_at_once_not_retried(tmp_path):
    sender = RecordingSender(always=RejectedBatchError)
    pipeline = make_pipeline(tmp_path, sender, outage_budget=60)
    log_points(pipeline, 5)
    with pytest.raises(MetricsSpooledError, match="RejectedBatchError") as raised:
        pipeline.flush()
    assert sender.calls == 1
    lines = [json.loads(line) for line in raised.value.spool_path.read_text().splitlines()]
    assert len(lines) == 6  # header + 5 points
