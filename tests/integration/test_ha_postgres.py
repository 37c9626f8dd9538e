"""The ha topology's PostgreSQL (docs/scale-out.md) on a scratch native stack: `mlstack up` with
MLSTACK_TOPOLOGY=ha, then failover drills with real processes. While 4 training scripts log 50,000
points each and a client uploads artifacts, the Patroni leader is SIGKILLed (its PostgreSQL with it):
a replica takes over, every point and artifact lands once, every run ends FINISHED, and the old
leader rejoins as a replica on `mlstack up`. An etcd member is SIGKILLed: the cluster keeps its
leader and takes writes. Each drill prints what it sent, what landed, how long a client saw the
server fail and when it recovered (benchmarks/README.md records them)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from rich.console import Console

from mlstack.envfile import update_env
from mlstack.runtime.native.postgres_cluster import SCOPE, cluster_members, cluster_state
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.settings import Settings
from tests.conftest import make_project, run_mlstack, user_environment
from tests.stack import NativeStack

pytestmark = pytest.mark.integration

TRACKERS, POINTS, ARTIFACTS = 4, 50_000, 40
LEADER_KEY = f"/service/{SCOPE}/leader"


@pytest.fixture(scope="module")
def stack():
    root = Path(tempfile.mkdtemp(prefix="mlstack-ha-"))
    settings = make_project(root / "project")
    update_env(settings.env_file, {"MLSTACK_TOPOLOGY": "ha"})
    runtime = NativeRuntime(Settings.load(settings.project_dir), Console(stderr=True))
    try:
        up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
        assert up.returncode == 0, up.stdout + up.stderr
        yield NativeStack(Settings.load(settings.project_dir), Console(stderr=True))
    finally:
        runtime.down()
        shutil.rmtree(runtime.postgres.home, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def roles(settings: Settings) -> dict[str, str]:
    return {member["name"]: member["role"] for member in cluster_state(settings) or []}


def leader(settings: Settings) -> str | None:
    return next((name for name, role in roles(settings).items() if role == "leader"), None)


def wait_for(what: str, condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer := condition():
            return answer
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


@dataclass
class Availability:
    """A plain client asking the server every 0.2 s (no retries): when it first failed, when it
    last failed, and when it answered again."""

    url: str
    auth: tuple[str, str]
    failures: list[float] = field(default_factory=list)
    recovered: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                ok = requests.get(
                    f"{self.url}/api/2.0/mlflow/experiments/search",
                    params={"max_results": 1},
                    auth=self.auth,
                    timeout=5,
                ).ok
            except requests.RequestException:
                ok = False
            now = time.monotonic()
            if not ok:
                self.failures.append(now)
            elif self.failures and self.recovered is None:
                self.recovered = now
            self.stop.wait(0.2)

    @property
    def unavailable_seconds(self) -> float:
        return (self.failures[-1] - self.failures[0]) if self.failures else 0.0


def start_tracker(settings: Settings, experiment: str, number: int) -> subprocess.Popen:
    """A training script, as a user runs it in the project folder (.env gives the server and login)."""
    code = f"""
        from mlstack.tracking import ExperimentTracker, setup_mlflow
        setup_mlflow({experiment!r})
        with ExperimentTracker(run_name="drill-{number}") as tracker:
            print(tracker.run_id, flush=True)
            for step in range({POINTS}):
                tracker.log_metric("loss", 1.0 / (step + 1), step=step)
    """
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=settings.project_dir,
        env=user_environment(settings.project_dir / ".home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def upload_artifacts(client: MlflowClient, run_id: str, folder: Path, sent: list[str]) -> None:
    """A plain mlflow client's uploads, one after another (MLflow's own retries ride out an outage)."""
    for number in range(ARTIFACTS):
        path = folder / f"artifact-{number}.txt"
        path.write_text(f"artifact {number}\n" * 100)
        client.log_artifact(run_id, str(path))
        sent.append(path.name)


def login(stack: NativeStack, monkeypatch) -> tuple[str, str]:
    """The scripts' account of .env, for this process's mlflow clients."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", stack.client_auth[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.client_auth[1])
    return stack.client_auth


def test_sigkill_of_the_postgres_leader_loses_nothing_and_the_old_leader_rejoins(stack, tmp_path, capsys, monkeypatch):
    settings = stack.settings
    auth = login(stack, monkeypatch)
    killed = leader(settings)
    assert killed is not None, roles(settings)
    experiment = "ha-drill-leader"
    trackers = [start_tracker(settings, experiment, number) for number in range(TRACKERS)]
    run_ids = [tracker.stdout.readline().strip() for tracker in trackers]
    assert all(run_ids), [tracker.stderr.read() for tracker in trackers]

    client = MlflowClient(settings.mlflow_url)
    uploads_run = client.create_run(client.get_experiment_by_name(experiment).experiment_id).info.run_id
    sent: list[str] = []
    uploader = threading.Thread(target=upload_artifacts, args=(client, uploads_run, tmp_path, sent))
    probe = Availability(settings.mlflow_url, auth)
    prober = threading.Thread(target=probe.run)
    uploader.start()
    prober.start()
    wait_for("the first uploads", lambda: len(sent) >= 2)
    assert all(tracker.poll() is None for tracker in trackers), "the kill must hit while every script logs"
    killed_at = time.monotonic()
    stack.runtime.kill(killed)

    for tracker in trackers:
        out, err = tracker.communicate(timeout=600)
        assert tracker.returncode == 0, err[-3000:]
    uploader.join(timeout=600)
    probe.stop.set()
    prober.join()
    client.set_terminated(uploads_run)

    new_leader = leader(settings)
    assert new_leader not in (None, killed), roles(settings)
    with stack.pg_connect() as connection:
        landed = connection.execute(
            "SELECT run_uuid, count(*), count(DISTINCT step) FROM metrics WHERE key = 'loss' AND run_uuid = ANY(%s) "
            "GROUP BY run_uuid",
            (run_ids,),
        ).fetchall()
        statuses = connection.execute("SELECT status FROM runs WHERE run_uuid = ANY(%s)", (run_ids,)).fetchall()
    assert sorted(landed) == sorted((run_id, POINTS, POINTS) for run_id in run_ids)
    assert statuses == [("FINISHED",)] * TRACKERS
    stored = {Path(info.path).name for info in client.list_artifacts(uploads_run)}
    assert stored == set(sent) and len(sent) == ARTIFACTS
    fetched = Path(client.download_artifacts(uploads_run, sent[-1], str(tmp_path / "back")))
    assert fetched.read_text() == f"artifact {ARTIFACTS - 1}\n" * 100

    up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    assert up.returncode == 0, up.stdout + up.stderr
    rejoined = wait_for(
        f"{killed} streaming from the new leader",
        lambda: next(
            (m for m in cluster_state(settings) or [] if m["name"] == killed and m.get("state") == "streaming"), None
        ),
    )
    assert rejoined["role"] in ("replica", "sync_standby") and leader(settings) == new_leader
    with capsys.disabled():
        print(
            f"\n[drill: PostgreSQL leader SIGKILL] {killed} -> {new_leader}; points sent {TRACKERS * POINTS}, "
            f"landed {sum(count for _, count, _ in landed)}; artifacts sent {len(sent)}, landed {len(stored)}; "
            f"a client saw {probe.unavailable_seconds:.1f} s of failures; recovered "
            f"{(probe.recovered or killed_at) - killed_at:.1f} s after the kill"
        )


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


def test_sigkill_of_an_etcd_member_keeps_the_leader_and_its_writes(stack, capsys, monkeypatch):
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
    with capsys.disabled():
        print(
            f"\n[drill: etcd member SIGKILL] {killed}; leader {before} kept through two renewals; a client saw "
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
