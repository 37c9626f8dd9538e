"""infra/mlflow/compose.ha.yaml, the `ha` topology's override of compose.yaml: the pair as compose merges
it against mlstack.stacks.mlflow.MLFLOW_HA_STACK, each engine's configuration against the native
runtime's, and the proxies' configurations and health checks run here (HAProxy 2.6 and Patroni's
validator from the native runtime's tools)."""

from __future__ import annotations

import json
import re
import shutil
import socketserver
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from mlstack.health import http_ok
from mlstack.runtime.native.haproxy import CHECK, Backend, haproxy_config
from mlstack.runtime.native.postgres_cluster import cluster_members, patroni_config
from mlstack.runtime.native.seaweedfs import MAX_VOLUMES, VOLUME_SIZE_LIMIT_MB
from mlstack.runtime.native.server import MLFLOW_PROXY_RULES
from mlstack.runtime.native.tools import find_haproxy, find_patroni
from mlstack.settings import Settings
from mlstack.stacks.mlflow import MLFLOW_HA_STACK
from tests.compose.conftest import load_compose, run_compose
from tests.compose.test_stack_definitions import check_composed
from tests.conftest import free_port

FOLDER = Path(__file__).resolve().parents[2] / "infra" / "mlflow"
PAIR = (FOLDER / "compose.yaml", FOLDER / "compose.ha.yaml")
#: The proxies: their HAProxy config, port, members' port, check port and URI, mode, `extra` lines.
PROXIES = {
    "postgres": ("haproxy-postgres", 5432, 5432, 8008, "/primary", True, ""),
    "seaweedfs": ("haproxy-seaweedfs", 8333, 8333, 8333, "/healthz", True, "  balance first\n"),
    "mlflow": ("haproxy-mlflow", 5000, 5000, 5000, "/health", False, MLFLOW_PROXY_RULES),
}
#: What a proxy's configuration adds to the native shape in a container: Docker's DNS for the members' names.
DOCKER_DNS = " resolvers docker init-addr libc,none"
DOCKER_RESOLVERS = "resolvers docker\n  nameserver dns 127.0.0.11:53\n"


def render(compose_cli, env_file: Path, *options: str) -> dict:
    result = run_compose(compose_cli, PAIR, env_file, "--profile", "*", "config", *options, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def rendered(compose_cli, generated_env) -> dict:
    return render(compose_cli, generated_env)


def test_the_merged_pair_is_the_ha_definition_field_by_field(compose_cli, generated_env):
    services = render(compose_cli, generated_env, "--no-interpolate")["services"]
    assert list(services) == sorted(service.name for service in MLFLOW_HA_STACK.services)
    for service in MLFLOW_HA_STACK.services:
        check_composed(services[service.name], service, MLFLOW_HA_STACK)


def test_only_the_proxies_publish_and_on_loopback(rendered):
    published = {name: s["ports"] for name, s in rendered["services"].items() if s.get("ports")}
    assert {name: [port["published"] for port in ports] for name, ports in published.items()} == {
        "postgres": ["5432"],
        "seaweedfs": ["8333"],
        "mlflow": ["5000"],
        "tls-proxy": ["5443"],
        # monitoring's UIs (MLSTACK_MONITORING_BIND_ADDRESS); its exporters and the replicas' metrics publish none
        "prometheus": ["9090"],
        "alertmanager": ["9093"],
        "grafana": ["3000"],
    }
    assert {port["host_ip"] for ports in published.values() for port in ports} == {"127.0.0.1"}


def test_proxies_inherit_nothing_of_the_service_they_replace(rendered):
    """No secret, data, build or entrypoint of compose.yaml's postgres, seaweedfs and mlflow reaches HAProxy."""
    for name in PROXIES:
        proxy = rendered["services"][name]
        assert not {"environment", "volumes", "build"} & proxy.keys(), name
        assert proxy["entrypoint"] is None and proxy["command"] is None, name
        assert [config["source"] for config in proxy["configs"]] == [PROXIES[name][0]]


def test_the_server_replicas_are_compose_yamls_server(compose_cli, generated_env):
    single = run_compose(compose_cli, PAIR[0], generated_env, "config", "--format", "json")
    server = json.loads(single.stdout)["services"]["mlflow"]
    services = render(compose_cli, generated_env)["services"]
    for name in ("mlflow-1", "mlflow-2"):
        assert services[name] == {key: value for key, value in server.items() if key != "ports"}, name


def test_the_override_keeps_compose_yamls_health_timings():
    assert load_compose(PAIR[1])["x-healthcheck"] == load_compose(PAIR[0])["x-healthcheck"]


def test_the_replication_password_is_required_and_checked(compose_cli, generated_env, rendered):
    assert "POSTGRES_REPLICATION_PASSWORD" in rendered["services"]["preflight"]["environment"]
    lines = generated_env.read_text().splitlines()
    generated_env.write_text("\n".join(line for line in lines if not line.startswith("POSTGRES_REPLICATION_PASSWORD=")))
    result = run_compose(compose_cli, PAIR, generated_env, "config", "--quiet")
    assert result.returncode != 0 and "POSTGRES_REPLICATION_PASSWORD is not set" in result.stderr


def test_seaweedfs_members_take_the_native_runtimes_volume_limits_and_replicate(rendered):
    services = rendered["services"]
    masters = [f"seaweedfs-master-{n}:9333" for n in (1, 2, 3)]
    for name, service in services.items():
        command = service.get("command") or []
        if name.startswith("seaweedfs-master-"):
            assert f"-volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}" in command and "-defaultReplication=001" in command
            assert f"-peers={','.join(masters)}" in command and f"-ip={name}" in command
        elif name.startswith("seaweedfs-volume-"):
            assert f"-max={MAX_VOLUMES}" in command and f"-mserver={','.join(masters)}" in command
        elif name.startswith("seaweedfs-filer-"):
            assert f"-master={','.join(masters)}" in command and "-s3" in command
            [mounted] = service["configs"]
            assert mounted["source"] == "seaweedfs-identities"
            assert f"-s3.config={mounted['target']}" in command


# --- HAProxy -----------------------------------------------------------------------------------------


def native_shape(name: str) -> str:
    """haproxy_config's rendering of the proxy (the native runtime's extra lines; no admin socket: status
    asks compose), each member at its service name, plus Docker's DNS."""
    config, port, member_port, check_port, uri, tcp, extra = PROXIES[name]
    members = MLFLOW_HA_STACK[name].waits_for
    backends = tuple(Backend(member, member_port, check_port, address=member) for member in members)
    native = haproxy_config(name, "0.0.0.0", port, backends, uri, tcp=tcp, extra=extra)
    default = f"default-server {CHECK} on-marked-down shutdown-sessions"
    return native.replace(default, default + DOCKER_DNS) + DOCKER_RESOLVERS


@pytest.mark.parametrize("name", PROXIES)
def test_each_proxy_config_is_the_native_shape_with_dockers_dns(rendered, name):
    assert rendered["configs"][PROXIES[name][0]]["content"] == native_shape(name)


def haproxy_binary() -> Path:
    haproxy = find_haproxy()
    if haproxy is None:
        pytest.skip("HAProxy 2.6 is not installed (`apt-get install haproxy`)")
    return haproxy


def on_this_machine(content: str, ports: dict[str, tuple[int, int]], bind_port: int) -> str:
    """A proxy's config with each member at 127.0.0.1 on its (port, check port) in `ports` and its bind
    on `bind_port`, without Docker's DNS."""
    content = content.replace(DOCKER_DNS, "").replace(DOCKER_RESOLVERS, "")
    content = re.sub(r"bind 0\.0\.0\.0:\d+", f"bind 127.0.0.1:{bind_port}", content)
    return re.sub(
        r"server (\S+) \S+ check port \d+",
        lambda m: f"server {m[1]} 127.0.0.1:{ports[m[1]][0]} check port {ports[m[1]][1]}",
        content,
    )


@pytest.mark.parametrize("name", PROXIES)
def test_haproxy_accepts_each_proxy_config(rendered, tmp_path, name):
    config = tmp_path / "haproxy.cfg"
    config.write_text(rendered["configs"][PROXIES[name][0]]["content"])
    result = subprocess.run([str(haproxy_binary()), "-c", "-f", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Patroni -----------------------------------------------------------------------------------------


def patroni_files(rendered: dict, member: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The member's configuration file as compose mounts it, and the PATRONI_* variables compose gives it."""
    path = tmp_path / "patroni.yml"
    path.write_text(rendered["configs"]["patroni"]["content"])
    service = rendered["services"][member]
    assert [config["source"] for config in service["configs"]] == ["patroni"]
    return path, {key: str(value) for key, value in service["environment"].items()}


def test_patroni_runs_the_native_runtimes_settings(rendered, generated_env, tmp_path):
    """What Patroni reads (the file, the PATRONI_* variables laid over it) against patroni_config."""
    settings = Settings.load(generated_env.parent)
    path, environment = patroni_files(rendered, "postgres-2", tmp_path)
    composed = yaml.safe_load(path.read_text())
    native = patroni_config(settings, cluster_members(settings)[1], tmp_path, Path("/usr/lib/postgresql/15/bin"))
    assert composed["scope"] == native["scope"] and composed["bootstrap"] == native["bootstrap"]
    assert composed["postgresql"]["parameters"] == native["postgresql"]["parameters"]
    logins = native["postgresql"]["authentication"]
    assert environment["PATRONI_NAME"] == native["name"]
    assert environment["PATRONI_SUPERUSER_USERNAME"] == logins["superuser"]["username"]
    assert environment["PATRONI_SUPERUSER_PASSWORD"] == logins["superuser"]["password"]
    assert composed["postgresql"]["authentication"]["replication"]["username"] == logins["replication"]["username"]
    assert environment["PATRONI_REPLICATION_PASSWORD"] == logins["replication"]["password"]
    # the same rules, from the stack's network instead of loopback
    assert composed["postgresql"]["pg_hba"] == [
        rule.replace("127.0.0.1/32", "all") for rule in native["postgresql"]["pg_hba"]
    ]
    assert environment["PATRONI_RESTAPI_CONNECT_ADDRESS"] == "postgres-2:8008"
    assert environment["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == "postgres-2:5432"


@pytest.fixture
def etcd(tmp_path):
    """One etcd 3.4 member on a free client port (Patroni's validator reaches its hosts)."""
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("etcd is not installed (`apt-get install etcd-server`)")
    client, peer = free_port(), free_port()
    command = [binary, "--data-dir", str(tmp_path / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{client}"]
    command += [
        "--advertise-client-urls",
        f"http://127.0.0.1:{client}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert eventually(lambda: http_ok(f"http://127.0.0.1:{client}/health"), 30), "etcd did not start"
        yield client
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_patroni_validates_the_configuration(rendered, generated_env, tmp_path, etcd):
    patroni = find_patroni(Settings.load(generated_env.parent))
    if patroni is None:
        pytest.skip("Patroni is not installed (`mlstack install-tools --ha`)")
    path, environment = patroni_files(rendered, "postgres-1", tmp_path)
    # etcd started here; the listen ports on free ones of this machine (the validator probes them, and
    # 8008 is a user's ClearML API on this machine's defaults)
    text = re.sub(r"etcd-\d:2379", f"127.0.0.1:{etcd}", path.read_text())
    for listen in ("0.0.0.0:8008", "0.0.0.0:5432"):
        text = text.replace(listen, f"127.0.0.1:{free_port()}")
    path.write_text(text)
    result = subprocess.run(
        [str(patroni), "--validate-config", "--ignore-listen-port", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **environment},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation" not in result.stdout + result.stderr, result.stdout + result.stderr


# --- the proxies' health checks, run against stand-ins on this machine -------------------------------


class Health(BaseHTTPRequestHandler):
    """A member's HTTP health endpoint: 200 on every path while `up`, else 503."""

    up = True

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.server.up else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def http_member() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    server.up = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class PostgresStandIn(socketserver.BaseRequestHandler):
    """Answers PostgreSQL's SSLRequest (and only it) with N, as a server without TLS does."""

    def handle(self):
        if self.request.recv(8) == (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"):
            self.request.sendall(b"N")


def run_proxy(rendered, name: str, ports: dict[str, tuple[int, int]], tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """HAProxy with the proxy's compose config, on this machine (`on_this_machine`); and its port."""
    port = free_port()
    config = tmp_path / f"{name}.cfg"
    config.write_text(on_this_machine(rendered["configs"][PROXIES[name][0]]["content"], ports, port))
    process = subprocess.Popen([str(haproxy_binary()), "-db", "-f", str(config)], stderr=subprocess.PIPE)
    return process, port


def healthcheck(service: dict, port: int, container_port: int) -> int:
    """The service's compose healthcheck (CMD form), its container port mapped to `port`."""
    kind, *command = service["healthcheck"]["test"]
    assert kind == "CMD"
    command = [part.replace("$$", "$").replace(f"/{container_port} ", f"/{port} ") for part in command]
    command = [str(port) if part == str(container_port) else part for part in command]
    return subprocess.run(command, capture_output=True, timeout=10).returncode


def eventually(predicate, seconds: float = 10) -> bool:
    """`predicate` holds within `seconds` (checked every 0.2 s)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.parametrize("name", ["mlflow", "seaweedfs"])
def test_http_proxy_is_healthy_while_a_member_is(rendered, tmp_path, name):
    members = [http_member() for _ in MLFLOW_HA_STACK[name].waits_for]
    ports = {m: (s.server_address[1],) * 2 for m, s in zip(MLFLOW_HA_STACK[name].waits_for, members, strict=True)}
    proxy, port = run_proxy(rendered, name, ports, tmp_path)
    service, container_port = rendered["services"][name], PROXIES[name][1]
    try:
        assert eventually(lambda: healthcheck(service, port, container_port) == 0), "never healthy"
        members[0].up = False
        assert eventually(lambda: healthcheck(service, port, container_port) == 0), "one member down is still healthy"
        for member in members:
            member.up = False
        assert eventually(lambda: healthcheck(service, port, container_port) != 0), "healthy with no member up"
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        for member in members:
            member.shutdown()


def test_postgres_proxy_is_healthy_once_the_leader_answers(rendered, tmp_path):
    """Members: a PostgreSQL stand-in each, behind a Patroni stand-in answering /primary (200 on the leader)."""
    members = MLFLOW_HA_STACK["postgres"].waits_for
    databases = [socketserver.ThreadingTCPServer(("127.0.0.1", 0), PostgresStandIn) for _ in members]
    patronis = [http_member() for _ in members]
    for server in databases:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for replica in patronis[1:]:
        replica.up = False  # only the leader answers /primary
    ports = {
        member: (database.server_address[1], patroni.server_address[1])
        for member, database, patroni in zip(members, databases, patronis, strict=True)
    }
    proxy, port = run_proxy(rendered, "postgres", ports, tmp_path)
    service = rendered["services"]["postgres"]
    try:
        assert eventually(lambda: healthcheck(service, port, 5432) == 0), "never healthy with a leader"
        patronis[0].up = False  # no leader (a failover under way)
        assert eventually(lambda: healthcheck(service, port, 5432) != 0), "healthy with no leader"
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        for server in (*databases, *patronis):
            server.shutdown()


def test_weed_knows_every_flag_of_each_seaweedfs_member(rendered):
    """Each member's command parsed by the image's `weed` version (the native runtime's): `-h` last, so
    a flag it does not define fails first. Starting the members here is not done (8 processes)."""
    from mlstack.runtime.native.tools import find_weed

    weed = find_weed(Settings.load(FOLDER.parents[1]))
    if weed is None:
        pytest.skip("SeaweedFS's weed is not installed (`mlstack install-tools`)")
    for name, service in rendered["services"].items():
        if name.startswith("seaweedfs-") and service["entrypoint"] == ["/usr/bin/weed"]:
            result = subprocess.run([str(weed), *service["command"], "-h"], capture_output=True, text=True)
            assert "not defined" not in result.stderr and "Default Usage" in result.stderr, (name, result.stderr[-500:])
