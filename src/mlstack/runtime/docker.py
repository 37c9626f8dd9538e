"""The docker runtime: the compose stacks under infra/, driven through the compose CLI."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from rich.console import Console

from mlstack.errors import RuntimeUnavailableError, ServiceStartError
from mlstack.runtime.base import ServiceStatus
from mlstack.runtime.native.tools import find_compose
from mlstack.secrets import check_secrets
from mlstack.settings import Settings


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


@dataclass
class DockerRuntime:
    settings: Settings
    console: Console
    stack: str = "mlflow"
    name: str = "docker"

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = find_compose(self.settings)
        if command is None:
            raise RuntimeUnavailableError("The docker runtime needs the compose plugin: `docker compose version`.")
        compose_file = self.settings.project_dir / "infra" / self.stack / "compose.yaml"
        full = [
            *command,
            "-f",
            str(compose_file),
            "--env-file",
            str(self.settings.env_file),
            *args,
        ]
        result = subprocess.run(full, capture_output=True, text=True, cwd=self.settings.project_dir)
        if check and result.returncode != 0:
            raise ServiceStartError(f"`docker compose {' '.join(args)}` failed:\n{result.stderr[-3000:]}")
        return result

    def up(self) -> bool:
        check_secrets(self.settings, self.stack)
        services = self.status()
        if services and all(service.healthy for service in services):
            self.console.print(f"{self.stack} stack (docker) is already running and healthy: nothing to do")
            return False
        with self.console.status(f"docker compose up --wait ({self.stack})"):
            self.compose("up", "--detach", "--wait", "--build")
        return True

    def down(self) -> None:
        self.compose("down")

    def kill(self, service: str) -> None:
        self.compose("kill", service)

    def status(self) -> list[ServiceStatus]:
        result = self.compose("ps", "--all", "--format", "json", check=False)
        statuses = []
        for line in result.stdout.splitlines():
            entry = json.loads(line)
            if entry.get("State") == "exited" and entry.get("ExitCode") == 0:
                continue  # a one-shot step that finished
            ports = ", ".join(
                f"{p['URL']}:{p['PublishedPort']}" for p in entry.get("Publishers") or [] if p.get("PublishedPort")
            )
            statuses.append(
                ServiceStatus(
                    entry["Service"],
                    entry.get("State") == "running",
                    entry.get("Health") in ("healthy", ""),
                    ports,
                    entry.get("Status", ""),
                )
            )
        return statuses
