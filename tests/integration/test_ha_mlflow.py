"""The ha topology's MLflow tier (docs/scale-out.md) on a scratch native stack: two tracking servers
behind HAProxy, with real processes. Status shows each replica and what HAProxy sends to; a password
or a permission changed through one replica counts on the other at once; while 4 training scripts log
50,000 points each and a client uploads artifacts, a replica is SIGKILLed: no client call fails,
every point and artifact lands once, and `mlstack up` brings the replica back; `mlstack upgrade`
migrates once and restarts the replicas one at a time with no request refused."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
import requests
from mlflow.server import get_app_client

from mlstack.runtime.native.haproxy import member_states
from tests.conftest import run_mlstack
from tests.ha_drills import Availability, Workload, ha_stack, login, wait_for
from tests.stack import NativeStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    with ha_stack("mlstack-ha-mlflow-") as stack:
        yield stack


def haproxy_view(stack: NativeStack) -> dict[str, str]:
    return {name: state.status for name, state in member_states(stack.runtime.mlflow_admin, "mlflow").items()}


def test_status_shows_each_replica_and_haproxy_over_them(stack):
    replicas = stack.runtime.replicas
    assert [replica.name for replica in replicas] == ["mlflow-1", "mlflow-2"]
    assert len({replica.port for replica in replicas} | {stack.settings.mlflow_port}) == 3
    statuses = {status.name: status for status in stack.runtime.status()}
    for replica in replicas:
        line = statuses[replica.name]
        assert line.healthy and f"port {replica.port}" in line.detail and "in HAProxy: UP" in line.detail, line
        assert str(stack.runtime.processes[replica.name].log_file) in line.detail
    assert "HAProxy over 2 healthy replicas (mlflow-1, mlflow-2)" in statuses["mlflow"].detail, statuses["mlflow"]
    status = run_mlstack(stack.settings.project_dir, "status", "--stack", "mlflow")
    assert status.returncode == 0 and "mlflow-1" in status.stdout and "mlflow-2" in status.stdout, status.stdout


def test_a_password_or_permission_changed_through_one_replica_counts_on_the_other_at_once(stack, monkeypatch):
    settings = stack.settings
    first, second = stack.runtime.replicas
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", settings.mlflow_auth_admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", settings.mlflow_auth_admin_password.get_secret_value())
    through_first = get_app_client("basic-auth", tracking_uri=first.url)
    person, old, new = "ha-person", "an-old-password-1", "a-new-password-2"
    through_first.create_user(person, old)
    experiment = requests.post(
        f"{first.url}/api/2.0/mlflow/experiments/create",
        json={"name": "ha-permissions"},
        auth=(settings.mlflow_auth_admin_username, settings.mlflow_auth_admin_password.get_secret_value()),
        timeout=10,
    ).json()["experiment_id"]

    def on_second(password: str) -> int:
        """The person creating a run in the experiment through the other replica: the answer's status."""
        url = f"{second.url}/api/2.0/mlflow/runs/create"
        return requests.post(url, json={"experiment_id": experiment}, auth=(person, password), timeout=10).status_code

    through_first.grant_user_permission(person, "experiment", experiment, "EDIT")
    assert on_second(old) == 200  # the other replica has now checked (and may remember) the old login
    through_first.update_user_password(person, new)
    assert on_second(old) == 401
    assert on_second(new) == 200
    through_first.revoke_user_permission(person, "experiment", experiment)  # back to the default, READ
    assert on_second(new) == 403


def test_sigkill_of_a_replica_fails_no_call_and_loses_nothing(stack, tmp_path, drill_report, monkeypatch):
    workload = Workload(stack, "ha-drill-replica", tmp_path).start(monkeypatch)
    workload.hit(lambda: stack.runtime.kill("mlflow-1"))
    outcome = workload.finish()
    assert not workload.probe.failures, f"a plain client's requests failed: {outcome}"
    assert haproxy_view(stack)["mlflow-1"] == "DOWN"

    up = run_mlstack(stack.settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    assert up.returncode == 0, up.stdout + up.stderr
    wait_for("HAProxy sending to mlflow-1 again", lambda: haproxy_view(stack)["mlflow-1"] == "UP")
    drill_report(f"[drill: MLflow replica SIGKILL] mlflow-1; {outcome}; `mlstack up` restarted it")


@dataclass
class Writer:
    """A plain client with no retries logging one metric point after another through HAProxy: the
    points it was told landed, and the calls that failed."""

    url: str
    auth: tuple[str, str]
    run_id: str
    landed: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            point = {"run_id": self.run_id, "key": "loss", "value": 0.5, "timestamp": 0, "step": self.landed}
            try:
                answer = requests.post(
                    f"{self.url}/api/2.0/mlflow/runs/log-metric", json=point, auth=self.auth, timeout=10
                )
            except requests.RequestException as error:
                self.failures.append(str(error))
                continue
            if answer.ok:
                self.landed += 1
            else:
                self.failures.append(f"{answer.status_code} {answer.text[:200]}")


def test_upgrade_migrates_once_and_restarts_the_replicas_one_at_a_time(stack, drill_report, monkeypatch):
    settings, runtime = stack.settings, stack.runtime
    auth = login(stack, monkeypatch)
    experiment = requests.post(
        f"{settings.mlflow_url}/api/2.0/mlflow/experiments/create", json={"name": "ha-upgrade"}, auth=auth, timeout=10
    ).json()["experiment_id"]
    run_id = requests.post(
        f"{settings.mlflow_url}/api/2.0/mlflow/runs/create", json={"experiment_id": experiment}, auth=auth, timeout=10
    ).json()["run"]["info"]["run_id"]
    probe, writer = Availability(settings.mlflow_url, auth), Writer(settings.mlflow_url, auth, run_id)
    threads = [threading.Thread(target=probe.run), threading.Thread(target=writer.run)]
    for thread in threads:
        thread.start()
    before = {replica.name: runtime.processes[replica.name].pid() for replica in runtime.replicas}
    try:
        upgrade = run_mlstack(settings.project_dir, "upgrade", "--stack", "mlflow", "--runtime", "native")
    finally:
        probe.stop.set()
        writer.stop.set()
        for thread in threads:
            thread.join()
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert upgrade.stdout.count("backend store schema is current") == 1, upgrade.stdout
    after = {replica.name: runtime.processes[replica.name].pid() for replica in runtime.replicas}
    assert all(after[name] not in (None, pid) for name, pid in before.items()), (before, after)
    assert haproxy_view(stack) == {"mlflow-1": "UP", "mlflow-2": "UP"}
    assert not probe.failures and not writer.failures, writer.failures[:5]
    with stack.pg_connect() as connection:
        rows = connection.execute("SELECT count(DISTINCT step) FROM metrics WHERE run_uuid = %s", (run_id,)).fetchone()
    assert writer.landed > 0 and rows == (writer.landed,)
    drill_report(
        f"[drill: rolling restart] `mlstack upgrade` restarted {', '.join(before)} one at a time; "
        f"{writer.landed} metric points logged and {len(probe.failures)} probes failed meanwhile"
    )
