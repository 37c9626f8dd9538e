"""The ha topology's PostgreSQL (docs/scale-out.md) on a scratch native stack: `mlstack up` with
MLSTACK_TOPOLOGY=ha, then failover drills with real processes. While 4 training scripts log 50,000
points each and a client uploads artifacts, the Patroni leader is SIGKILLed (its PostgreSQL with it):
a replica takes over, every point and artifact lands once, every run ends FINISHED, and the old
leader rejoins as a replica on `mlstack up`. An etcd member is SIGKILLed: the cluster keeps its
leader and takes writes. Each drill prints what it sent, what landed, how long a client saw the
server fail and when it recovered (benchmarks/README.md records them)."""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass

import pytest
import requests
from mlflow import MlflowClient

from mlstack.envfile import update_env
from mlstack.runtime.native.postgres_cluster import SCOPE, cluster_members, cluster_state
from mlstack.settings import Settings
from tests.conftest import run_mlstack
from tests.ha_drills import Availability, Workload, ha_stack, leader, login, roles, wait_for

pytestmark = pytest.mark.integration

LEADER_KEY = f"/service/{SCOPE}/leader"


@pytest.fixture(scope="module")
def stack():
    with ha_stack("mlstack-ha-") as stack:
        yield stack


def test_sigkill_of_the_postgres_leader_loses_nothing_and_the_old_leader_rejoins(
    stack, tmp_path, drill_report, monkeypatch
):
    settings = stack.settings
    killed = leader(settings)
    assert killed is not None, roles(settings)
    workload = Workload(stack, "ha-drill-leader", tmp_path).start(monkeypatch)
    workload.hit(lambda: stack.runtime.kill(killed))
    outcome = workload.finish()
    new_leader = leader(settings)
    assert new_leader not in (None, killed), roles(settings)

    up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    assert up.returncode == 0, up.stdout + up.stderr
    rejoined = wait_for(
        f"{killed} streaming from the new leader",
        lambda: next(
            (m for m in cluster_state(settings) or [] if m["name"] == killed and m.get("state") == "streaming"), None
        ),
    )
    assert rejoined["role"] in ("replica", "sync_standby") and leader(settings) == new_leader
    drill_report(f"[drill: PostgreSQL leader SIGKILL] {killed} -> {new_leader}; {outcome}")


def leader_lease_seconds(settings: Settings) -> int | None:
    """The seconds left on the lease of Patroni's leader key, from an etcd member that answers: the
    leader renews the lease on every loop, which resets them."""
    key = base64.b64encode(LEADER_KEY.encode()).decode()
    for member in cluster_members(settings):
        url = f"http://127.0.0.1:{member.etcd_client}/v3"
        try:
            lease = requests.post(f"{url}/kv/range", json={"key": key}, timeout=2).json()["kvs"][0]["lease"]
            return int(requests.post(f"{url}/lease/timetolive", json={"ID": lease}, timeout=2).json()["TTL"])
        except (requests.RequestException, KeyError, IndexError, ValueError):
            continue
    return None


@dataclass
class Renewals:
    """Counts the leader lease's renewals seen while polled: each time its seconds left go up."""

    settings: Settings
    seen: int = 0
    last: int | None = None

    def count(self) -> int:
        now = leader_lease_seconds(self.settings)
        if now is not None and self.last is not None and now > self.last:
            self.seen += 1
        self.last = now if now is not None else self.last
        return self.seen


def test_sigkill_of_an_etcd_member_keeps_the_leader_and_its_writes(stack, drill_report, monkeypatch):
    settings = stack.settings
    probe = Availability(settings.mlflow_url, login(stack, monkeypatch))
    prober = threading.Thread(target=probe.run)
    prober.start()
    before = leader(settings)
    killed = cluster_members(settings)[0].etcd
    stack.runtime.kill(killed)
    killed_at = time.monotonic()
    renewals = Renewals(settings)
    # two renewals of the leader's lease after the kill: it kept the lead through the remaining quorum
    wait_for("two renewals of the leader's lease", lambda: renewals.count() >= 2)
    assert leader(settings) == before

    client = MlflowClient(settings.mlflow_url)
    experiment = client.create_experiment("ha-drill-etcd")
    run = client.create_run(experiment).info.run_id
    client.log_metric(run, "loss", 0.5, step=0)
    client.set_terminated(run)
    with stack.pg_connect() as connection:
        assert connection.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s", (run,)).fetchone() == (1,)
    probe.stop.set()
    prober.join()

    up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    assert up.returncode == 0, up.stdout + up.stderr
    status = run_mlstack(settings.project_dir, "status", "--stack", "mlflow")
    assert status.returncode == 0, status.stdout + status.stderr
    drill_report(
        f"[drill: etcd member SIGKILL] {killed}; leader {before} kept through two renewals; a client saw "
        f"{probe.unavailable_seconds:.1f} s of failures ({len(probe.failures)} failed requests) in the "
        f"{time.monotonic() - killed_at:.1f} s after the kill; `mlstack up` restarted {killed}"
    )


def test_the_topologies_refuse_each_others_data(stack, tmp_path):
    """A stack of one topology never starts over the other's data (its runs would vanish from view)."""
    settings = stack.settings
    update_env(settings.env_file, {"MLSTACK_TOPOLOGY": "single"})
    try:
        refused = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    finally:
        update_env(settings.env_file, {"MLSTACK_TOPOLOGY": "ha"})
    assert refused.returncode == 1
    said = " ".join((refused.stdout + refused.stderr).split())
    assert "MLSTACK_TOPOLOGY=single, but this stack's PostgreSQL data is of the ha topology" in said, said
    assert leader(settings) is not None  # the cluster runs on, untouched
