"""The backup archive on its own: written whole or not at all, 0600, and read back only when every
file matches the manifest."""

from __future__ import annotations

import stat
import tarfile
from datetime import timedelta

import pytest

from mlstack.errors import BackupError, ConfigError
from mlstack.maintenance.archive import Manifest, read_archive, write_archive
from mlstack.maintenance.gc import parse_duration


@pytest.fixture
def folder(tmp_path):
    content = tmp_path / "content"
    (content / "postgres").mkdir(parents=True)
    (content / "postgres" / "mlflow.dump").write_bytes(b"dump bytes")
    (content / "objects" / "1" / "run").mkdir(parents=True)
    (content / "objects" / "1" / "run" / "model.pkl").write_bytes(bytes(range(256)))
    return content


def manifest() -> Manifest:
    return Manifest("mlflow", "2026-11-23T00:00:00+00:00", {"mlflow": "3.17.2"}, {"runs": 1})


def test_an_archive_reads_back_with_its_manifest_and_is_private(folder, tmp_path):
    written = write_archive(folder, manifest(), tmp_path / "backup.tar")
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    read = read_archive(written, tmp_path / "unpacked")
    assert read.counts == {"runs": 1} and set(read.files) == {"postgres/mlflow.dump", "objects/1/run/model.pkl"}
    assert (tmp_path / "unpacked" / "objects" / "1" / "run" / "model.pkl").read_bytes() == bytes(range(256))


def test_a_failed_write_leaves_nothing_that_looks_like_an_archive(folder, tmp_path, monkeypatch):
    def broken_add(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tarfile.TarFile, "add", broken_add)
    with pytest.raises(OSError, match="disk full"):
        write_archive(folder, manifest(), tmp_path / "backup.tar")
    assert [path.name for path in tmp_path.iterdir()] == ["content"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "postgres" / "mlflow.dump").write_bytes(b"other bytes"), "does not match its checksum"),
        (lambda root: (root / "postgres" / "mlflow.dump").unlink(), "lacks 1 files"),
        (lambda root: (root / "stray.txt").write_text("x"), "holds files its manifest does not name"),
    ],
)
def test_an_archive_that_differs_from_its_manifest_is_refused(folder, tmp_path, damage, message):
    written = write_archive(folder, manifest(), tmp_path / "backup.tar")
    unpacked = tmp_path / "repacked"
    with tarfile.open(written) as archive:
        archive.extractall(unpacked, filter="data")
    damage(unpacked)
    with tarfile.open(tmp_path / "damaged.tar", "w") as archive:
        for path in sorted(unpacked.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=path.relative_to(unpacked).as_posix())
    with pytest.raises(BackupError, match=message):
        read_archive(tmp_path / "damaged.tar", tmp_path / "check")


def test_something_that_is_not_an_archive_is_refused(tmp_path):
    (tmp_path / "notes.tar").write_text("not a tar")
    with pytest.raises(BackupError, match="is not a readable backup archive .*nothing was changed"):
        read_archive(tmp_path / "notes.tar", tmp_path / "check")


@pytest.mark.parametrize(
    ("text", "expected"), [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90))]
)
def test_gc_durations(text, expected):
    assert parse_duration(text) == expected


def test_a_wrong_gc_duration_names_the_form(tmp_path):
    with pytest.raises(ConfigError, match="'30 days' is not a duration: write a number and a unit, e.g. 30d"):
        parse_duration("30 days")
