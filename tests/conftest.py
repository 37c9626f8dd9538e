"""Shared fixtures: a scratch project, and one live MLflow stack per test session.

The stack runs on whichever runtime this machine has: compose through testcontainers where a
Docker engine answers, local processes otherwise. With MLSTACK_REQUIRE_RUNTIME=native (CI) a
missing native binary fails the run instead of skipping it.
"""

from __future__ import annotations

import fcntl
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from mlstack.envfile import read_env, update_env
from mlstack.errors import MissingToolError
from mlstack.runtime.docker import engine_answers
from mlstack.runtime.native.ha_ports import HA_PORT_COUNT
from mlstack.runtime.native.seaweedfs import GRPC_OFFSET
from mlstack.runtime.native.seaweedfs_cluster import cluster_nodes
from mlstack.runtime.native.tools import find_tools
from mlstack.secrets import init_env
from mlstack.settings import SECRET_FIELDS, Settings
from mlstack.workflows import MlflowService
from tests.stack import DockerStack, LiveStack, NativeStack

REPO = Path(__file__).resolve().parents[1]
REQUIRED_RUNTIME = os.environ.get("MLSTACK_REQUIRE_RUNTIME", "")


#: Ports handed out in this test run, by every pytest-xdist worker (`make test` runs two): the kernel
#: may offer a released port again at once, to this process or the other, and no two services may
#: get the same one. A file the workers share (they inherit the run's name from the controller), locked
#: while read and extended, and removed by the controller at the end of the run.
TEST_RUN = os.environ.setdefault("MLSTACK_TEST_RUN", uuid.uuid4().hex)
HANDED_OUT = Path(tempfile.gettempdir()) / f"mlstack-test-ports-{TEST_RUN}"


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        HANDED_OUT.unlink(missing_ok=True)


def claim(ports: range | list[int]) -> bool:
    """Record `ports` as handed out, unless one of them already is."""
    with open(HANDED_OUT, "a+") as registry:
        fcntl.flock(registry, fcntl.LOCK_EX)
        registry.seek(0)
        taken = {int(line) for line in registry.read().split()}
        if not taken.isdisjoint(ports):
            return False
        registry.write("".join(f"{port}\n" for port in ports))
        return True


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def kernel_port() -> int:
    """A port the kernel finds free now (it may offer it again once released: see `claim`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port() -> int:
    while True:
        port = kernel_port()
        if claim([port]):
            return port


#: The first port Linux hands client sockets (ip_local_port_range).
EPHEMERAL_START = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def free_port_with_grpc() -> int:
    """A free port whose SeaweedFS gRPC twin (port + GRPC_OFFSET) is free too."""
    while True:
        port = kernel_port()
        twin = port + GRPC_OFFSET
        if twin < 65536 and bindable(twin) and claim([port, twin]):
            return port


def free_ha_port_base() -> int:
    """A free MLSTACK_HA_PORT_BASE: the topology's HA_PORT_COUNT ports and the ports its members use
    beyond them (each SeaweedFS filer's gRPC port, GRPC_OFFSET above its HTTP port), all free, claimed
    (no other test is handed one) and below Linux's ephemeral range (no client socket takes one meanwhile)."""
    while True:
        base = random.randrange(12000, EPHEMERAL_START - GRPC_OFFSET - HA_PORT_COUNT)
        block = range(base, base + HA_PORT_COUNT)
        cluster = cluster_nodes(Settings.model_construct(ha_port_base=base))
        used = {port for node in cluster.nodes for port in (node.port, node.grpc, node.metrics, node.s3, node.s3_grpc)}
        ports = [*block, *sorted(used - set(block) - {None})]
        if all(bindable(port) for port in ports) and claim(ports):
            return base


#: `make test` runs two pytest-xdist workers, each taking whole modules (a module's stack is made
#: once). The failover drills (tests/ha_drills.py) are one unit, queued first: one worker runs them
#: one after another (never two ha stacks under load at once) while the other takes the rest.
HA_DRILLS = "ha-drills"


def is_ha_drill(path: str) -> bool:
    return path.startswith("tests/integration/test_ha_")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not is_ha_drill(item.nodeid))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        """Whole modules to a worker, the failover drills' modules as one."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return HA_DRILLS if is_ha_drill(module) else module

    return ModuleScheduling(config, log)


@pytest.fixture
def drill_report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a failover drill's outcome (sent, landed, unavailability, recovery) for the run's summary,
    printed whichever worker ran the drill."""
    return lambda outcome: request.node.user_properties.append(("drill", outcome))


def pytest_terminal_summary(terminalreporter) -> None:
    outcomes = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "drill"
    ]
    if outcomes:
        terminalreporter.section("failover drills")
        for outcome in outcomes:
            terminalreporter.write_line(outcome)


def wait_for(what: str, condition: Callable[[], object], timeout: float = 120.0):
    """`condition()`'s first truthy answer, polled; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer := condition():
            return answer
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def scratch_stack_env() -> dict[str, str]:
    """.env values for a scratch stack: free ports, and the repo's built tools (built once, not per test)."""
    return {
        "POSTGRES_PORT": str(free_port()),
        "S3_PORT": str(free_port_with_grpc()),
        "SEAWEEDFS_MASTER_PORT": str(free_port_with_grpc()),
        "SEAWEEDFS_VOLUME_PORT": str(free_port_with_grpc()),
        "SEAWEEDFS_FILER_PORT": str(free_port_with_grpc()),
        "SEAWEEDFS_METRICS_PORT": str(free_port()),
        # a stack made before SeaweedFS (the move's tests): its MinIO
        "MINIO_API_PORT": str(free_port()),
        "MINIO_CONSOLE_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        # the ha topology's members (MLSTACK_TOPOLOGY=ha)
        "MLSTACK_HA_PORT_BASE": str(free_ha_port_base()),
        # monitoring (MLSTACK_MONITORING=true)
        "PROMETHEUS_PORT": str(free_port()),
        "ALERTMANAGER_PORT": str(free_port()),
        "POSTGRES_EXPORTER_PORT": str(free_port()),
        "MLSTACK_EXPORTER_PORT": str(free_port()),
        "MLFLOW_METRICS_PORT": str(free_port()),
        "GRAFANA_PORT": str(free_port()),
        # ClearML's too: no scratch project may reach a ClearML server the user runs on the defaults
        "CLEARML_API_PORT": str(free_port()),
        "CLEARML_WEB_PORT": str(free_port()),
        "CLEARML_FILES_PORT": str(free_port()),
        "MLSTACK_TOOLS_DIR": str(Settings.load(REPO).tools_path),
    }


def user_environment(home: Path) -> dict[str, str]:
    """This process's environment without what tests and the SDKs set in it (MLFLOW_*, CLEARML_* and
    its legacy TRAINS_*, MLSTACK_*), as in a user's shell, with HOME at `home`."""
    dropped = ("MLFLOW_", "CLEARML_", "TRAINS_", "MLSTACK_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(dropped)}
    return {**env, "HOME": str(home), "COLUMNS": "160"}


def run_python(code: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`code` (dedented) in a fresh interpreter, as a user's script: an environment free of test
    variables, HOME at `home`."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=user_environment(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_mlstack(project_dir: Path, *args: str, stdin: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
    """`mlstack ...` in `project_dir` as a user runs it: a process of its own, in that folder, with
    an environment free of test variables (HOME: project_dir/.home)."""
    return subprocess.run(
        [sys.executable, "-m", "mlstack.cli", *args],
        cwd=project_dir,
        env=user_environment(project_dir / ".home"),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_project(root: Path) -> Settings:
    """A scratch checkout: .env.example from the repo, a generated .env, free ports, the repo's tools."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / ".env.example", root / ".env.example")
    init_env(root / ".env", root / ".env.example", [name.upper() for name in SECRET_FIELDS])
    update_env(root / ".env", scratch_stack_env())
    return Settings.load(root)


@pytest.fixture
def project(tmp_path: Path) -> Settings:
    """Settings of a fresh scratch project (no services running)."""
    return make_project(tmp_path / "project")


#: The ports a user's own stacks listen on by default (.env.example); no test may connect to them.
DEFAULT_PORTS = {
    "ClearML API": 8008,
    "ClearML web": 8080,
    "ClearML files": 8081,
    "MLflow": 5000,
    "S3": 8333,
    "MinIO": 9000,
    "Prometheus": 9090,
    "Alertmanager": 9093,
    "postgres-exporter": 9187,
    "mlstack exporter": 9188,
    "MLflow metrics": 9189,
}


@pytest.fixture(scope="session", autouse=True)
def nothing_reaches_the_default_ports():
    """A listener on each free default port records every connection; the session fails at its end if
    any test connected (where a port is taken, a user's stack runs there: it cannot be watched).
    Under the docker tier the ClearML stack's own tests use the defaults, so only native runs watch."""
    if REQUIRED_RUNTIME != "native" and engine_answers():
        yield
        return
    seen: list[str] = []
    listeners = []
    for name, port in DEFAULT_PORTS.items():
        listener = socket.socket()
        try:
            listener.bind(("127.0.0.1", port))
        except OSError:
            listener.close()
            continue
        listener.listen(16)
        listeners.append(listener)
        threading.Thread(target=_record, args=(listener, f"{name} (127.0.0.1:{port})", seen), daemon=True).start()
    yield
    for listener in listeners:
        listener.close()
    assert not seen, f"tests connected to default ports of a user's stack: {sorted(set(seen))}"


def _record(listener: socket.socket, name: str, seen: list[str]) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        seen.append(name)
        connection.close()


#: A user-chosen database password with every character that needs quoting in a URI.
AWKWARD_POSTGRES_PASSWORD = "p@ss/w:rd%41-" + "x" * 16


@pytest.fixture(scope="session")
def mlflow_stack() -> Iterator[LiveStack]:
    """One live MLflow stack for the session, in a private scratch folder (mode 0700, as mkdtemp makes
    it: a checkout under /root is no different), with a database password that needs URI quoting."""
    root = Path(tempfile.mkdtemp(prefix="mlstack-it-"))
    settings = make_project(root / "project")
    update_env(settings.env_file, {"POSTGRES_PASSWORD": AWKWARD_POSTGRES_PASSWORD})
    settings = Settings.load(settings.project_dir)
    console = Console(stderr=True)
    if REQUIRED_RUNTIME != "native" and engine_answers():
        stack: LiveStack = DockerStack(settings, console, REPO)
    else:
        try:
            find_tools(settings)
        except MissingToolError as missing:
            if REQUIRED_RUNTIME == "native":
                pytest.fail(f"MLSTACK_REQUIRE_RUNTIME=native but the native runtime cannot run: {missing}")
            pytest.skip(f"no Docker engine answers and the native runtime is not installed: {missing}")
        stack = NativeStack(settings, console)
    stack.start()
    try:
        # what `mlstack up` does next: the client settings and account in .env. The login stays there,
        # not in this process's environment: each test gets it as a user's process does (see
        # client_environment)
        service = MlflowService(settings, stack.runtime, Console(file=io.StringIO()))
        service.client_account()
        stack.settings = service.settings
        yield stack
    finally:
        stack.discard()
        shutil.rmtree(root, ignore_errors=True)


#: What a plain mlflow client reads from its environment to reach and log in to the server.
CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def client_environment(settings: Settings) -> dict[str, str]:
    """The client variables as a user exports them from the project's .env for a plain mlflow script
    (`set -a; . ./.env; set +a`): the URI and the client account `mlstack up` wrote there. mlstack's
    library and CLI read them from .env themselves; a plain mlflow client gets them only this way."""
    values = read_env(settings.env_file)
    return {name: values[name] for name in CLIENT_VARIABLES}


#: What the ClearML SDK reads from the environment, and the backends `mlstack.tracking.track` uses.
CLEARML_SDK_VARIABLES = (
    "CLEARML_API_HOST",
    "CLEARML_WEB_HOST",
    "CLEARML_FILES_HOST",
    "CLEARML_API_ACCESS_KEY",
    "CLEARML_API_SECRET_KEY",
    "CLEARML_CONFIG_FILE",
    "CLEARML_OFFLINE_MODE",
    "MLSTACK_TRACKERS",
)


@pytest.fixture(scope="module")
def isolated_sdk(tmp_path_factory):
    """For the module: the ClearML SDK's HOME and CLEARML_CACHE_DIR in a tmp folder (yielded), none of
    its variables set (nor MLSTACK_TRACKERS)."""
    root = tmp_path_factory.mktemp("clearml-sdk")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(root / "home"))
        patch.setenv("CLEARML_CACHE_DIR", str(root / "cache"))
        for name in CLEARML_SDK_VARIABLES:
            patch.delenv(name, raising=False)
        yield root
