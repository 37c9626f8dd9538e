"""Spooled points replay into the store they were meant for, and the spool file goes away.

What the store refuses for good is set aside in spool/rejected/ with its answer; a store that does
not answer stops the replay and keeps every file.
"""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlstack.errors import MlstackError
from mlstack.tracking import ExperimentTracker, replay_run_ends, replay_spool
from mlstack.tracking.mlflow import tracker as tracker_module
from mlstack.tracking.mlflow import transport
from mlstack.tracking.mlflow.spool import (
    REJECTED_FOLDER,
    MetricSpool,
    ReplayReport,
    read_spool,
    spool_folder,
    spool_run_end,
)
from mlstack.tracking.mlflow.transport import RejectedBatchError, TransientSendError


class ScriptedSender:
    """Accepts every batch except those of `refused_runs`; stops answering after `answers` batches."""

    max_points = 4

    def __init__(self, refused_runs: tuple[str, ...] = (), answers: int | None = None):
        self.received: list[tuple] = []
        self._refused_runs = refused_runs
        self._answers = answers

    def send(self, run_id, points):
        if self._answers is not None:
            if self._answers == 0:
                raise TransientSendError("ConnectionError: connection refused")
            self._answers -= 1
        if run_id in self._refused_runs:
            raise RejectedBatchError(f"HTTP 400 INVALID_PARAMETER_VALUE: the run {run_id} is deleted")
        self.received += points


@pytest.fixture
def spool_dir(tmp_path):
    return tmp_path / "spool"


def spool_file(folder, name: str, points: list[tuple]) -> MetricSpool:
    spool = MetricSpool(folder, "http://tracking.invalid")
    spool.path = folder / name
    spool.append(points)
    return spool


def points_of(run_id: str, count: int) -> list[tuple]:
    return [(run_id, "loss", float(step), 1_000 + step, step) for step in range(count)]


def test_replay_sends_every_spooled_point_and_removes_the_file(local_store, local_settings):
    with ExperimentTracker(run_name="spooled") as tracker:
        tracker.log_metric("kept", 0.0, step=0)
    spool = MetricSpool(spool_folder(local_settings), local_store)
    spool.append([(tracker.run_id, "loss", float(step), 1_000 + step, step) for step in range(1, 2501)])

    assert replay_spool(local_settings).sent_points == 2500
    history = MlflowClient(local_store).get_metric_history(tracker.run_id, "loss")
    assert sorted(metric.step for metric in history) == list(range(1, 2501))
    assert not spool.path.exists()
    assert replay_spool(local_settings).sent_points == 0


def test_a_refused_run_is_set_aside_with_the_reason_and_later_files_are_still_sent(spool_dir, monkeypatch):
    sender = ScriptedSender(refused_runs=("deleted-run",))
    monkeypatch.setattr(transport, "sender_for", lambda tracking_uri: sender)
    mixed = [point for pair in zip(points_of("deleted-run", 6), points_of("good", 6), strict=True) for point in pair]
    first = spool_file(spool_dir, "metrics-1.jsonl", mixed)
    later = spool_file(spool_dir, "metrics-2.jsonl", points_of("later", 5))

    report = replay_spool(spool_dir)

    assert report.sent_points == 11
    assert sorted(sender.received) == sorted(points_of("good", 6) + points_of("later", 5))
    [rejected] = report.rejected
    assert rejected.path == spool_dir / REJECTED_FOLDER / "metrics-1-deleted-run.jsonl"
    assert rejected.reason == "HTTP 400 INVALID_PARAMETER_VALUE: the run deleted-run is deleted"
    header = json.loads(rejected.path.read_text().splitlines()[0])
    assert header == {
        "tracking_uri": "http://tracking.invalid",
        "spool_file": "metrics-1.jsonl",
        "run_id": "deleted-run",
        "reason": rejected.reason,
    }
    tracking_uri, kept = read_spool(rejected.path)
    assert (tracking_uri, list(kept)) == ("http://tracking.invalid", points_of("deleted-run", 6))
    assert not first.path.exists() and not later.path.exists()


def test_set_aside_points_are_not_replayed_again(spool_dir, monkeypatch):
    sender = ScriptedSender(refused_runs=("deleted-run",))
    monkeypatch.setattr(transport, "sender_for", lambda tracking_uri: sender)
    spool_file(spool_dir, "metrics-1.jsonl", points_of("deleted-run", 3))
    [rejected] = replay_spool(spool_dir).rejected

    again = replay_spool(spool_dir)

    assert (again.sent_points, again.rejected) == (0, [])
    assert rejected.path.exists()


def test_a_server_that_does_not_answer_stops_the_replay_and_keeps_the_files(spool_dir, monkeypatch):
    monkeypatch.setattr(transport, "sender_for", lambda tracking_uri: ScriptedSender(answers=1))
    first = spool_file(spool_dir, "metrics-1.jsonl", points_of("good", 10))
    later = spool_file(spool_dir, "metrics-2.jsonl", points_of("later", 3))

    with pytest.raises(MlstackError, match=r"http://tracking.invalid does not answer.*nothing was lost") as raised:
        replay_spool(spool_dir)

    assert "`make up`" in str(raised.value) and "`mlstack sync` again" in str(raised.value)
    assert first.path.exists() and later.path.exists()
    assert not (spool_dir / REJECTED_FOLDER).exists()


def test_a_run_ended_while_the_server_is_unreachable_is_ended_by_replay(local_store, local_settings, monkeypatch):
    monkeypatch.setattr(tracker_module, "server_answers", lambda tracking_uri: False)
    with pytest.warns(UserWarning, match="mlstack sync"), ExperimentTracker(run_name="ends-offline") as tracker:
        tracker.log_metric("loss", 0.5, step=0)
    monkeypatch.undo()
    record = spool_folder(local_settings) / f"run-end-{tracker.run_id}.json"

    assert mlflow.active_run() is None
    assert MlflowClient(local_store).get_run(tracker.run_id).info.status == "RUNNING"
    assert replay_spool(record).sent_points == 0 and record.exists(), "replay_spool must leave run ends alone"
    assert replay_run_ends(local_settings).ended_runs == 1
    info = MlflowClient(local_store).get_run(tracker.run_id).info
    assert (info.status, info.end_time is not None) == ("FINISHED", True)
    assert not record.exists()
    assert replay_run_ends(local_settings).ended_runs == 0


def test_refused_run_ends_are_set_aside_and_the_other_run_ends_still_replay(local_store, spool_dir):
    client = MlflowClient(local_store)
    experiment_id = client.get_experiment_by_name("unit").experiment_id
    deleted, good = (client.create_run(experiment_id).info.run_id for _ in range(2))
    client.delete_run(deleted)
    missing = "0" * 32  # replayed first: run ends go in file-name order
    for run_id in (missing, deleted, good):
        spool_run_end(spool_dir, local_store, run_id, "FINISHED", 1_700_000_000_000)

    report = replay_run_ends(spool_dir)

    assert report.ended_runs == 1
    assert (client.get_run(good).info.status, client.get_run(good).info.end_time) == ("FINISHED", 1_700_000_000_000)
    reasons = {item.path.name: item.reason for item in report.rejected}
    assert reasons.keys() == {f"run-end-{missing}.json", f"run-end-{deleted}.json"}
    assert reasons[f"run-end-{missing}.json"] == f"Run with id={missing} not found"
    assert "active" in reasons[f"run-end-{deleted}.json"]
    set_aside = spool_dir / REJECTED_FOLDER / f"run-end-{deleted}.json"
    assert json.loads(set_aside.read_text()) == {
        "tracking_uri": local_store,
        "run_id": deleted,
        "status": "FINISHED",
        "end_time": 1_700_000_000_000,
        "reason": reasons[set_aside.name],
    }
    assert list(spool_dir.glob("*.json")) == []
    assert replay_run_ends(spool_dir) == ReplayReport()


@pytest.mark.parametrize("health_answers", [False, True], ids=["no-health-answer", "client-connection-error"])
def test_a_run_end_the_server_does_not_answer_for_is_kept(spool_dir, monkeypatch, health_answers):
    def connection_error(*args, **kwargs):
        raise MlflowException("API request to http://tracking.invalid failed with exception ConnectionError")

    monkeypatch.setattr(transport, "server_answers", lambda tracking_uri: health_answers)
    monkeypatch.setattr(MlflowClient, "set_terminated", connection_error)
    record = spool_run_end(spool_dir, "http://tracking.invalid", "some-run", "FINISHED", 1_700_000_000_000)

    with pytest.raises(MlstackError, match=r"http://tracking.invalid does not answer.*`mlstack sync` again"):
        replay_run_ends(spool_dir)

    assert record.exists()
    assert not (spool_dir / REJECTED_FOLDER).exists()
