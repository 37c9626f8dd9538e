"""Prometheus' and Alertmanager's configurations for each runtime and topology: the targets come from
the stack's definition (every ha member scraped on its own), and promtool / amtool accept the files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mlstack.monitoring.prometheus import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    alertmanager_config,
    scrape_jobs,
    write_monitoring_config,
)
from mlstack.runtime.native.seaweedfs_cluster import cluster_nodes
from mlstack.settings import Settings
from tests.conftest import REQUIRED_RUNTIME

JOBS = {"prometheus", "alertmanager", "mlflow", "postgres", "seaweedfs", "mlstack"}


def settings(tmp_path: Path, **values) -> Settings:
    return Settings(MLSTACK_PROJECT_DIR=tmp_path, _env_file=None, **values)


def targets(settings: Settings, runtime: str) -> dict[str, tuple[str, ...]]:
    return {job.name: job.targets for job in scrape_jobs(settings, runtime)}


def test_single_native_targets_are_the_ports_in_env_on_loopback(tmp_path):
    s = settings(tmp_path, PROMETHEUS_PORT=19090, MLFLOW_METRICS_PORT=19189, SEAWEEDFS_METRICS_PORT=19336)
    found = targets(s, "native")
    assert set(found) == JOBS
    assert found["prometheus"] == ("127.0.0.1:19090",)
    assert found["mlflow"] == ("127.0.0.1:19189",)
    assert found["seaweedfs"] == ("127.0.0.1:19336",)


def test_ha_scrapes_every_replica_and_every_seaweedfs_member(tmp_path):
    s = settings(tmp_path, MLSTACK_TOPOLOGY="ha")
    native, docker = targets(s, "native"), targets(s, "docker")
    assert len(native["mlflow"]) == len(set(native["mlflow"])) == 2
    assert native["seaweedfs"] == tuple(f"127.0.0.1:{node.metrics}" for node in cluster_nodes(s).nodes)
    assert docker["mlflow"] == ("mlflow-1:9189", "mlflow-2:9189")
    assert len(docker["seaweedfs"]) == 8 and all(t.startswith("seaweedfs-") for t in docker["seaweedfs"])
    assert docker["postgres"] == ("postgres-exporter:9187",)  # through HAProxy: the leader


def test_your_own_s3_drops_seaweedfs_natively_only(tmp_path):
    s = settings(tmp_path, MLSTACK_S3_ENDPOINT="https://s3.example.com")
    assert "seaweedfs" not in targets(s, "native")
    assert targets(s, "docker")["seaweedfs"] == ("seaweedfs:9336",)  # compose runs it, holding nothing


def test_without_a_webhook_alerts_stay_in_alertmanager(tmp_path):
    config = json.loads(alertmanager_config(settings(tmp_path)))
    assert config["receivers"] == [{"name": "none"}] and config["route"]["receiver"] == "none"
    hooked = json.loads(alertmanager_config(settings(tmp_path, MLSTACK_ALERT_WEBHOOK_URL="https://hooks.example/x")))
    assert hooked["receivers"][0]["webhook_configs"] == [{"url": "https://hooks.example/x", "send_resolved": True}]


def test_a_bad_scrape_interval_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="(?i)mlstack_scrape_interval"):
        settings(tmp_path, MLSTACK_SCRAPE_INTERVAL="often")


def test_written_once_private_and_rewritten_only_on_change(tmp_path):
    s, folder = settings(tmp_path), tmp_path / "monitoring"
    assert write_monitoring_config(s, folder, "native")
    assert {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir()} == dict.fromkeys(
        (PROMETHEUS_CONFIG, ALERTMANAGER_CONFIG, "alerts.yml"), 0o600
    )
    assert not write_monitoring_config(s, folder, "native")
    assert write_monitoring_config(settings(tmp_path, MLSTACK_SCRAPE_INTERVAL="5s"), folder, "native")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if REQUIRED_RUNTIME == "native":
            pytest.fail(f"MLSTACK_REQUIRE_RUNTIME=native but {name} is not installed (Debian's prometheus packages)")
        pytest.skip(f"{name} is not installed")
    return found


@pytest.mark.parametrize("topology", ["single", "ha"])
@pytest.mark.parametrize("runtime", ["native", "docker"])
def test_promtool_and_amtool_accept_the_written_files(tmp_path, topology, runtime):
    folder = tmp_path / "monitoring"
    write_monitoring_config(
        settings(tmp_path, MLSTACK_TOPOLOGY=topology, MLSTACK_ALERT_WEBHOOK_URL="http://h:1/"), folder, runtime
    )
    for command in (
        [tool("promtool"), "check", "config", str(folder / PROMETHEUS_CONFIG)],
        [tool("amtool"), "check-config", str(folder / ALERTMANAGER_CONFIG)],
    ):
        checked = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
