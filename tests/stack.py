"""A live MLflow stack as tests see it, whichever runtime runs it: URLs, clients for the places
where effects land (PostgreSQL rows, objects in the artifact store), and the faults tests inject."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from rich.console import Console

from mlstack.bootstrap.storage import admin_s3, server_s3
from mlstack.runtime import Runtime
from mlstack.runtime.docker import DockerRuntime
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.settings import Settings

#: How long a scratch stack's service may take to stop before it is killed (`discard`).
DISCARD_TIMEOUT = 3.0


def discard(runtime: NativeRuntime) -> None:
    """End a scratch stack whose data is deleted next: each service stopped as `down` does, the last
    started first, but killed after DISCARD_TIMEOUT seconds. `down` waits for clean stops that keep
    data safe (SeaweedFS' filer alone waits 15 s for its streams), which a stack about to be deleted
    does not need; `down` itself is tested where it is the point (test_private_checkout)."""
    for process in reversed(runtime.processes.values()):
        process.stop(timeout=DISCARD_TIMEOUT)
    remove_postgres_home(runtime)


def remove_postgres_home(runtime: NativeRuntime) -> None:
    """As root, PostgreSQL's folder is under /var/lib/mlstack, outside the scratch folder."""
    if runtime.postgres.os_user is not None:
        shutil.rmtree(runtime.postgres.home, ignore_errors=True)


@dataclass
class LiveStack:
    settings: Settings
    console: Console
    runtime: Runtime = field(init=False)

    @property
    def tracking_uri(self) -> str:
        return self.settings.mlflow_url

    @property
    def client_auth(self) -> tuple[str, str]:
        """The client account `mlstack up` created (MLFLOW_TRACKING_USERNAME/PASSWORD in .env)."""
        return self.settings.mlflow_tracking_username, self.settings.mlflow_tracking_password.get_secret_value()

    @property
    def bucket(self) -> str:
        return self.settings.mlflow_artifact_bucket

    @property
    def s3(self):
        """boto3 S3 client with the store's admin identity (sees every bucket)."""
        return admin_s3(self.settings)

    @property
    def server_s3(self):
        """boto3 S3 client with the MLflow server's own identity."""
        return server_s3(self.settings)

    def pg_connect(self) -> psycopg.Connection:
        """A connection to the backend store database."""
        return psycopg.connect(self.settings.postgres_dsn(), autocommit=True)

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def remove_data(self) -> None:
        """Delete what the stopped stack keeps outside the scratch folder."""

    def discard(self) -> None:
        """End a scratch stack whose data goes next: stopped and its data outside the scratch folder deleted."""
        self.stop()
        self.remove_data()

    def stop_server(self) -> None:
        """SIGKILL the MLflow server (a crash); the stores keep running."""

    def start_server(self) -> None:
        """Start the MLflow server again and wait until it is healthy."""

    def restart_server(self) -> None:
        """SIGKILL the MLflow server and start it again (a crash and recovery)."""
        self.stop_server()
        self.start_server()

    def restart_stack(self) -> None:
        """Stop every service cleanly and bring the stack back on the same data."""

    def server_environments(self) -> list[dict[str, str]]:
        """The environment of every MLflow server process."""
        raise NotImplementedError

    def server_commands(self) -> list[list[str]]:
        """The argv of every MLflow server process (main process, gunicorn master and workers, jobs)."""
        raise NotImplementedError

    def server_log(self) -> str:
        """What the MLflow server has logged so far."""
        raise NotImplementedError


@dataclass
class NativeStack(LiveStack):
    def __post_init__(self) -> None:
        self.runtime = NativeRuntime(self.settings, self.console)

    def start(self) -> None:
        self.runtime.up()

    def stop(self) -> None:
        self.runtime.down()

    def remove_data(self) -> None:
        remove_postgres_home(self.runtime)

    def discard(self) -> None:
        discard(self.runtime)

    def stop_server(self) -> None:
        self.runtime.kill("mlflow")

    def start_server(self) -> None:
        self.runtime.up()

    def restart_stack(self) -> None:
        self.runtime.down()
        self.runtime.up()

    def server_environments(self) -> list[dict[str, str]]:
        environments = []
        for pid in self.runtime.server_pids():
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            environments.append(dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item))
        return environments

    def server_commands(self) -> list[list[str]]:
        commands = []
        for pid in self.runtime.server_pids():
            with contextlib.suppress(FileNotFoundError):
                commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0"))
        return commands

    def server_log(self) -> str:
        return self.runtime.processes["mlflow"].log_file.read_text(errors="replace")


@dataclass
class DockerStack(LiveStack):
    """The compose stack under infra/mlflow, through testcontainers (`up --wait` on healthchecks)."""

    repo: Path = Path(".")

    def __post_init__(self) -> None:
        from testcontainers.compose import DockerCompose

        # a project of its own, so the tests never touch a stack the user runs from this checkout
        os.environ["COMPOSE_PROJECT_NAME"] = f"mlstack-test-{os.getpid()}"
        self.compose = DockerCompose(
            context=self.repo / "infra" / "mlflow",
            compose_file_name="compose.yaml",
            env_file=str(self.settings.env_file),
            build=True,
            wait=True,
        )
        self.runtime = DockerRuntime(self.settings, self.console)

    def start(self) -> None:
        self.compose.start()

    def stop(self) -> None:
        self.compose.stop()  # `down --volumes`: the scratch stack leaves nothing behind

    def _compose(self, *args: str) -> None:
        subprocess.run([*self.compose.compose_command_property, *args], check=True, cwd=self.compose.context)

    def stop_server(self) -> None:
        self._compose("kill", "mlflow")

    def start_server(self) -> None:
        self._compose("up", "--detach", "--wait", "mlflow")

    def restart_stack(self) -> None:
        self._compose("stop")
        self._compose("up", "--detach", "--wait")

    def server_environments(self) -> list[dict[str, str]]:
        output, _, _ = self.compose.exec_in_container(["env"], service_name="mlflow")
        return [dict(line.split("=", 1) for line in output.splitlines() if "=" in line)]

    def server_commands(self) -> list[list[str]]:
        output, _, _ = self.compose.exec_in_container(["python", "-c", _LIST_COMMANDS], service_name="mlflow")
        return json.loads(output)

    def server_log(self) -> str:
        command = [*self.compose.compose_command_property, "logs", "--no-color", "mlflow"]
        return subprocess.run(command, cwd=self.compose.context, capture_output=True, text=True, check=True).stdout

    def status_inside_network(self, url: str, host: str | None = None) -> int:
        """The HTTP status a request from inside the compose network (the mlflow container) gets, with
        the client account's login."""
        login = ":".join(self.client_auth)
        output, _, _ = self.compose.exec_in_container(
            ["python", "-c", _REQUEST_STATUS, url, login, *([host] if host else [])], service_name="mlflow"
        )
        return int(output.strip())


#: Run inside the server container (no ps there): every process's argv as JSON.
_LIST_COMMANDS = """
import json, pathlib
commands = []
for proc in pathlib.Path("/proc").glob("[0-9]*"):
    try:
        argv = (proc / "cmdline").read_bytes().decode().rstrip("\\0").split("\\0")
    except OSError:
        continue
    if argv != [""]:
        commands.append(argv)
print(json.dumps(commands))
"""

#: Run inside the server container: GET argv[1] as the login argv[2] (Host: argv[3] if given), print the status.
_REQUEST_STATUS = """
import base64, sys, urllib.error, urllib.request
headers = {"Authorization": "Basic " + base64.b64encode(sys.argv[2].encode()).decode()}
if len(sys.argv) > 3:
    headers["Host"] = sys.argv[3]
request = urllib.request.Request(sys.argv[1], headers=headers)
try:
    print(urllib.request.urlopen(request, timeout=10).status)
except urllib.error.HTTPError as error:
    print(error.code)
"""
