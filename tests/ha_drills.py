"""What every failover drill of the ha topology shares (tests/integration/test_ha_*.py): a scratch ha
stack, and the workload a fault hits, 4 training scripts logging 50,000 points each while a plain
mlflow client uploads artifacts and another asks the server every 0.2 s. Each script logs half its
points, then waits for `Workload.hit` to inject the fault and logs the rest through it (on any machine,
however fast, the fault meets open runs). `Workload.finish` waits for it all and checks that every
point and artifact landed once and every run ended FINISHED."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests
from mlflow import MlflowClient
from rich.console import Console

from mlstack.envfile import update_env
from mlstack.runtime.native.postgres_cluster import cluster_state
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.settings import Settings
from tests.conftest import make_project, run_mlstack, user_environment, wait_for
from tests.stack import NativeStack, discard

TRACKERS, POINTS, ARTIFACTS = 4, 50_000, 40
#: The file `Workload.hit` makes once the fault is in: the scripts, waiting halfway, log the rest.
FAULT_IN = "fault-in"


@contextlib.contextmanager
def ha_stack(prefix: str, env: dict[str, str] | None = None) -> Iterator[NativeStack]:
    """A scratch project with MLSTACK_TOPOLOGY=ha (and `env`), brought up as a user does (`mlstack up`), and
    removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    settings = make_project(root / "project")
    update_env(settings.env_file, {"MLSTACK_TOPOLOGY": "ha", **(env or {})})
    runtime = NativeRuntime(Settings.load(settings.project_dir), Console(stderr=True))
    try:
        up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
        assert up.returncode == 0, up.stdout + up.stderr
        yield NativeStack(Settings.load(settings.project_dir), Console(stderr=True))
    finally:
        discard(runtime)
        shutil.rmtree(root, ignore_errors=True)


def roles(settings: Settings) -> dict[str, str]:
    return {member["name"]: member["role"] for member in cluster_state(settings) or []}


def leader(settings: Settings) -> str | None:
    return next((name for name, role in roles(settings).items() if role == "leader"), None)


def login(stack: NativeStack, monkeypatch) -> tuple[str, str]:
    """The scripts' account of .env, for this process's mlflow clients."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", stack.client_auth[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.client_auth[1])
    return stack.client_auth


@dataclass
class Availability:
    """A plain client asking the server every 0.2 s (no retries): when it first failed, when it
    last failed, and when it answered again."""

    url: str
    auth: tuple[str, str]
    failures: list[float] = field(default_factory=list)
    recovered: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def answered(self) -> bool:
        """One request, no retries: whether it was answered (a subclass asks something else)."""
        try:
            return requests.get(
                f"{self.url}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                auth=self.auth,
                timeout=5,
            ).ok
        except requests.RequestException:
            return False

    def run(self) -> None:
        while not self.stop.is_set():
            ok = self.answered()
            now = time.monotonic()
            if not ok:
                self.failures.append(now)
            elif self.failures and self.recovered is None:
                self.recovered = now
            self.stop.wait(0.2)

    @property
    def unavailable_seconds(self) -> float:
        return (self.failures[-1] - self.failures[0]) if self.failures else 0.0


def start_tracker(settings: Settings, experiment: str, number: int, fault_in: Path) -> subprocess.Popen:
    """A training script, as a user runs it in the project folder (.env gives the server and login):
    it prints its run id, logs half its points, prints "halfway" and waits for `fault_in` to exist
    before it logs the rest."""
    code = f"""
        import os, time
        from mlstack.tracking import ExperimentTracker, setup_mlflow
        setup_mlflow({experiment!r})
        with ExperimentTracker(run_name="drill-{number}") as tracker:
            print(tracker.run_id, flush=True)
            for step in range({POINTS}):
                if step == {POINTS // 2}:
                    print("halfway", flush=True)
                    while not os.path.exists({str(fault_in)!r}):
                        time.sleep(0.05)
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


@dataclass
class Workload:
    """The load a drill's fault hits (module docstring); `start` it, fault, then `finish`."""

    stack: NativeStack
    experiment: str
    folder: Path
    sent: list[str] = field(default_factory=list)
    upload_failures: list[str] = field(default_factory=list)

    def start(self, monkeypatch) -> Workload:
        settings = self.stack.settings
        auth = login(self.stack, monkeypatch)
        fault_in = self.folder / FAULT_IN
        self.trackers = [start_tracker(settings, self.experiment, number, fault_in) for number in range(TRACKERS)]
        self.run_ids = [tracker.stdout.readline().strip() for tracker in self.trackers]
        halfway = [tracker.stdout.readline().strip() for tracker in self.trackers]
        assert all(self.run_ids) and halfway == ["halfway"] * TRACKERS, [
            tracker.stderr.read() for tracker in self.trackers
        ]
        self.client = MlflowClient(settings.mlflow_url)
        experiment_id = self.client.get_experiment_by_name(self.experiment).experiment_id
        self.uploads_run = self.client.create_run(experiment_id).info.run_id
        self.uploader = threading.Thread(target=self._upload)
        self.probe = Availability(settings.mlflow_url, auth)
        self.prober = threading.Thread(target=self.probe.run)
        self.uploader.start()
        self.prober.start()
        wait_for("the first uploads", lambda: len(self.sent) >= 2)
        return self

    def hit(self, fault: Callable[[], object]) -> None:
        """Inject `fault` (a SIGKILL, a cut) while the scripts wait halfway, then let them log the rest."""
        fault()
        self.fault_at = time.monotonic()
        (self.folder / FAULT_IN).touch()

    def _upload(self) -> None:
        """A plain mlflow client's uploads, one after another (MLflow's own retries ride out an outage)."""
        for number in range(ARTIFACTS):
            path = self.folder / f"artifact-{number}.txt"
            path.write_text(f"artifact {number}\n" * 100)
            try:
                self.client.log_artifact(self.uploads_run, str(path))
            except Exception as error:  # noqa: BLE001 - counted and reported: the drill fails on any
                self.upload_failures.append(f"{path.name}: {error}")
                continue
            self.sent.append(path.name)

    def finish(self) -> str:
        """Wait for the scripts and the uploads; check every point and artifact landed once and every
        run FINISHED; what the drill prints (sent, landed, unavailability, recovery)."""
        for tracker in self.trackers:
            _, err = tracker.communicate(timeout=600)
            assert tracker.returncode == 0, err[-3000:]
        self.uploader.join(timeout=600)
        self.probe.stop.set()
        self.prober.join()
        self.client.set_terminated(self.uploads_run)
        assert not self.upload_failures, self.upload_failures
        with self.stack.pg_connect() as connection:
            landed = connection.execute(
                "SELECT run_uuid, count(*), count(DISTINCT step) FROM metrics WHERE key = 'loss' "
                "AND run_uuid = ANY(%s) GROUP BY run_uuid",
                (self.run_ids,),
            ).fetchall()
            statuses = connection.execute(
                "SELECT status FROM runs WHERE run_uuid = ANY(%s)", (self.run_ids,)
            ).fetchall()
        assert sorted(landed) == sorted((run_id, POINTS, POINTS) for run_id in self.run_ids)
        assert statuses == [("FINISHED",)] * TRACKERS
        stored = {Path(info.path).name for info in self.client.list_artifacts(self.uploads_run)}
        assert stored == set(self.sent) and len(self.sent) == ARTIFACTS
        for name in self.sent:
            fetched = Path(self.client.download_artifacts(self.uploads_run, name, str(self.folder / "back")))
            assert fetched.read_text() == f"artifact {name.split('-')[1].split('.')[0]}\n" * 100
        recovered = (self.probe.recovered or self.fault_at) - self.fault_at
        return (
            f"points sent {TRACKERS * POINTS}, landed {sum(count for _, count, _ in landed)}; artifacts sent "
            f"{ARTIFACTS}, landed {len(stored)}; a client saw {self.probe.unavailable_seconds:.1f} s of failures "
            f"({len(self.probe.failures)} failed requests); recovered {recovered:.1f} s after the fault"
        )
