"""The docker runtime: the compose stacks under infra/, driven through the compose CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import IO

from rich.console import Console

from mlstack.errors import CommandError, RuntimeUnavailableError, ServiceStartError
from mlstack.maintenance.minio_move import MoveReport, record_path, write_record
from mlstack.runtime.base import ServiceStatus
from mlstack.runtime.native.tools import find_compose
from mlstack.settings import Settings
from mlstack.stacks.mlflow import METRICS_PORTS, SERVER_IMAGE, mlflow_stack
from mlstack.tls import ensure_certificate

#: Compose's global option enabling every profile (compose-go: a "*" profile matches any service).
ALL_PROFILES = ("--profile", "*")
#: How long any compose command but `up` may take (seconds).
COMMAND_TIMEOUT = 300
#: Log lines of each unhealthy service that a failed `up` reports.
LOG_LINES = 20
#: Marks a container that `compose run` created, not the service itself.
RUN_CONTAINER_LABEL = "com.docker.compose.oneoff=True"
#: Where `exec` runs PostgreSQL's client programs for the `postgres` service, logged in as the superuser
#: (the password from the container's own environment, never on a command line), by topology: in the
#: server's container; in ha (where `postgres` is HAProxy) in a Patroni member's, to the leader
#: through HAProxy.
POSTGRES_CLIENT = {
    "single": ("postgres", 'PGHOST=127.0.0.1 PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD" exec "$@"'),
    "ha": (
        "postgres-1",
        'PGHOST=postgres PGUSER="$PATRONI_SUPERUSER_USERNAME" PGPASSWORD="$PATRONI_SUPERUSER_PASSWORD" exec "$@"',
    ),
}


def engine_answers() -> bool:
    """True when a Docker engine answers a ping."""
    try:
        import docker
        from docker.errors import DockerException

        try:
            return bool(docker.from_env(timeout=5).ping())
        except DockerException:
            return False
    except Exception:  # noqa: BLE001 - a broken socket or config means: no engine
        return False


def parse_ps(output: str) -> list[dict]:
    """The entries of `compose ps --format json`: one object per line, or (older compose) one array."""
    text = output.strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def judge_services(config: dict, containers: list[dict]) -> list[ServiceStatus]:
    """Every service the rendered compose config expects, judged by its containers from `ps --all`.

    A service behind a profile is expected only when it has a container (someone started it).
    """
    by_service: dict[str, list[dict]] = {}
    for container in containers:
        if RUN_CONTAINER_LABEL not in (container.get("Labels") or ""):
            by_service.setdefault(container["Service"], []).append(container)
    statuses = []
    for name, service in config["services"].items():
        found = by_service.get(name)
        if found:
            judged = [judge_container(name, service, container) for container in found]
            statuses.append(next((one for one in judged if not one.healthy), judged[0]))
        elif not service.get("profiles"):
            statuses.append(ServiceStatus(name, running=False, healthy=False, url="", detail="missing: not created"))
    return statuses


def judge_container(name: str, service: dict, container: dict) -> ServiceStatus:
    """One container of a service: a one-shot step (restart "no") is healthy once it exited 0; a
    long-running service while running and healthy (or running, when it declares no healthcheck)."""
    state, health, exit_code = container.get("State", ""), container.get("Health", ""), container.get("ExitCode", 0)
    running = state == "running"
    url = ", ".join(
        dict.fromkeys(
            f"{port['URL']}:{port['PublishedPort']}"
            for port in container.get("Publishers") or []
            if port.get("PublishedPort")
        )
    )
    if state == "exited":
        completed = service.get("restart") == "no" and exit_code == 0
        return ServiceStatus(name, False, completed, url, "completed" if completed else f"exited {exit_code}")
    if not running:
        return ServiceStatus(name, False, False, url, state or "unknown")
    if service.get("restart") == "no":
        return ServiceStatus(name, True, False, url, "running (not finished)")
    declares_healthcheck = "healthcheck" in service and not service["healthcheck"].get("disable")
    healthy = health == "healthy" or (not health and not declares_healthcheck)
    return ServiceStatus(name, True, healthy, url, f"running ({health})" if health else "running")


def started_profiles(config: dict, containers: list[dict]) -> list[str]:
    """The profiles of the services that have a container: `up` keeps (and repairs) those too."""
    present = {container["Service"] for container in containers}
    services = config["services"]
    return sorted({profile for name in present & services.keys() for profile in services[name].get("profiles") or []})


@dataclass
class DockerRuntime:
    settings: Settings
    console: Console
    stack: str = "mlflow"
    name: str = "docker"
    up_timeout: int = 600
    """Seconds `up` may take: compose's --wait-timeout, and the bound on the whole run (builds included)."""

    @property
    def ha(self) -> bool:
        """The MLflow stack in MLSTACK_TOPOLOGY=ha: compose.yaml with its override compose.ha.yaml."""
        return self.stack == "mlflow" and self.settings.topology == "ha"

    def command(self, *args: str) -> list[str]:
        """The compose CLI on this stack's file (with MLSTACK_TOPOLOGY=ha, and its ha override) and the
        project's .env, with `args`."""
        files = ["compose.yaml", *(["compose.ha.yaml"] if self.ha else [])]
        for name in files:
            if not (self.settings.project_dir / "infra" / self.stack / name).is_file():
                raise RuntimeUnavailableError(
                    f"The docker runtime runs infra/{self.stack}/{name} from the mlstack checkout, and "
                    f"{self.settings.project_dir} has none: run from your checkout, or use --runtime native."
                )
        command = find_compose(self.settings)
        if command is None:
            raise RuntimeUnavailableError("The docker runtime needs the compose plugin: `docker compose version`.")
        folder = self.settings.project_dir / "infra" / self.stack
        options = [option for name in files for option in ("-f", str(folder / name))]
        return [*command, *options, "--env-file", str(self.settings.env_file), *args]

    def compose(self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """The compose CLI (see `command`); killed after `timeout` seconds."""
        full = self.command(*args)
        try:
            result = subprocess.run(
                full, capture_output=True, text=True, cwd=self.settings.project_dir, timeout=timeout, env=self._env()
            )
        except subprocess.TimeoutExpired:
            raise ServiceStartError(f"`docker compose {' '.join(args)}` did not finish within {timeout} s") from None
        if check and result.returncode != 0:
            raise ServiceStartError(f"`docker compose {' '.join(args)}` failed:\n{result.stderr[-3000:]}")
        return result

    def _env(self) -> dict[str, str]:
        """Compose's environment: ours, this user's ids, the server's metrics address with monitoring on,
        and where the TLS front's certificate is when mlstack made it."""
        env = dict(os.environ)
        # the exporter reads the backups and the spool as the user who owns them
        env |= {"MLSTACK_UID": str(os.getuid()), "MLSTACK_GID": str(os.getgid())}
        if self.settings.mlstack_monitoring:
            env["MLSTACK_METRICS_ADDRESS"] = f"0.0.0.0:{METRICS_PORTS['mlflow']}"
        if self.stack == "mlflow" and self.settings.mlflow_tls and not self.settings.mlflow_tls_cert:
            folder = self.settings.state_path / "tls"
            env |= {"MLFLOW_TLS_CERT": str(folder / "server.pem"), "MLFLOW_TLS_KEY": str(folder / "server-key.pem")}
        return env

    def requested_profiles(self) -> list[str]:
        """Profiles on now: the TLS front with MLFLOW_TLS=true; the move of a stack's artifacts from
        before SeaweedFS while its MinIO volume exists and no finished move is recorded; monitoring and
        Grafana's dashboards with MLSTACK_MONITORING=true."""
        if self.stack != "mlflow":
            return []
        return [
            *(["tls"] if self.settings.mlflow_tls else []),
            *(["minio-move"] if self._minio_move_due() else []),
            *(["monitoring", "dashboards"] if self.settings.mlstack_monitoring else []),
        ]

    def _minio_volume(self) -> str:
        return f"{self.rendered_config()['name']}_minio-data"

    def _minio_move_due(self) -> bool:
        if record_path(self.settings).exists():
            return False
        if shutil.which("docker") is None:  # the compose binary alone: no volume of an old stack to find
            return False
        inspect = ["docker", "volume", "inspect", self._minio_volume()]
        return subprocess.run(inspect, capture_output=True, env=self._env()).returncode == 0

    def _finish_minio_move(self) -> None:
        """The move step completed (compose waited for it): record it, remove MinIO's containers, keep its volume."""
        volume = self._minio_volume()
        self.console.print(self.last_log_lines("minio-move"))
        write_record(
            self.settings, MoveReport(source="minio (compose)", destination="seaweedfs"), f"docker volume {volume}"
        )
        self.compose(*ALL_PROFILES, "rm", "--force", "--stop", "minio", "minio-move")
        self.console.print(
            f"artifacts moved from MinIO to SeaweedFS, each verified; MinIO's data stays in volume {volume}: "
            f"`docker volume rm {volume}` once you no longer need it"
        )

    def rendered_config(self) -> dict:
        """The compose file as compose resolves it, every profile's services included (no engine needed)."""
        return json.loads(self.compose(*ALL_PROFILES, "config", "--format", "json").stdout)

    def containers(self) -> list[dict]:
        """This stack's containers, stopped ones and profile services included."""
        return parse_ps(self.compose(*ALL_PROFILES, "ps", "--all", "--format", "json").stdout)

    def status(self) -> list[ServiceStatus]:
        return judge_services(self.rendered_config(), self.containers())

    def up(self, refresh: bool = False) -> bool:
        """Start what is missing or unhealthy (a no-op for a healthy stack unless `refresh`: then compose
        recreates every container whose image or configuration changed, as after an upgrade)."""
        requested = self.requested_profiles()
        if "tls" in requested:
            ensure_certificate(self.settings)
        config, containers = self.rendered_config(), self.containers()
        wanted = sorted({*started_profiles(config, containers), *requested})
        missing = set(wanted) - set(started_profiles(config, containers))
        if not refresh and not missing and all(service.healthy for service in judge_services(config, containers)):
            self.console.print(f"{self.stack} stack (docker) is already running and healthy: nothing to do")
            return False
        with self.console.status(f"docker compose up --wait ({self.stack})"):
            self._up_and_wait(wanted, "--build")
        if "minio-move" in wanted:
            self._finish_minio_move()
        return True

    def _up_and_wait(self, profiles: list[str], *args: str) -> None:
        """`compose up --detach --wait` with `profiles` on; a failure names each unhealthy service."""
        options = [option for profile in profiles for option in ("--profile", profile)]
        wait = ("--wait", "--wait-timeout", str(self.up_timeout))
        try:
            self.compose(*options, "up", "--detach", *wait, *args, timeout=self.up_timeout)
        except ServiceStartError as failure:
            raise ServiceStartError(self.startup_report(str(failure))) from None

    def startup_report(self, failure: str) -> str:
        """Why `up` failed: compose's own error, then each unhealthy service with its last log lines."""
        sections = [f"The {self.stack} stack did not become healthy. {failure}"]
        for service in self.status():
            if not service.healthy:
                sections.append(f"{service.name}: {service.detail}\n{self.last_log_lines(service.name)}")
        return "\n\n".join(sections)

    def last_log_lines(self, service: str) -> str:
        logs = self.compose(*ALL_PROFILES, "logs", "--no-color", "--tail", str(LOG_LINES), service, check=False)
        return logs.stdout.rstrip() or "(no log lines)"

    def down(self) -> None:
        """Stop and remove every container of the stack, profile services (the ClearML agent) included."""
        self.compose(*ALL_PROFILES, "down", "--remove-orphans")

    def kill(self, service: str) -> None:
        self.compose(*ALL_PROFILES, "kill", service)

    def server_services(self) -> list[str]:
        """The MLflow server's services, in start order: `mlflow`; in ha its replicas, then HAProxy as `mlflow`."""
        stack = mlflow_stack(self.settings.topology)
        return [s.name for s in stack.long_running() if s.name == "mlflow" or s.image == SERVER_IMAGE]

    def stop_server(self) -> None:
        """Stop the MLflow server (and the TLS front); the stores keep running."""
        self.compose(*ALL_PROFILES, "stop", "tls-proxy", *reversed(self.server_services()))

    def start_server(self, migrate: bool = True) -> None:
        """Run the migrate one-shot (unless `migrate` is false: the database stays as it is), then start
        the MLflow server and, with MLFLOW_TLS, its TLS front, without touching the stores."""
        if migrate:
            self.migrate()
        profiles = ["tls"] if self.settings.mlflow_tls else []
        self._up_and_wait(profiles, "--no-deps", *self.server_services(), *(["tls-proxy"] if profiles else []))

    def migrate(self) -> None:
        self.compose("run", "--rm", "migrate", timeout=self.up_timeout)

    def exec(
        self, service: str, command: list[str], stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None
    ) -> str:
        """Run `command` in `service`'s container, as the service's administrator (PostgreSQL: the
        superuser, its password from the container's own environment, never on a command line); its
        standard output as text unless `stdout` takes it."""
        if service == "postgres":
            service, login = POSTGRES_CLIENT["ha" if self.ha else "single"]
            command = ["sh", "-c", login, "sh", *command]
        full = self.command("exec", "-T", service, *command)
        result = subprocess.run(
            full, stdin=stdin, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, env=self._env()
        )
        if result.returncode != 0:
            said = result.stderr.decode(errors="replace")[-2000:]
            raise CommandError(f"`{' '.join(command[:3])}` in {service} failed: {said}")
        return "" if stdout else result.stdout.decode()
