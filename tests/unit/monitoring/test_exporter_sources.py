"""The exporter's sources that need no server: backups, spool, the bucket's walk (on a stand-in S3
client), and the names it shares with MLflow and the spool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlstack.maintenance.archive import Manifest, write_archive
from mlstack.monitoring import exporter
from mlstack.monitoring.exporter import BackupSource, BucketSource, MlstackCollector, SpoolSource
from mlstack.settings import Settings
from tests.unit.monitoring.exporter_process import labelled, parse, value


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        MLSTACK_PROJECT_DIR=tmp_path / "project",
        MLSTACK_STATE_DIR=tmp_path / "state",
        MLSTACK_BACKUP_DIR=tmp_path / "backups",
        _env_file=None,
    )


def read(*sources, folders=()) -> dict:
    registry = CollectorRegistry()
    registry.register(MlstackCollector(sources, list(folders)))
    return parse(generate_latest(registry).decode())


def archive(folder: Path, name: str, payload: bytes, written: float) -> Path:
    """A complete archive as `mlstack backup` writes it (write_archive), dated `written`."""
    content = folder.parent / f"content-{name}"
    content.mkdir()
    (content / "data").write_bytes(payload)
    path = write_archive(content, Manifest("mlflow", "now", {}, {}), folder / name)
    os.utime(path, (written, written))
    return path


def test_backups_report_the_newest_complete_archive_of_either_stack(settings):
    folder = settings.backup_path
    folder.mkdir()
    archive(folder, "mlstack-mlflow-20261201T010000000000Z.tar", b"x" * 10, 1_000_000)
    newest = archive(folder, "mlstack-clearml-20261202t010000000000z.tar", b"y" * 5000, 2_000_000)
    # what is not a complete archive: one being written, a backup's scratch folder, anything else
    partial = folder / ".mlstack-mlflow-20261203T010000000000Z.tar.partial"
    partial.write_bytes(b"z" * 100)
    (folder / ".mlstack-backup-abc").mkdir()
    (folder / "notes.txt").write_text("not an archive")
    for path in (partial, folder / "notes.txt"):
        os.utime(path, (3_000_000, 3_000_000))

    samples = read(BackupSource(settings))

    assert value(samples, "mlstack_backup_last_success_timestamp_seconds") == 2_000_000
    assert value(samples, "mlstack_backup_last_size_bytes") == newest.stat().st_size
    assert value(samples, "mlstack_source_up", source="backups") == 1


@pytest.mark.parametrize("made", [False, True], ids=["no folder", "empty folder"])
def test_backups_report_nothing_without_an_archive(settings, made):
    if made:
        settings.backup_path.mkdir()
        (settings.backup_path / ".mlstack-mlflow-20261203T010000000000Z.tar.partial").write_bytes(b"z")

    samples = read(BackupSource(settings))

    assert value(samples, "mlstack_backup_last_success_timestamp_seconds") is None
    assert value(samples, "mlstack_backup_last_size_bytes") is None
    assert value(samples, "mlstack_source_up", source="backups") == 1


def test_spool_counts_the_files_sync_sends_and_those_it_set_aside(settings):
    from mlstack.tracking.mlflow.spool import REJECTED_FOLDER, MetricSpool, spool_folder, spool_run_end

    folder = spool_folder(settings)
    MetricSpool(folder, "http://127.0.0.1:1").append([("run-a", "loss", 0.5, 1, 0)])
    spool_run_end(folder, "http://127.0.0.1:1", "run-a", "FINISHED", 2)
    (folder / "run-end-run-b.partial").write_text("{")  # a run end being written
    (folder / REJECTED_FOLDER).mkdir()
    for name in ("metrics-1-run-c.jsonl", "metrics-1-unreadable.txt", "run-end-run-d.json"):
        (folder / REJECTED_FOLDER / name).write_text("{}\n")

    samples = read(SpoolSource(settings))

    assert value(samples, "mlstack_spool_pending_files") == 2
    assert value(samples, "mlstack_spool_set_aside_files") == 3


def test_spool_is_empty_before_anything_was_spooled(settings):
    samples = read(SpoolSource(settings))

    assert value(samples, "mlstack_spool_pending_files") == 0
    assert value(samples, "mlstack_spool_set_aside_files") == 0
    assert value(samples, "mlstack_source_up", source="spool") == 1


class StandInS3:
    """list_objects_v2 as S3 answers it, `page_size` keys a page in key order; `fail_next` fails the
    next call once."""

    def __init__(self, objects: dict[str, int], page_size: int = 2):
        self.objects, self.page_size = objects, page_size
        self.asked_after: list[str] = []
        self.fail_next = False

    def list_objects_v2(self, Bucket: str, StartAfter: str = "") -> dict:  # noqa: N803 - boto3's names
        self.asked_after.append(StartAfter)
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("the store did not answer")
        keys = sorted(key for key in self.objects if key > StartAfter)
        page = [{"Key": key, "Size": self.objects[key]} for key in keys[: self.page_size]]
        return {"IsTruncated": len(keys) > self.page_size, **({"Contents": page} if page else {})}


def bucket_totals(samples, bucket: str = "mlflow-artifacts") -> tuple[float, float] | None:
    objects = value(samples, "mlstack_bucket_objects", bucket=bucket)
    return None if objects is None else (objects, value(samples, "mlstack_bucket_bytes", bucket=bucket))


def test_a_bucket_walked_within_a_scrape_reports_its_totals_every_scrape(settings):
    s3 = StandInS3({f"1/run/artifacts/{n}": n for n in range(7)})
    source = BucketSource(settings, client=s3)

    assert bucket_totals(read(source)) == (7, sum(range(7)))
    s3.objects["2/run/artifacts/model.pkl"] = 1000
    assert bucket_totals(read(source)) == (8, sum(range(7)) + 1000)


def test_a_large_bucket_is_walked_a_bounded_part_each_scrape_and_reports_its_last_complete_walk(settings):
    s3 = StandInS3({f"key-{n}": 10 for n in range(5)})  # 3 pages
    source = BucketSource(settings, client=s3, seconds_per_scrape=0)  # one page a scrape

    assert [bucket_totals(read(source)) for _ in range(3)] == [None, None, (5, 50)]
    s3.objects["key-9"] = 100
    assert [bucket_totals(read(source)) for _ in range(3)] == [(5, 50), (5, 50), (6, 150)]
    assert s3.asked_after == ["", "key-1", "key-3"] * 2


def test_a_failed_page_fails_the_source_and_the_walk_goes_on_from_it(settings):
    s3 = StandInS3({f"key-{n}": 1 for n in range(5)})
    source = BucketSource(settings, client=s3, seconds_per_scrape=0)
    read(source)

    s3.fail_next = True
    failed = read(source)
    walked = [read(source) for _ in range(2)]

    assert value(failed, "mlstack_source_up", source="s3") == 0
    assert s3.asked_after == ["", "key-1", "key-1", "key-3"]
    assert bucket_totals(walked[-1]) == (5, 5)
    assert value(walked[-1], "mlstack_source_up", source="s3") == 1


def test_filesystems_of_the_folders_and_of_the_parent_a_missing_folder_will_be_made_in(settings, tmp_path):
    made, missing = tmp_path / "state", tmp_path / "not-yet" / "backups"
    made.mkdir()
    expected = os.statvfs(tmp_path)

    samples = read(SpoolSource(settings), folders=[made, missing])

    for folder in (made, missing):
        size = value(samples, "mlstack_filesystem_size_bytes", path=str(folder))
        assert size == expected.f_blocks * expected.f_frsize
        assert 0 <= value(samples, "mlstack_filesystem_avail_bytes", path=str(folder)) <= size
    assert set(labelled(samples, "mlstack_filesystem_size_bytes", "path")) == {str(made), str(missing)}


def test_the_names_the_exporter_repeats_are_those_of_mlflow_and_the_spool():
    from mlflow.entities import LifecycleStage, RunStatus
    from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL

    from mlstack.tracking.mlflow import spool

    assert set(exporter.RUN_STATUSES) == {RunStatus.to_string(status) for status in RunStatus.all_status()}
    assert set(exporter.EXPERIMENT_STAGES) == {LifecycleStage.ACTIVE, LifecycleStage.DELETED}
    assert exporter.DELETED_MODEL_VERSION_STAGE == STAGE_DELETED_INTERNAL
    assert (exporter.SPOOL_FOLDER, exporter.REJECTED_FOLDER) == (spool.SPOOL_FOLDER, spool.REJECTED_FOLDER)
