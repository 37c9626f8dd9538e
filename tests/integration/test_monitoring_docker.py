"""Monitoring under Docker as a user turns it on (docker tier; it needs an engine, and none runs where
this project's CI does): a clone with MLSTACK_MONITORING=true, `mlstack up --runtime docker`; Prometheus
scrapes every target in the compose network, Grafana (compose only) has loaded both provisioned
dashboards with every panel and reaches Prometheus through its provisioned datasource."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mlstack.envfile import update_env
from mlstack.monitoring.dashboards import DASHBOARDS
from mlstack.runtime.docker import engine_answers
from mlstack.settings import Settings
from tests.conftest import REPO, run_mlstack, scratch_stack_env, wait_for
from tests.integration.test_monitoring_stack import targets_all_up

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not engine_answers(), reason="no Docker engine answers; this test runs the compose stack"),
]
STACK = ("--stack", "mlflow", "--runtime", "docker")


@pytest.fixture(scope="module")
def monitored_clone() -> Iterator[Settings]:
    clone = Path(tempfile.mkdtemp(prefix="mlstack-docker-monitoring-")) / "mlstack"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    assert run_mlstack(clone, "init").returncode == 0
    update_env(clone / ".env", {**scratch_stack_env(), "MLSTACK_MONITORING": "true", "MLSTACK_SCRAPE_INTERVAL": "2s"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPOSE_PROJECT_NAME", f"mlstack-docker-monitoring-{clone.parent.name.lower()}")
        try:
            started = run_mlstack(clone, "up", *STACK, timeout=1800)
            assert started.returncode == 0, started.stdout + started.stderr
            yield Settings.load(clone)
        finally:
            command = ["docker", "compose", "-f", "infra/mlflow/compose.yaml", "--env-file", ".env"]
            subprocess.run([*command, "--profile", "*", "down", "--volumes", "--remove-orphans"], cwd=clone)


def test_prometheus_scrapes_every_target_inside_the_compose_network(monitored_clone):
    targets = wait_for("every compose target up", lambda: targets_all_up(monitored_clone), timeout=180)
    assert {target["labels"]["job"] for target in targets} == {
        "prometheus",
        "alertmanager",
        "mlflow",
        "postgres",
        "seaweedfs",
        "mlstack",
    }


def test_grafana_loads_both_dashboards_with_every_panel_over_its_prometheus(monitored_clone):
    grafana = f"http://127.0.0.1:{monitored_clone.grafana_port}"
    login = ("admin", monitored_clone.grafana_admin_password.get_secret_value())
    assert requests.get(f"{grafana}/api/search", timeout=10).status_code == 401  # no anonymous access
    health = requests.get(f"{grafana}/api/datasources/uid/prometheus/health", auth=login, timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "OK", health.text
    for path in sorted(Path(str(DASHBOARDS)).glob("*.json")):
        shipped = json.loads(path.read_text())
        loaded = wait_for(
            f"Grafana to provision {path.name}",
            lambda uid=shipped["uid"]: (
                answer.json()
                if (answer := requests.get(f"{grafana}/api/dashboards/uid/{uid}", auth=login, timeout=10)).ok
                else None
            ),
        )
        assert loaded["meta"]["folderTitle"] == "mlstack" and loaded["meta"]["provisioned"]
        assert [p["title"] for p in loaded["dashboard"]["panels"]] == [p["title"] for p in shipped["panels"]]
