"""The native runtime: the MLflow stack's services (mlstack.stacks.mlflow) as local processes.

Same versions and settings as the compose stack; state (data, logs, pid files) lives under the
state folder, private to its owner (0700). Started processes run in their own sessions, so they
outlive the `mlstack` command.

PostgreSQL's data lives in the state folder, or as root in a folder the `postgres` user can reach
(postgres: where and why).

MLSTACK_TOPOLOGY=ha runs PostgreSQL as a Patroni cluster (postgres_cluster): the etcd members, the
Patroni members, each with its data in a folder of its own beside the single server's, and HAProxy
as the `postgres` service.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.console import Console

from mlstack.bootstrap import STORAGE_STEPS, StepResult, run_steps
from mlstack.bootstrap.database import DATABASE_STEPS
from mlstack.envfile import write_private
from mlstack.errors import CommandError, ConfigError, RuntimeUnavailableError, ServiceStartError
from mlstack.health import http_ok, postgres_ok, s3_answers, wait_until
from mlstack.maintenance.minio_move import move_from_minio, move_pending, native_minio_data, write_record
from mlstack.monitoring.prometheus import write_monitoring_config
from mlstack.runtime.base import ServiceStatus
from mlstack.runtime.migrate import SCHEMA_OUTDATED
from mlstack.runtime.native import seaweedfs_cluster
from mlstack.runtime.native.haproxy import admin, member_states
from mlstack.runtime.native.monitors import Monitor, monitor_command, monitors
from mlstack.runtime.native.postgres import initdb, postgres_command, postgres_layout, prepare_home
from mlstack.runtime.native.postgres_cluster import (
    Member,
    cluster_members,
    cluster_state,
    describe,
    etcd_command,
    patroni_config,
    postgres_proxy_config,
)
from mlstack.runtime.native.process import ManagedProcess, base_env
from mlstack.runtime.native.seaweedfs import (
    CONFIG_FOLDER,
    SECURITY,
    identities_current,
    seaweedfs_command,
    write_config,
    write_identities,
    write_security,
)
from mlstack.runtime.native.server import (
    Replica,
    mlflow_metrics_address,
    mlflow_proxy_config,
    mlflow_replicas,
    mlflow_server_command,
    mlflow_server_env,
    require_store_plugin,
    tls_front_env,
    tls_front_url,
)
from mlstack.runtime.native.tools import NativeTools, find_minio, find_tools
from mlstack.secrets import check_secrets
from mlstack.settings import PACKAGED_CONF, Settings
from mlstack.stacks.mlflow import MLFLOW_HA_STACK, mlflow_stack
from mlstack.tls import ensure_certificate

#: Every optional part of the stack (what down stops, whatever the settings say now).
MLFLOW_PROFILES = ("tls", "minio-move", "monitoring")
#: PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
STOP_SIGNALS = {"postgres": signal.SIGINT}
#: The TLS front's configuration, shared with the compose stack's tls-proxy service.
CADDYFILE = Path(str(PACKAGED_CONF / "caddy" / "Caddyfile"))
#: `mlflow db upgrade` with the store URI from the environment (mlstack/runtime/migrate.py).
MIGRATE_SCRIPT = Path(__file__).resolve().parents[1] / "migrate.py"


@dataclass
class NativeRuntime:
    settings: Settings
    console: Console
    start_timeout: float = 120.0
    name: str = "native"
    stack: str = "mlflow"

    def __post_init__(self) -> None:
        root = self.settings.state_path
        self.data_dir = root / "native"
        self.run_dir, self.log_dir = root / "run", root / "logs"
        self.postgres = postgres_layout(self.settings)
        self.definition = mlflow_stack(self.settings.topology)
        self.members = cluster_members(self.settings)
        self.seaweedfs = seaweedfs_cluster.cluster_nodes(self.settings)
        self.replicas = mlflow_replicas(self.settings) if self.settings.topology == "ha" else ()
        self.mlflow_admin = self.proxy_socket("mlflow")
        self.monitoring_config = root / "monitoring"
        self._monitoring_changed = False
        # every service of either topology: down stops whatever runs, whatever the settings say now
        self.processes = {
            service.name: ManagedProcess(
                service.name, self.run_dir, self.log_dir, stop_signal=STOP_SIGNALS.get(service.name, signal.SIGTERM)
            )
            for service in MLFLOW_HA_STACK.long_running(MLFLOW_PROFILES)
        }

    def profiles(self) -> tuple[str, ...]:
        """The optional parts on now: the TLS front with MLFLOW_TLS=true; the move of MinIO's data
        while a stack made before SeaweedFS has not finished it; monitoring with MLSTACK_MONITORING=true
        (Grafana's `dashboards` profile is compose's only)."""
        return (
            *(("tls",) if self.settings.mlflow_tls else ()),
            *(("minio-move",) if move_pending(self.settings) else ()),
            *(("monitoring",) if self.settings.mlstack_monitoring else ()),
        )

    # --- the runtime interface ------------------------------------------------------------

    def up(self) -> bool:
        """Start every service of the stack's definition in its order, one-shot steps included."""
        self._check_topology()
        tools = find_tools(self.settings)
        if all(service.healthy for service in self.status()):
            self.console.print("mlflow stack (native) is already running and healthy: nothing to do")
            return False
        start_postgres = self._start_postgres_proxy if self.settings.topology == "ha" else self._start_postgres
        start_seaweedfs = self._start_seaweedfs_proxy if self.settings.topology == "ha" else self._start_seaweedfs
        start = {
            "preflight": self._preflight,
            "postgres": lambda: start_postgres(tools),
            "seaweedfs": lambda: start_seaweedfs(tools),
            "storage-bootstrap": lambda: run_steps(STORAGE_STEPS, self.settings, self._report),
            "minio": self._start_minio,
            "minio-move": self._move_from_minio,
            "database-bootstrap": lambda: run_steps(DATABASE_STEPS, self.settings, self._report),
            "migrate": self.migrate,
            "mlflow": lambda: self._start_mlflow(tools),
            "tls-proxy": lambda: self._start_tls_front(tools),
            "monitoring-config": self._write_monitoring_config,
        }
        for monitor in monitors(self.settings):
            start[monitor.name] = lambda monitor=monitor: self._start_monitor(monitor, tools)
        for replica in self.replicas:
            start[replica.name] = lambda replica=replica: self._start_replica(replica)
        for member in self.members:
            start[member.etcd] = lambda member=member: self._start_etcd(member, tools)
            start[member.patroni] = lambda member=member: self._start_patroni(member, tools)
        for node in self.seaweedfs.nodes:
            start[node.service] = lambda node=node: self._start_seaweedfs_node(node, tools)
        for service in self.definition.start_order(self.profiles()):
            start[service.name]()
        return True

    def _preflight(self) -> None:
        """As the compose stack's preflight step: no placeholder secret; the state folder private."""
        check_secrets(self.settings, "mlflow")
        _private_folder(self.settings.state_path)

    def _check_topology(self) -> None:
        """No topology started over the other one's data, whose runs it would not see."""
        single = (self.postgres.data / "PG_VERSION").exists()
        cluster = [m.patroni for m in self.members if (self._member_home(m) / "data" / "PG_VERSION").exists()]
        if (self.settings.topology == "ha" and single) or (self.settings.topology == "single" and cluster):
            held, where = ("single", self.postgres.data) if single else ("ha", self.postgres.home)
            raise ConfigError(
                f"MLSTACK_TOPOLOGY={self.settings.topology}, but this stack's PostgreSQL data is of the {held} "
                f"topology ({where}). To move it: set MLSTACK_TOPOLOGY={held}, `mlstack backup`, `mlstack down`, "
                f"set MLSTACK_TOPOLOGY={self.settings.topology}, move {where} aside, `mlstack up`, `mlstack restore`"
            )

    def _report(self, result: StepResult) -> None:
        self.console.print(f"  {result.step}: {result.outcome} ({result.detail})")

    def down(self) -> None:
        """Stop every long-running service, the last started first."""
        current = {service.name for service in self.definition.long_running(self.profiles())}
        for service in reversed(MLFLOW_HA_STACK.long_running(MLFLOW_PROFILES)):
            stopped = self.processes[service.name].stop()
            if stopped or service.name in current:
                self.console.print(f"{service.name}: {'stopped' if stopped else 'was not running'}")

    def status(self) -> list[ServiceStatus]:
        s = self.settings
        trust = "" if s.mlflow_tls_cert else f"; clients trust {s.state_path / 'tls' / 'ca.pem'}"
        probes = {  # where it answers, whether it does, where to look
            "postgres": (
                f"postgresql://127.0.0.1:{s.postgres_port}/{s.postgres_db}",
                self._postgres_healthy,
                f"data: {self.postgres.data}",
            ),
            "seaweedfs": (s.s3_url, self._seaweedfs_healthy, f"data: {self.data_dir / 'seaweedfs'}"),
            "minio": (self._minio_url, self._minio_healthy, f"data: {native_minio_data(s)} (moving to SeaweedFS)"),
            "mlflow": (s.mlflow_url, self._mlflow_healthy, f"log: {self.processes['mlflow'].log_file}"),
            "tls-proxy": (
                tls_front_url(s),
                self._tls_front_healthy,
                f"log: {self.processes['tls-proxy'].log_file}{trust}",
            ),
        }
        for monitor in monitors(s):
            where = "metrics: /metrics" if monitor.ready == "/metrics" else f"data: {self.data_dir / monitor.name}"
            probes[monitor.name] = (monitor.url, monitor.healthy, where)
        if s.topology == "ha":
            probes.update(self._cluster_probes(probes["postgres"]))
            probes.update(self._replica_probes(probes["mlflow"]))
            probes.update(self._seaweedfs_probes(probes["seaweedfs"]))
        statuses = []
        for service in self.definition.long_running(self.profiles()):
            url, probe, where = probes[service.name]
            running = self.processes[service.name].is_running()
            if service.name.startswith("seaweedfs") and s.s3_endpoint:  # your own S3 stands in for it
                running, probe = True, self._seaweedfs_healthy
                where = "your S3 (MLSTACK_S3_ENDPOINT); no SeaweedFS started"
            healthy = running and probe()
            state = "healthy" if healthy else "running, not answering" if running else "not running"
            statuses.append(ServiceStatus(service.name, running, healthy, url, f"{state}; {where}"))
        return statuses

    def kill(self, service: str) -> None:
        """SIGKILL one service, as a crash would; `up` starts it again."""
        self.processes[service].kill()

    def stop_server(self) -> None:
        """Stop the MLflow server (and the TLS front; on ha, HAProxy and every replica); the stores keep running."""
        for name in ("tls-proxy", "mlflow", *reversed([replica.name for replica in self.replicas])):
            self.processes[name].stop()

    def start_server(self, migrate: bool = True) -> None:
        """Bring the schema up to date (unless `migrate` is false: the database stays as it is), then
        start the MLflow server (on ha, each replica, then HAProxy) and, with MLFLOW_TLS, its TLS front.
        The stores must be running."""
        if migrate:
            self.migrate()
        tools = find_tools(self.settings)
        for replica in self.replicas:
            self._start_replica(replica)
        self._start_mlflow(tools)
        if self.settings.mlflow_tls:
            self._start_tls_front(tools)

    def serving(self) -> bool:
        """The tracking server runs: on ha, HAProxy and every replica."""
        return all(self.processes[name].is_running() for name in ("mlflow", *(r.name for r in self.replicas)))

    def restart_replicas(self) -> None:
        """ha: restart the tracking servers one at a time, no request refused (HAProxy sends to the
        other): each drained in HAProxy until it holds no request, stopped, started, and back in
        HAProxy's rotation before the next."""
        for replica in self.replicas:
            self._set_replica_state(replica, "drain")
            wait_until(
                f"{replica.name} to finish its requests",
                lambda replica=replica: self._replica_state(replica) in (None, "idle"),
                self.start_timeout,
                self.console,
            )
            self.processes[replica.name].stop()
            self._start_replica(replica)
            self._set_replica_state(replica, "ready")
            wait_until(
                f"HAProxy to send to {replica.name} again",
                lambda replica=replica: self._replica_state(replica) == "UP",
                self.start_timeout,
                self.console,
            )

    def migrate(self) -> None:
        """`mlflow db upgrade`, the same one-shot step compose runs before the server starts, with the
        server's own MLflow (MLSTACK_MLFLOW_PYTHON's, when set: mlstack itself need not be installed
        there, so the script runs by path, `-P` keeping its folder off sys.path)."""
        result = self._migrate_script()
        if result.returncode != 0:
            raise ServiceStartError(f"database migration failed:\n{result.stderr[-3000:]}")
        self.console.print("[green]✓[/] backend store schema is current")

    def schema_current(self) -> bool:
        """Whether the backend store's schema is the newest the server's MLflow knows (no migration due)."""
        result = self._migrate_script("--check")
        if result.returncode not in (0, SCHEMA_OUTDATED):
            raise ServiceStartError(f"the schema check failed:\n{result.stderr[-3000:]}")
        return result.returncode == 0

    def _migrate_script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.settings.server_python, "-P", str(MIGRATE_SCRIPT), *args],
            env={**base_env(), **self.settings.backend_store_env()},
            capture_output=True,
            text=True,
        )

    def exec(
        self, service: str, command: list[str], stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None
    ) -> str:
        """Run `command` against `service` as its administrator: here, PostgreSQL's client programs
        (pg_dump, pg_restore) from its installation, as the superuser. Its standard output as text
        unless `stdout` takes it."""
        if service != "postgres":
            raise ConfigError(f"the native runtime runs commands for postgres only, not for {service}")
        s = self.settings
        env = {
            **base_env(),
            "PGHOST": s.postgres_host,
            "PGPORT": str(s.postgres_port),
            "PGUSER": s.postgres_user,
            "PGPASSWORD": s.postgres_password.get_secret_value(),
        }
        program = [str(find_tools(s).postgres_bin / command[0]), *command[1:]]
        result = subprocess.run(program, stdin=stdin, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        if result.returncode != 0:
            said = result.stderr.decode(errors="replace")[-2000:]
            raise CommandError(f"`{' '.join(command[:3])}` for {service} failed: {said}")
        return "" if stdout else result.stdout.decode()

    def server_pids(self) -> list[int]:
        """Every pid of the MLflow server's process group (main process, workers, job runners); on ha,
        of every replica's."""
        names = [replica.name for replica in self.replicas] or ["mlflow"]
        return [pid for name in names for pid in self.processes[name].group()]

    # --- health probes ---------------------------------------------------------------------

    def _cluster_probes(self, postgres: tuple) -> dict:
        """status's lines of the ha topology: each member's role and lag; `postgres` (the single
        server's probe, now HAProxy's) says the leader it sends to."""
        members = {state["name"]: state for state in cluster_state(self.settings) or []}
        leader = next((name for name, state in members.items() if state.get("role") == "leader"), None)
        url, probe, _ = postgres
        probes = {"postgres": (url, probe, f"HAProxy to the leader, {leader or 'none elected'}")}
        for member in self.members:
            state = members.get(member.patroni)
            probes[member.etcd] = (
                member.etcd_url,
                member.etcd_healthy,
                f"data: {self.data_dir / member.etcd}",
            )
            probes[member.patroni] = (
                f"postgresql://127.0.0.1:{member.postgres}",
                member.patroni_healthy,
                f"{describe(state) if state else 'not in the cluster'}; data: {self._member_home(member) / 'data'}",
            )
        return probes

    def _replica_probes(self, mlflow: tuple) -> dict:
        """status's lines of the ha tracking servers: each replica's port and state in HAProxy; `mlflow`
        (HAProxy now) says over how many healthy replicas it spreads requests."""
        states = member_states(self.mlflow_admin, "mlflow")
        up = [name for name, state in states.items() if state.status == "UP"]
        url, probe, where = mlflow
        over = f"HAProxy over {len(up)} healthy replicas ({', '.join(up) or 'none'})"
        probes = {"mlflow": (url, probe, f"{over}; {where}")}
        for replica in self.replicas:
            state = states.get(replica.name)
            probes[replica.name] = (
                replica.url,
                replica.healthy,
                f"port {replica.port}; in HAProxy: {state.status if state else 'unknown'}; "
                f"log: {self.processes[replica.name].log_file}",
            )
        return probes

    def _seaweedfs_probes(self, proxy: tuple) -> dict:
        """status's lines of the ha SeaweedFS: each member's role and data; `seaweedfs` (the single
        server's probe, now HAProxy's) says over which gateways, the master leader and the volume servers up."""
        leader = seaweedfs_cluster.master_leader(self.settings)
        url, probe, _ = proxy
        probes = {"seaweedfs": (url, probe, seaweedfs_cluster.describe_proxy(self.settings, leader))}
        for node in self.seaweedfs.nodes:
            where = f"{seaweedfs_cluster.describe(node, leader)}; data: {self.data_dir / node.service}"
            probes[node.service] = (node.url, node.healthy, where)
        return probes

    def _postgres_healthy(self) -> bool:
        return postgres_ok(self.settings.postgres_dsn("postgres"))

    def _seaweedfs_healthy(self) -> bool:
        return s3_answers(self.settings.s3_url)

    @property
    def _minio_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.minio_api_port}"

    def _minio_healthy(self) -> bool:
        return http_ok(f"{self._minio_url}/minio/health/live")

    def _mlflow_healthy(self) -> bool:
        return http_ok(f"{self.settings.mlflow_url}/health")

    def _tls_front_healthy(self) -> bool:
        """The front answers HTTPS and reaches the server (liveness only: the certificate is not checked)."""
        return http_ok(f"https://127.0.0.1:{self.settings.mlflow_tls_port}/health", verify=False)

    # --- services --------------------------------------------------------------------------

    def _wait(self, name: str, probe) -> None:
        process = self.processes[name]
        wait_until(name, probe, self.start_timeout, self.console, process.is_running, process.tail)

    def _start_postgres(self, tools: NativeTools) -> None:
        process, layout = self.processes["postgres"], self.postgres
        if not process.is_running():
            prepare_home(self.settings, layout, layout.data, self.console.print)
            if not (layout.data / "PG_VERSION").exists():
                initdb(self.settings, layout, tools.postgres_bin)
            command = postgres_command(self.settings, layout, tools.postgres_bin)
            process.start(command, env=base_env(), user=layout.os_user, cwd=layout.home)
        self._wait("postgres", self._postgres_healthy)

    def _member_home(self, member: Member) -> Path:
        return self.postgres.home / member.patroni

    def _start_etcd(self, member: Member, tools: NativeTools) -> None:
        """One etcd member. A member answers only once a quorum has formed, so the last one started
        waits for every member to report a healthy cluster."""
        process = self.processes[member.etcd]
        if not process.is_running():
            data = self.data_dir / member.etcd
            data.mkdir(parents=True, exist_ok=True, mode=0o700)
            process.start(etcd_command(tools.etcd, self.settings, member, data), env=base_env(), cwd=data)
        if member == self.members[-1]:
            for each in self.members:
                self._wait(each.etcd, each.etcd_healthy)

    def _start_patroni(self, member: Member, tools: NativeTools) -> None:
        """One Patroni member (as the user PostgreSQL runs as): the first to start makes the cluster,
        the others copy the leader and follow it; waited for until its PostgreSQL runs."""
        process, layout = self.processes[member.patroni], self.postgres
        if not process.is_running():
            prepare_home(self.settings, layout, None, self.console.print)
            home = self._member_home(member)
            home.mkdir(exist_ok=True, mode=0o700)
            config = home / "patroni.yml"  # JSON, which is YAML
            write_private(config, json.dumps(patroni_config(self.settings, member, home, tools.postgres_bin)))
            if layout.os_user is not None:
                for path in (home, config):
                    shutil.chown(path, layout.os_user, layout.os_user)
            env = {**base_env(), "HOME": str(home)}
            process.start([str(tools.patroni), str(config)], env=env, user=layout.os_user, cwd=home)
        self._wait(member.patroni, member.patroni_healthy)

    def _start_postgres_proxy(self, tools: NativeTools) -> None:
        """HAProxy on POSTGRES_PORT, to the leader; waited for until its checks have marked every other
        member down (HAProxy starts with each member up until its checks fail, and the bootstrap steps
        that follow must not reach a replica)."""
        admin_socket = self.proxy_socket("postgres")

        def leader_only() -> bool:
            statuses = [state.status for state in member_states(admin_socket, "postgres").values()]
            return statuses.count("UP") == 1 and set(statuses) <= {"UP", "DOWN"} and self._postgres_healthy()

        config = postgres_proxy_config(self.settings, admin_socket=admin_socket)
        self._start_proxy("postgres", config, tools, leader_only)

    def proxy_socket(self, name: str) -> Path:
        """The admin socket of the HAProxy serving as `name` (its members' states; drain one)."""
        return self.run_dir / f"{name}-haproxy.sock"

    def _start_proxy(self, name: str, config: str, tools: NativeTools, healthy) -> None:
        """HAProxy as service `name` with `config`; restarted only when its configuration changed."""
        process, path = self.processes[name], self.data_dir / f"{name}-haproxy.cfg"
        if not (process.is_running() and path.is_file() and path.read_text() == config):
            process.stop()
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(path, config)
            process.start([str(tools.haproxy), "-f", str(path), "-db"], env=base_env(), cwd=self.data_dir)
        self._wait(name, healthy)

    def _start_seaweedfs(self, tools: NativeTools) -> None:
        """`weed server` with the identities from .env (restarted when .env's keys changed); nothing
        when MLSTACK_S3_ENDPOINT names another S3."""
        process, s = self.processes["seaweedfs"], self.settings
        if self._user_s3():
            return
        config = self.data_dir / CONFIG_FOLDER
        if process.is_running() and identities_current(s, config):
            self._wait("seaweedfs", self._seaweedfs_healthy)
            return
        process.stop()
        data = self.data_dir / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_config(s, config)
        process.start(seaweedfs_command(s, tools.weed, data, config), env=base_env(), cwd=config)
        self._wait("seaweedfs", self._seaweedfs_healthy)

    def _user_s3(self) -> bool:
        """MLSTACK_S3_ENDPOINT names another S3, which stands in for SeaweedFS (and says so)."""
        if self.settings.s3_endpoint:
            self.console.print(
                f"artifacts: your S3 at {self.settings.s3_endpoint} (MLSTACK_S3_ENDPOINT); no SeaweedFS started"
            )
        return bool(self.settings.s3_endpoint)

    def _start_seaweedfs_node(self, node: seaweedfs_cluster.Node, tools: NativeTools) -> None:
        """One member of the ha SeaweedFS (seaweedfs_cluster), its data in the state folder; none with
        MLSTACK_S3_ENDPOINT. The members share one security configuration, made new only when none of
        them runs; a filer (with its S3 gateway) restarts when .env's identities changed since it started.
        The masters elect a leader together, so the last one started waits for all three."""
        process, s = self.processes[node.service], self.settings
        if s.s3_endpoint:
            return
        config = self.data_dir / CONFIG_FOLDER
        identities = seaweedfs_cluster.gateway_identities(node) if node.role == "filer" else None
        if not process.is_running() or (identities and not identities_current(s, config, identities)):
            process.stop()
            members_running = any(self.processes[each.service].is_running() for each in self.seaweedfs.nodes)
            if not (members_running and (config / SECURITY).is_file()):
                write_security(config)
            if identities:
                write_identities(s, config, identities)
            data = self.data_dir / node.service
            data.mkdir(parents=True, exist_ok=True, mode=0o700)
            command = seaweedfs_cluster.node_command(s, tools.weed, node, data, config)
            process.start(command, env=base_env(), cwd=config)
        if node.role != "master":
            self._wait(node.service, node.healthy)
        elif node == self.seaweedfs.masters[-1]:
            for master in self.seaweedfs.masters:
                self._wait(master.service, master.healthy)

    def _start_seaweedfs_proxy(self, tools: NativeTools) -> None:
        """HAProxy on S3_PORT over the filers' S3 gateways; nothing when MLSTACK_S3_ENDPOINT names another S3."""
        if self._user_s3():
            return
        config = seaweedfs_cluster.seaweedfs_proxy_config(self.settings)
        self._start_proxy("seaweedfs", config, tools, self._seaweedfs_healthy)

    def _start_minio(self) -> None:
        """The MinIO of a stack made before SeaweedFS, on its old data, for the move only."""
        process, s = self.processes["minio"], self.settings
        minio = find_minio(s)
        if minio is None:
            raise RuntimeUnavailableError(
                f"this stack's artifacts are still in MinIO's data at {native_minio_data(s)}, and moving "
                "them to SeaweedFS needs MinIO's server: `mlstack install-tools --minio` builds it (Go >= 1.24)"
            )
        if not process.is_running():
            env = {
                **base_env(),
                "MINIO_ROOT_USER": s.minio_root_user,
                "MINIO_ROOT_PASSWORD": s.minio_root_password.get_secret_value(),
                "MINIO_UPDATE": "off",
            }
            address, console = f"127.0.0.1:{s.minio_api_port}", f"127.0.0.1:{s.minio_console_port}"
            command = [
                str(minio),
                "server",
                str(native_minio_data(s)),
                "--address",
                address,
                "--console-address",
                console,
            ]
            process.start(command, env=env)
        self._wait("minio", self._minio_healthy)

    def _move_from_minio(self) -> None:
        """Every object from MinIO into SeaweedFS, verified; then MinIO stops and its data stays."""
        s, kept = self.settings, native_minio_data(self.settings)
        self.console.print(f"moving this stack's artifacts from MinIO ({kept}) to SeaweedFS")
        report = move_from_minio(s, self._minio_url, self.console.print)
        write_record(s, report, str(kept))
        self.processes["minio"].stop()
        self.console.print(
            f"[green]✓[/] {sum(report.buckets.values())} objects moved and verified ({report.copied} copied, "
            f"{report.already_there} already there); MinIO's data stays at {kept}: remove it with "
            f"`rm -rf {kept}` once you no longer need it"
        )

    def _start_mlflow(self, tools: NativeTools) -> None:
        """The tracking server on MLFLOW_PORT; on ha, HAProxy there, over the replicas (started before it)."""
        s = self.settings
        if s.topology == "ha":
            self._start_proxy("mlflow", mlflow_proxy_config(s, self.mlflow_admin), tools, self._mlflow_healthy)
        else:
            self._start_tracking_server("mlflow", s.bind_address, s.mlflow_port, self._mlflow_healthy)

    def _start_replica(self, replica: Replica) -> None:
        self._start_tracking_server(replica.name, "127.0.0.1", replica.port, replica.healthy, replica)

    def _start_tracking_server(self, name: str, host: str, port: int, healthy, replica: Replica | None = None) -> None:
        process, metrics = self.processes[name], mlflow_metrics_address(self.settings, replica)
        if process.is_running() and self.settings.mlstack_monitoring and not http_ok(f"http://{metrics}/metrics"):
            self.console.print(f"{name}: restarting with its metrics on (MLSTACK_MONITORING=true)")
            process.stop()
        if not process.is_running():
            require_store_plugin(self.settings)
            env = mlflow_server_env(self.settings, replica)
            process.start(mlflow_server_command(self.settings, host, port), env=env)
        self._wait(name, healthy)

    def _replica_state(self, replica: Replica) -> str | None:
        """HAProxy's view of `replica`: its status (UP, DOWN, DRAIN, ...), or `idle` when it is drained
        and holds no request; None when HAProxy does not answer."""
        state = member_states(self.mlflow_admin, "mlflow").get(replica.name)
        if state is None:
            return None
        return "idle" if state.status == "DRAIN" and state.sessions == 0 else state.status

    def _set_replica_state(self, replica: Replica, state: str) -> None:
        admin(self.mlflow_admin, f"set server mlflow/{replica.name} state {state}")

    def _write_monitoring_config(self) -> None:
        """Prometheus' and Alertmanager's configurations and the alert rules, in the state folder."""
        self._monitoring_changed = write_monitoring_config(self.settings, self.monitoring_config, "native")

    def _start_monitor(self, monitor: Monitor, tools: NativeTools) -> None:
        """A monitoring process, working in its folder of the state folder (Prometheus' and Alertmanager's
        data); one that runs reloads its configuration (SIGHUP) when `monitoring-config` changed it."""
        process, data = self.processes[monitor.name], self.data_dir / monitor.name
        pid = process.pid()
        if pid is None:
            data.mkdir(parents=True, exist_ok=True, mode=0o700)
            command, env = monitor_command(monitor, self.settings, tools, self.monitoring_config, data)
            process.start(command, env=env, cwd=data)
        elif self._monitoring_changed and monitor.name in ("alertmanager", "prometheus"):
            os.kill(pid, signal.SIGHUP)
        self._wait(monitor.name, monitor.healthy)

    def _start_tls_front(self, tools: NativeTools) -> None:
        process = self.processes["tls-proxy"]
        if process.is_running():
            process.stop()  # its certificate or settings may have changed: start it afresh
        process.start(
            [str(tools.caddy), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env=tls_front_env(self.settings, ensure_certificate(self.settings)),
        )
        self._wait("tls-proxy", self._tls_front_healthy)


def _private_folder(folder: Path) -> None:
    """Create `folder` (the state folder) readable by its owner only; tighten it if it exists."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
